// Activation layouts exchanged between oneDNN kernels (see passes/assign_layouts.cc).
//
// A medq-internal node attribute per side records how a 4-D fp32 value is
// stored in its ordinary buffer (logical shape unchanged):
//   "_in_layouts"  ints, one per input  (missing/short: plain)
//   "_out_layouts" ints, one per output (missing/short: plain)
// with values Layout below. Only layouts whose byte size equals NCHW's are
// used (nhwc always; nChw16c / nChw8c when C % 16 / C % 8 == 0), so the executor and the arena
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

enum class Layout : int64_t { kPlain = 0, kNChw16c = 1, kNhwc = 2, kNChw8c = 3 };

// The channel block of a blocked-channel layout (16 for nChw16c, 8 for
// nChw8c), 0 for plain and nhwc. Such a layout has NCHW's byte size only when
// C is a multiple of the block.
inline int64_t channel_block(Layout l) {
  return l == Layout::kNChw16c ? 16 : l == Layout::kNChw8c ? 8 : 0;
}

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
// AVX-512), MEDQ_DNNL_BLOCKED=nChw16c|nChw8c|nhwc|off overrides (off: kPlain).
Layout preferred_blocked_layout();

// The blocked layout the assign_layouts pass uses for graph g. MEDQ_DNNL_BLOCKED
// decides when set. Otherwise nhwc, except on CPUs without AVX-512 for a
// float graph (no 8-bit values) whose Winograd-eligible 3x3 convolutions
// (see winograd.h; nhwc only) carry under 10% of its convolution
// multiply-adds: there oneDNN 2.6's AVX2 kernels are native to nChw8c (its
// depthwise and 1x1 convolutions run 10-20% faster than on nhwc, and the stem
// convolution writes it without a reorder), so mobilenet/efficientnet-style
// graphs run in nChw8c while resnet/densenet-style ones keep nhwc for Winograd.
// `request` (SessionOptions::layout): "" or "auto" as above, or a layout name
// (nhwc, nChw8c, nChw16c, plain/off), which wins over MEDQ_DNNL_BLOCKED.
Layout blocked_layout_for(const Graph& g, const std::string& request = "");

// Parses a layout name as above ("off" = plain); false for anything else.
bool parse_layout_name(const std::string& s, Layout* out);

namespace dnnl_k {
// Whether the dnnl kernel for op (domain, op_type) can read input i /
// write output i in a non-plain layout (given the kernel was created).
bool supports_blocked_io(const Node& n, bool input, size_t i);
// Ops whose dnnl kernel only runs nodes carrying a layout marker.
bool needs_layout_marker(const Node& n);
}  // namespace dnnl_k

}  // namespace medq
