// Helpers shared by the oneDNN kernels (private to src/kernels/dnnl).
//
// Conventions of every dnnl kernel:
//  * One process-wide CPU engine (cpu_engine()); one dnnl::stream per thread (thread_stream()).
//  * Primitives are created lazily per input-shape signature and cached in a
//    small mutex-protected PrimitiveCache inside the (otherwise immutable)
//    kernel. A cached entry is immutable once built and shared (shared_ptr) by
//    every thread that runs the kernel; executing one primitive concurrently is
//    safe because each execution gets its own memory objects and scratchpad.
//  * Every primitive uses scratchpad_mode::user; run() supplies the scratchpad
//    (and any blocked temporaries) from a per-thread growable workspace.
//  * Weights are reordered once per cache entry into the layout the primitive
//    prefers (format_tag::any). Activations are plain row-major at the kernel
//    boundary unless the node carries layout markers (kernels/dnnl/dnnl_layout.h,
//    set by the assign_layouts pass): then a marked 4-D input/output is stored
//    nhwc or nChw16c in its ordinary buffer (same byte size as NCHW).
//  * fp32 only (no bf16 down-conversion). Anything unusual makes the factory
//    return kUnsupported so the registry falls back to "ref".
#pragma once

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/dnnl/dnnl_layout.h"
#include "kernels/ref/activation.h"
#include "ops/kernel.h"

namespace medq {
namespace dnnl_k {

// The process-wide CPU engine.
inline dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// The calling thread's stream on cpu_engine() (created once per thread: a
// stream per run() call costs a few microseconds, noticeable for small nodes).
inline dnnl::stream& thread_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

inline dnnl::memory::dims to_dims(const Shape& s) { return dnnl::memory::dims(s.begin(), s.end()); }

// Plain row-major fp32 descriptor of `dims`.
inline dnnl::memory::desc plain_md(const dnnl::memory::dims& dims,
                                   dnnl::memory::data_type t = dnnl::memory::data_type::f32) {
  dnnl::memory::dims strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * dims[i + 1];
  return dnnl::memory::desc(dims, t, strides);
}

// Descriptor (fp32 unless `t` says otherwise) of a tensor with dims `dims` stored
// in layout l (plain for non-4-D tensors).
inline dnnl::memory::desc layout_md(const dnnl::memory::dims& dims, Layout l,
                                    dnnl::memory::data_type t = dnnl::memory::data_type::f32) {
  if (l == Layout::kPlain || dims.size() != 4) return plain_md(dims, t);
  using tag = dnnl::memory::format_tag;
  return dnnl::memory::desc(dims, t, l == Layout::kNhwc ? tag::nhwc : l == Layout::kNChw8c ? tag::nChw8c : tag::nChw16c);
}

// Whether a tensor of `dims` has identical bytes in layouts a and b (always
// when a == b; for H = W = 1 plain == nhwc, and == nChw16c / nChw8c when C % 16 / C % 8 == 0).
inline bool same_bytes(const dnnl::memory::dims& dims, Layout a, Layout b) {
  if (a == b) return true;
  if (dims.size() != 4 || dims[2] != 1 || dims[3] != 1) return false;
  for (Layout l : {a, b})
    if (channel_block(l) && dims[1] % channel_block(l) != 0) return false;
  return true;
}

// Descriptor of a kernel side stored in `user` layout, expressed in `compute`
// layout when the bytes are the same (so no reorder is needed).
inline dnnl::memory::desc side_md(const dnnl::memory::dims& dims, Layout user, Layout compute) {
  return layout_md(dims, same_bytes(dims, user, compute) ? compute : user);
}

// The descriptor of a side stored in `user` layout: `want` (the primitive's
// own descriptor) when that has the same bytes, else layout_md(dims, user).
inline dnnl::memory::desc user_md_for(const dnnl::memory::dims& dims, Layout user, const dnnl::memory::desc& want) {
  for (Layout l : {Layout::kPlain, Layout::kNhwc, Layout::kNChw16c, Layout::kNChw8c})
    if (same_bytes(dims, user, l) && layout_md(dims, l) == want) return want;
  return layout_md(dims, user);
}

// Run-time check that a tensor can be stored in layout l.
inline Status check_layout(const std::string& label, const char* what, const Tensor& t, Layout l) {
  if (l == Layout::kPlain) return Status::ok();
  if (t.rank() != 4 || (channel_block(l) && t.dim(1) % channel_block(l) != 0))
    return internal_error(label + ": " + what + " " + shape_str(t.shape()) + " cannot be stored as " + layout_name(l));
  return Status::ok();
}

inline dnnl::memory::desc any_md(const dnnl::memory::dims& dims) {
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, dnnl::memory::format_tag::any);
}

// Per-thread growable 64-byte aligned buffers. Slot i is valid until the next
// get(i) on the same thread; a run() uses distinct slots for the buffers it
// needs at the same time (kernels never nest run() calls).
class Workspace {
 public:
  enum Slot { kScratch = 0, kSrc = 1, kDst = 2, kExtra = 3, kNumSlots = 4 };
  static void* get(int slot, size_t bytes) {
    thread_local Workspace ws;
    Buf& b = ws.bufs_[slot];
    if (bytes == 0) bytes = 64;
    if (b.size < bytes) {
      b.data = aligned_alloc_shared(bytes);
      b.size = bytes;
    }
    return b.data.get();
  }

 private:
  struct Buf {
    std::shared_ptr<void> data;
    size_t size = 0;
  };
  Buf bufs_[kNumSlots];
};

// A dnnl::memory for the scratchpad of `pd` (user mode), from the workspace.
inline dnnl::memory scratchpad_memory(const dnnl::primitive_desc_base& pd) {
  dnnl::memory::desc md = pd.scratchpad_desc();
  return dnnl::memory(md, cpu_engine(), Workspace::get(Workspace::kScratch, md.get_size()));
}

// A zero-filled heap buffer of `bytes` (at least 1) for timing runs; null when out of memory.
inline std::shared_ptr<void> zero_buffer(size_t bytes) {
  return std::shared_ptr<void>(std::calloc(std::max<size_t>(bytes, 1), 1), std::free);
}

// The timing rule of kernel tuning for any callable: a warm-up, then the best of 3 runs
// (only the warm-up when it is already 1.5x slower than `bound_ms`), in milliseconds.
template <class F>
double time_best_of(const F& f, double bound_ms) {
  auto ms_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  auto t0 = std::chrono::steady_clock::now();
  f();
  double t = ms_since(t0);
  if (t > 1.5 * bound_ms) return t;
  t = std::numeric_limits<double>::infinity();
  for (int r = 0; r < 3; ++r) {
    t0 = std::chrono::steady_clock::now();
    f();
    t = std::min(t, ms_since(t0));
  }
  return t;
}

// Implementation choice by measurement (SessionOptions::tune_kernels, `--tune`). oneDNN offers
// several implementations of a convolution (primitive_desc::next_impl(): brgemm, direct jit,
// gemm, ...) and takes the first by heuristics; a few percent is left on the table for some
// shapes. `make_pd()` builds the primitive_desc; every candidate that keeps the first one's
// src/dst memory formats (so the layout plan around the node is unchanged) and the best ISA is
// timed on zero-filled buffers at the session's thread count (a warm-up, then the best of 3
// runs; a warm-up 1.5x slower than the best so far ends that candidate), and the index of the
// fastest is returned (0: oneDNN's own choice, kept unless the fastest beats it by 10%). `extra` holds
// arguments the buffers do not cover (runtime zero points). Runs once per shape: the caller
// caches the primitive. `best_ms_out` (optional) receives the winner's time, to compare it with
// medq's own implementation of the same operation (time_best_of above).
constexpr double kTuneMargin = 0.9;  // an alternative must take < 90% of the default's time

template <class PD, class PRIM, class MakePd>
int fastest_impl_index(const MakePd& make_pd, const std::unordered_map<int, dnnl::memory>& extra,
                       double* best_ms_out = nullptr) {
  PD pd = make_pd();
  const dnnl::memory::desc src0 = pd.src_desc(), dst0 = pd.dst_desc();
  const std::string first = pd.impl_info_str();
  const bool avx512 = first.find("avx512") != std::string::npos;
  const bool avx2 = first.find("avx2") != std::string::npos;
  dnnl::stream s(cpu_engine());
  int best = 0, idx = 0;
  double best_ms = std::numeric_limits<double>::infinity(), first_ms = best_ms;
  do {
    const std::string name = pd.impl_info_str();
    const bool skip = name.rfind("ref", 0) == 0 ||
                      (avx512 && (name.find("sse41") != std::string::npos || name.find("avx2") != std::string::npos)) ||
                      (avx2 && name.find("sse41") != std::string::npos) ||
                      pd.src_desc() != src0 || pd.dst_desc() != dst0;
    if (!skip) {
      // A candidate that cannot be built or run here (e.g. no memory for its buffers) is
      // skipped; oneDNN's own choice (index 0) stays the fallback.
      try {
        PRIM prim(pd);
        std::vector<std::shared_ptr<void>> keep;
        bool alloc_ok = true;
        auto zero_mem = [&](const dnnl::memory::desc& md) {
          std::shared_ptr<void> buf = zero_buffer(md.get_size());
          alloc_ok = alloc_ok && buf != nullptr;
          keep.push_back(buf);
          return dnnl::memory(md, cpu_engine(), buf ? buf.get() : DNNL_MEMORY_NONE);
        };
        std::unordered_map<int, dnnl::memory> args = extra;
        args[DNNL_ARG_SRC] = zero_mem(pd.src_desc());
        args[DNNL_ARG_WEIGHTS] = zero_mem(pd.weights_desc());
        args[DNNL_ARG_DST] = zero_mem(pd.dst_desc());
        if (pd.bias_desc().get_size() > 0) args[DNNL_ARG_BIAS] = zero_mem(pd.bias_desc());
        args[DNNL_ARG_SCRATCHPAD] = zero_mem(pd.scratchpad_desc());
        if (alloc_ok) {
          const double t = time_best_of(
              [&] {
                prim.execute(s, args);
                s.wait();
              },
              best_ms);
          if (idx == 0) first_ms = t;
          if (t < best_ms) {
            best_ms = t;
            best = idx;
          }
        }
      } catch (const dnnl::error&) {
      }
    }
    ++idx;
  } while (pd.next_impl());
  // oneDNN's own choice stays unless another is clearly faster: on a noisy machine a lucky
  // timing picked x64:gemm for a densenet 1x1 convolution that then ran 1.8x slower in the model.
  if (best != 0 && best_ms > kTuneMargin * first_ms) {
    best = 0;
    best_ms = first_ms;
  }
  if (best_ms_out) *best_ms_out = best_ms;
  return best;
}

// The primitive_desc from make_pd() advanced to implementation `index`.
template <class PD, class MakePd>
PD pd_at(const MakePd& make_pd, int index) {
  PD pd = make_pd();
  for (int i = 0; i < index && pd.next_impl(); ++i) {
  }
  return pd;
}

// primitive_attr with a user-managed scratchpad.
inline dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

// A reorder between two descriptors (user scratchpad), for per-call layout changes.
inline dnnl::reorder::primitive_desc make_reorder_pd(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  return dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to, user_scratchpad_attr());
}

// Runs a cached reorder with its own scratchpad. The reorder's scratchpad is
// taken from kExtra (the main primitive's scratchpad slot stays untouched).
inline void run_reorder(const dnnl::reorder& r, const dnnl::reorder::primitive_desc& pd, dnnl::stream& s,
                        const dnnl::memory& from, const dnnl::memory& to) {
  dnnl::memory::desc smd = pd.scratchpad_desc();
  dnnl::memory sp(smd, cpu_engine(), Workspace::get(Workspace::kExtra, smd.get_size()));
  r.execute(s, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, sp}});
}

// Time of one reorder from -> to on zero-filled buffers (tuning; 0 when the two are equal).
inline double reorder_time_ms(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  if (from == to) return 0;
  const dnnl::reorder::primitive_desc pd = make_reorder_pd(from, to);
  const dnnl::reorder r(pd);
  std::shared_ptr<void> a = zero_buffer(from.get_size()), b = zero_buffer(to.get_size());
  if (!a || !b) return std::numeric_limits<double>::infinity();
  dnnl::memory ma(from, cpu_engine(), a.get()), mb(to, cpu_engine(), b.get());
  dnnl::stream& s = thread_stream();
  return time_best_of(
      [&] {
        run_reorder(r, pd, s, ma, mb);
        s.wait();
      },
      std::numeric_limits<double>::infinity());
}

// A kernel side whose user descriptor (how the tensor is stored) may differ
// from the descriptor the primitive computes in: a cached reorder bridges them.
struct SideReorder {
  dnnl::memory::desc user, cmp;
  bool needed = false;
  dnnl::reorder::primitive_desc pd;
  dnnl::reorder r;
  // input side: user -> cmp
  void init_in(const dnnl::memory::desc& u, const dnnl::memory::desc& c) {
    user = u;
    cmp = c;
    needed = u != c;
    if (needed) {
      pd = make_reorder_pd(u, c);
      r = dnnl::reorder(pd);
    }
  }
  // output side: cmp -> user
  void init_out(const dnnl::memory::desc& c, const dnnl::memory::desc& u) {
    user = u;
    cmp = c;
    needed = u != c;
    if (needed) {
      pd = make_reorder_pd(c, u);
      r = dnnl::reorder(pd);
    }
  }
  // The compute memory of an input stored at `data` (reordered into workspace `slot` when needed).
  dnnl::memory input(const void* data, int slot, dnnl::stream& s) const {
    dnnl::memory um(user, cpu_engine(), const_cast<void*>(data));
    if (!needed) return um;
    dnnl::memory cm(cmp, cpu_engine(), Workspace::get(slot, cmp.get_size()));
    run_reorder(r, pd, s, um, cm);
    return cm;
  }
  // The compute memory for an output stored at `data` (a workspace temporary when a reorder follows).
  dnnl::memory output(void* data, int slot) const {
    if (!needed) return dnnl::memory(user, cpu_engine(), data);
    return dnnl::memory(cmp, cpu_engine(), Workspace::get(slot, cmp.get_size()));
  }
  // Completes an output: reorders the temporary into the user buffer.
  void finish(const dnnl::memory& cm, void* data, dnnl::stream& s) const {
    if (!needed) return;
    dnnl::memory um(user, cpu_engine(), data);
    run_reorder(r, pd, s, cm, um);
  }
};

// Reorders the plain fp32 tensor data `src` into a new memory of layout `md`
// (owned by the returned memory). Used once per cache entry for weights.
inline dnnl::memory pack_memory(const float* src, const dnnl::memory::desc& plain, const dnnl::memory::desc& md) {
  dnnl::memory out(md, cpu_engine());
  dnnl::memory in(plain, cpu_engine(), const_cast<float*>(src));
  dnnl::stream s(cpu_engine());
  dnnl::reorder(in, out).execute(s, in, out);
  s.wait();
  return out;
}

// Appends the eltwise post-ops for a fused activation (ref/activation.h names).
inline void append_activation(dnnl::post_ops& po, ActKind kind, const std::vector<float>& params) {
  using dnnl::algorithm;
  auto finite = [](float v) {
    const float m = std::numeric_limits<float>::max();
    return v > m ? m : (v < -m ? -m : v);
  };
  switch (kind) {
    case ActKind::kNone: break;
    case ActKind::kRelu: po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f); break;
    case ActKind::kClip: po.append_eltwise(1.f, algorithm::eltwise_clip, finite(params[0]), finite(params[1])); break;
    case ActKind::kLeakyRelu: po.append_eltwise(1.f, algorithm::eltwise_relu, params[0], 0.f); break;
    case ActKind::kSigmoid: po.append_eltwise(1.f, algorithm::eltwise_logistic, 0.f, 0.f); break;
    case ActKind::kHardSigmoid:
      po.append_eltwise(1.f, algorithm::eltwise_linear, params[0], params[1]);
      po.append_eltwise(1.f, algorithm::eltwise_clip, 0.f, 1.f);
      break;
    case ActKind::kHardSwish: po.append_eltwise(1.f, algorithm::eltwise_hardswish, 0.f, 0.f); break;
    case ActKind::kSiLU: po.append_eltwise(1.f, algorithm::eltwise_swish, 1.f, 0.f); break;
    case ActKind::kTanh: po.append_eltwise(1.f, algorithm::eltwise_tanh, 0.f, 0.f); break;
    case ActKind::kGelu: po.append_eltwise(1.f, algorithm::eltwise_gelu_erf, 0.f, 0.f); break;
  }
}

// Reads "activation" / "activation_params" of a medq fused node.
inline Status parse_fused_activation(const Node& n, ActKind* kind, std::vector<float>* params) {
  auto act = parse_activation(n.attr_s("activation", ""));
  if (!act.is_ok()) return invalid_argument(n.label() + ": " + act.status().message());
  *kind = act.value();
  *params = complete_activation_params(*kind, n.attr_floats("activation_params"));
  return Status::ok();
}

// Sets the OpenMP thread count of the calling thread's later parallel regions
// (the ones oneDNN opens while executing on this thread).
inline void set_threads(const RunContext& ctx) {
  const int n = ctx.num_threads > 0 ? ctx.num_threads : 1;
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
}

// Mutex-protected map from a shape signature to an immutable entry. Entries
// are shared_ptr so an eviction never frees one that another thread is using.
template <class Entry>
class PrimitiveCache {
 public:
  using Key = std::vector<int64_t>;
  // Returns the entry for `key`, building it with `build()` (which returns
  // Result<std::shared_ptr<Entry>>) under the lock when absent.
  template <class Build>
  Result<std::shared_ptr<const Entry>> get(const Key& key, Build&& build) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second;
    auto built = build();
    if (!built.is_ok()) return built.status();
    if (map_.size() >= kMaxEntries) map_.clear();
    std::shared_ptr<const Entry> e = std::move(built).value();
    map_[key] = e;
    return e;
  }

 private:
  static constexpr size_t kMaxEntries = 16;
  mutable std::mutex mu_;
  mutable std::map<Key, std::shared_ptr<const Entry>> map_;
};

// Packed constant weights shared by all cache entries of one kernel: the
// primitives built for different batch sizes or spatial sizes almost always ask
// for the same weights layout, and one copy per batch size is what made a
// server that has seen batch sizes 1..8 hold 8 copies of every weight (resnet18:
// 8 x 45 MB). Entries are keyed by the exact weights descriptor.
class PackedWeightStore {
 public:
  template <class Pack>
  dnnl::memory get(const dnnl::memory::desc& md, Pack&& pack) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : entries_)
      if (e.first == md) return e.second;
    dnnl::memory m = pack();
    entries_.emplace_back(md, m);
    return m;
  }

 private:
  mutable std::mutex mu_;
  mutable std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> entries_;
};

// Common state of a dnnl kernel (label, outputs) and error helpers.
class DnnlKernel : public Kernel {
 public:
  const char* backend() const override { return "dnnl"; }

 protected:
  void init_base(const KernelCreateInfo& info) {
    label_ = info.node.label();
    num_outputs_ = info.node.outputs.size();
  }
  Status error(const std::string& msg) const { return invalid_argument(label_ + ": " + msg); }
  Status unsupported_error(const std::string& msg) const { return unsupported(label_ + ": " + msg); }
  Status dnnl_error(const dnnl::error& e) const {
    return internal_error(label_ + ": oneDNN error: " + e.what() + " (status " + std::to_string(e.status) + ")");
  }
  // Inputs [0, required) present, at most max_inputs given.
  Status check_inputs(const TensorList& in, size_t required, size_t max_inputs) const {
    if (in.size() < required || in.size() > max_inputs)
      return error("expected " + std::to_string(required) +
                   (max_inputs != required ? " to " + std::to_string(max_inputs) : std::string()) + " inputs, got " +
                   std::to_string(in.size()));
    for (size_t i = 0; i < required; ++i)
      if (in[i] == nullptr || !in[i]->defined()) return error("input " + std::to_string(i) + " is missing");
    return Status::ok();
  }

  std::string label_;
  size_t num_outputs_ = 1;
};

inline const Tensor* opt_in(const TensorList& in, size_t i) {
  return i < in.size() && in[i] != nullptr && in[i]->defined() ? in[i] : nullptr;
}

// dtype of node input i as recorded in the graph (kUndefined when unknown/absent).
inline DataType graph_dtype(const KernelCreateInfo& info, size_t i) {
  if (!info.node.has_input(i)) return DataType::kUndefined;
  return info.graph.value(info.node.inputs[i]).dtype;
}

}  // namespace dnnl_k
}  // namespace medq
