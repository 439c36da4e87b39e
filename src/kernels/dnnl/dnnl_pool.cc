// oneDNN MaxPool / AveragePool / GlobalMaxPool / GlobalAveragePool (fp32,
// 1-D to 3-D, pooling_v2 for MaxPool dilations). X and Y are plain NCHW, or
// nhwc / nChw16c per the node's layout markers (dnnl_layout.h); the pooling
// computes in X's layout and Y is reordered when its layout differs (never
// for H = W = 1 outputs, whose bytes are the same).
//
// Unsupported (ref runs the node): MaxPool's Indices output, non-float32
// inputs, pads >= kernel, and AveragePool with ceil_mode + count_include_pad
// (oneDNN would count the extra right padding that ceil_mode adds, ONNX does not).
// ceil_mode is expressed as extra right padding, which max and
// exclude-padding averages ignore.
//
// 2-D MaxPool between nhwc values runs medq's own loop instead (channels contiguous, one
// vectorized max per tap): oneDNN's jit:avx2 nhwc max pooling took 0.8 ms for resnet50's
// 3x3/2 stem pool at batch 1 (ORT 0.3 ms) and 12 ms at batch 8.
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "kernels/dnnl/dnnl_common.h"
#include "kernels/ref/broadcast.h"  // parallel_range
#include "kernels/ref/conv_common.h"

namespace medq {
namespace dnnl_k {
namespace {

using ref::Window3;
using ref::WindowAttrs;

struct PoolEntry {
  dnnl::pooling_v2_forward::primitive_desc pd;
  dnnl::pooling_v2_forward prim;
  SideReorder src, dst;
};

// y[n, oy, ox, :] = max over the window's taps inside the image (nhwc, dilation 1).
void max_pool_nhwc(const float* x, float* y, int64_t N, int64_t H, int64_t W, int64_t C, int64_t OH, int64_t OW,
                   const Window3& w, int num_threads) {
  const int off = ref::kMaxSpatial - 2;
  const int64_t kh = w.k[off], kw = w.k[off + 1], sh = w.s[off], sw = w.s[off + 1], pt = w.pb[off],
                pl = w.pb[off + 1];
  ref::parallel_range(N * OH, num_threads, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / OH, oy = r % OH, iy0 = oy * sh - pt;
      const int64_t ky0 = std::max<int64_t>(0, -iy0), ky1 = std::min<int64_t>(kh, H - iy0);
      const float* img = x + n * H * W * C;
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t ix0 = ox * sw - pl;
        const int64_t kx0 = std::max<int64_t>(0, -ix0), kx1 = std::min<int64_t>(kw, W - ix0);
        float* __restrict o = y + (r * OW + ox) * C;
        const float* base = img + (iy0 * W + ix0) * C;
        int64_t c = 0;
#if defined(__AVX2__)
        // 32 channels at a time in four registers across all taps, one store (the loop below kept
        // the partial maxima in memory: 2x2/2 pooling of 32 x 238 x 238 took 2.1 ms at batch 8,
        // this 1.7 ms, bound by reading the input). max_ps(in, acc) returns acc when `in` is NaN:
        // NaN inputs are skipped, as in the scalar loop.
        for (; c + 32 <= C; c += 32) {
          __m256 a0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), a1 = a0, a2 = a0, a3 = a0;
          for (int64_t ky = ky0; ky < ky1; ++ky)
            for (int64_t kx = kx0; kx < kx1; ++kx) {
              const float* in = base + (ky * W + kx) * C + c;
              a0 = _mm256_max_ps(_mm256_loadu_ps(in), a0);
              a1 = _mm256_max_ps(_mm256_loadu_ps(in + 8), a1);
              a2 = _mm256_max_ps(_mm256_loadu_ps(in + 16), a2);
              a3 = _mm256_max_ps(_mm256_loadu_ps(in + 24), a3);
            }
          _mm256_storeu_ps(o + c, a0);
          _mm256_storeu_ps(o + c + 8, a1);
          _mm256_storeu_ps(o + c + 16, a2);
          _mm256_storeu_ps(o + c + 24, a3);
        }
        for (; c + 8 <= C; c += 8) {
          __m256 a0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
          for (int64_t ky = ky0; ky < ky1; ++ky)
            for (int64_t kx = kx0; kx < kx1; ++kx) a0 = _mm256_max_ps(_mm256_loadu_ps(base + (ky * W + kx) * C + c), a0);
          _mm256_storeu_ps(o + c, a0);
        }
#endif
        for (int64_t cc = c; cc < C; ++cc) o[cc] = -std::numeric_limits<float>::infinity();
        for (int64_t ky = ky0; ky < ky1; ++ky)
          for (int64_t kx = kx0; kx < kx1; ++kx) {
            const float* __restrict in = base + (ky * W + kx) * C;
            for (int64_t cc = c; cc < C; ++cc) o[cc] = in[cc] > o[cc] ? in[cc] : o[cc];
          }
      }
    }
  });
}

class DnnlPoolKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const std::string& op = n.op_type;
    global_ = op.rfind("Global", 0) == 0;
    max_ = op == "MaxPool" || op == "GlobalMaxPool";
    if (n.inputs.size() != 1 || !n.has_input(0)) return error("expects 1 input");
    const DataType xdt = graph_dtype(info, 0);
    if (xdt != DataType::kUndefined && xdt != DataType::kFloat32) return unsupported_error("X is not float32");
    for (size_t i = 1; i < n.outputs.size(); ++i)
      if (n.outputs[i] != kNoValue) return unsupported_error("MaxPool Indices output");
    in_l_ = node_layout(n, true, 0);
    out_l_ = node_layout(n, false, 0);
    if (!global_) {
      RETURN_IF_ERROR(attrs_.parse(n));
      if (attrs_.kernel.empty()) return error("missing 'kernel_shape' attribute");
      count_include_pad_ = n.attr_i("count_include_pad", 0) != 0;
      if (!max_ && count_include_pad_ && attrs_.ceil_mode)
        return unsupported_error("ceil_mode with count_include_pad");
      if (!max_ && !attrs_.dilations.empty())
        for (int64_t d : attrs_.dilations)
          if (d != 1) return unsupported_error("dilated AveragePool");
      if (attrs_.auto_pad == "NOTSET" && !attrs_.pads.empty()) {
        const size_t k = attrs_.kernel.size();
        if (attrs_.pads.size() != 2 * k) return error("pads must have " + std::to_string(2 * k) + " entries");
        for (size_t i = 0; i < attrs_.pads.size(); ++i)
          if (attrs_.pads[i] >= attrs_.kernel[i % k]) return unsupported_error("pads >= kernel");
      }
    }
    return Status::ok();
  }

  Status geometry(const Tensor& x, Window3& w) const {
    if (x.dtype() != DataType::kFloat32) return unsupported_error("only float32 is supported");
    if (x.rank() < 3 || x.rank() > 5)
      return error("X must have rank 3 to 5 (N, C, spatial...), got " + shape_str(x.shape()));
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    if (global_) {
      WindowAttrs a;
      return ref::compute_window(label_, a, in_sp, in_sp, false, w);
    }
    return ref::compute_window(label_, attrs_, in_sp, attrs_.kernel, true, w);
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    Window3 w;
    RETURN_IF_ERROR(geometry(*in[0], w));
    Shape ys = {in[0]->dim(0), in[0]->dim(1)};
    for (int i = ref::kMaxSpatial - w.spatial; i < ref::kMaxSpatial; ++i) ys.push_back(w.out[i]);
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    for (size_t i = 1; i < num_outputs_; ++i) out[i] = {DataType::kInt64, ys};
    return Status::ok();
  }

  Result<std::shared_ptr<PoolEntry>> build(const Shape& xs, const Shape& ys, const Window3& w) const {
    auto e = std::make_shared<PoolEntry>();
    const int sp = w.spatial, off = ref::kMaxSpatial - sp;
    dnnl::memory::dims k, s, d, pl, pr;
    for (int i = 0; i < sp; ++i) {
      const int j = off + i;
      k.push_back(w.k[j]);
      s.push_back(w.s[j]);
      d.push_back(w.d[j] - 1);
      pl.push_back(w.pb[j]);
      const int64_t dk = (w.k[j] - 1) * w.d[j] + 1;
      // Right padding that makes oneDNN's floor formula produce w.out (ceil_mode).
      const int64_t need = (w.out[j] - 1) * w.s[j] + dk - w.in[j] - w.pb[j];
      pr.push_back(std::max<int64_t>(need, w.pe[j]));
    }
    const dnnl::memory::dims xd = to_dims(xs), yd = to_dims(ys);
    const Layout cl = in_l_ != Layout::kPlain ? in_l_ : out_l_;
    const dnnl::memory::desc src_md = layout_md(xd, cl), dst_md = layout_md(yd, cl);
    e->src.init_in(user_md_for(xd, in_l_, src_md), src_md);
    e->dst.init_out(dst_md, user_md_for(yd, out_l_, dst_md));
    const dnnl::algorithm alg = max_                 ? dnnl::algorithm::pooling_max
                                : count_include_pad_ ? dnnl::algorithm::pooling_avg_include_padding
                                                     : dnnl::algorithm::pooling_avg_exclude_padding;
    dnnl::pooling_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg, src_md, dst_md, s, k, d, pl,
                                        pr);
    e->pd = dnnl::pooling_v2_forward::primitive_desc(desc, user_scratchpad_attr(), cpu_engine());
    e->prim = dnnl::pooling_v2_forward(e->pd);
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    RETURN_IF_ERROR(geometry(*in[0], w));
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    RETURN_IF_ERROR(check_layout(label_, "X", x, in_l_));
    RETURN_IF_ERROR(check_layout(label_, "Y", y, out_l_));
    if (max_ && !global_ && in_l_ == Layout::kNhwc && out_l_ == Layout::kNhwc && w.spatial == 2 &&
        w.d[ref::kMaxSpatial - 2] == 1 && w.d[ref::kMaxSpatial - 1] == 1) {
      max_pool_nhwc(x.data<float>(), y.data<float>(), x.dim(0), x.dim(2), x.dim(3), x.dim(1), y.dim(2), y.dim(3), w,
                    ctx.num_threads);
      return Status::ok();
    }
    set_threads(ctx);
    try {
      PrimitiveCache<PoolEntry>::Key key = x.shape();
      key.push_back(ctx.num_threads);
      const Shape ys = y.shape();
      ASSIGN_OR_RETURN(std::shared_ptr<const PoolEntry> e, cache_.get(key, [&]() { return build(x.shape(), ys, w); }));
      dnnl::stream& s = thread_stream();
      dnnl::memory src = e->src.input(x.raw(), Workspace::kSrc, s);
      dnnl::memory dst = e->dst.output(y.raw(), Workspace::kDst);
      e->prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}});
      e->dst.finish(dst, y.raw(), s);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  bool global_ = false, max_ = false;
  WindowAttrs attrs_;
  bool count_include_pad_ = false;
  Layout in_l_ = Layout::kPlain, out_l_ = Layout::kPlain;
  PrimitiveCache<PoolEntry> cache_;
};

}  // namespace

void register_dnnl_pool(KernelRegistry& r, int priority) {
  r.add("", "MaxPool", "dnnl", priority, make_factory<DnnlPoolKernel>());
  r.add("", "AveragePool", "dnnl", priority, make_factory<DnnlPoolKernel>());
  r.add("", "GlobalMaxPool", "dnnl", priority, make_factory<DnnlPoolKernel>());
  r.add("", "GlobalAveragePool", "dnnl", priority, make_factory<DnnlPoolKernel>());
}

}  // namespace dnnl_k
}  // namespace medq
