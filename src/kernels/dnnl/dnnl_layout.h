// Activation layouts exchanged between oneDNN kernels (see passes/assign_layouts.cc).
//
// A medq-internal node attribute per side records how a 4-D fp32 value is
// stored in its ordinary buffer (logical shape unchanged):
//   "_in_layouts"  ints, one per input  (missing/short: plain)
//   "_out_layouts" ints, one per output (missing/short: plain)
// with values Layout below. Only layouts whose byte size equals NCHW's are
// used (nhwc always; nChw16c when C % 16 == 0), so the executor and the arena
// stay layout-agnostic. The presence of either attribute also opts a node in
// to the dnnl "layout-aware" kernels (BatchNormalization, eltwise, binary,
// Concat), which decline unmarked nodes so that ref keeps running those.
// Kernels of other backends must never run a node with a non-plain entry
// (the Session checks this).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace medq {

enum class Layout : int64_t { kPlain = 0, kNChw16c = 1, kNhwc = 2 };

constexpr const char* kInLayoutsAttr = "_in_layouts";
constexpr const char* kOutLayoutsAttr = "_out_layouts";

inline Layout node_layout(const Node& n, bool input, size_t i) {
  const Attribute* a = n.attr(input ? kInLayoutsAttr : kOutLayoutsAttr);
  if (!a || i >= a->ints.size()) return Layout::kPlain;
  return static_cast<Layout>(a->ints[i]);
}

inline bool has_layout_marker(const Node& n) { return n.has_attr(kInLayoutsAttr) || n.has_attr(kOutLayoutsAttr); }

// True when some input or output of n is stored non-plain.
inline bool has_blocked_io(const Node& n) {
  for (const char* name : {kInLayoutsAttr, kOutLayoutsAttr})
    if (const Attribute* a = n.attr(name))
      for (int64_t v : a->ints)
        if (v != 0) return true;
  return false;
}

const char* layout_name(Layout l);

// The layout the assign_layouts pass uses for blocked values: nhwc by default
// (oneDNN 2.6's preferred activation layout for brgemm convolutions on
// AVX-512), MEDQ_DNNL_BLOCKED=nChw16c|nhwc|off overrides (off: kPlain).
Layout preferred_blocked_layout();

namespace dnnl_k {
// Whether the dnnl kernel for op (domain, op_type) can read input i /
// write output i in a non-plain layout (given the kernel was created).
bool supports_blocked_io(const Node& n, bool input, size_t i);
// Ops whose dnnl kernel only runs nodes carrying a layout marker.
bool needs_layout_marker(const Node& n);
}  // namespace dnnl_k

}  // namespace medq
