// oneDNN Conv and medq FusedConv (fp32, 1-D to 3-D, groups, depthwise,
// explicit/auto pads, strides, dilations, bias, residual Sum, activation).
//
// W must be a constant (it is pre-packed per cache entry into the layout the
// convolution prefers); otherwise create() returns kUnsupported and the ref
// kernel runs the node. Primitives are cached per X shape (+ thread count).
//
// Layout at the boundary is plain NCHW. Internally (default) src and dst are
// `any`, so oneDNN may choose its blocked nChw16c direct-conv kernels; X is
// reordered in and Y out per call. This is measurably faster than forcing
// nchw src/dst (which makes oneDNN fall back to its gemm-based convolution);
// MEDQ_DNNL_CONV_LAYOUT=plain forces plain src/dst for comparisons.
//
// With layout markers (dnnl_layout.h) X, Y and Sum may be stored nhwc or
// nChw16c: the primitive is then created with that explicit tag on the side,
// so no per-call reorder happens there (plain sides stay `any` + reorder).
//
// Y = act(conv(X, W) + B + Sum): Sum is copied (reordered) into the dst buffer
// first and added by a `sum` post-op; the activation is an eltwise post-op.
//
// 3x3 stride-1 convolutions with nhwc X and Y (and Sum) may instead run medq's Winograd
// F(2x2, 3x3) kernel (winograd.h): with kernel tuning it is timed against the fastest oneDNN
// implementation of the shape and kept when faster; without tuning it runs on CPUs without
// AVX-512 (see winograd_mode). MEDQ_WINOGRAD=on uses it for every eligible convolution,
// MEDQ_WINOGRAD=off never. Its transformed weights are built once per node and shared by all
// shapes.
#include <cstring>
#include <string>
#include <vector>

#include "kernels/dnnl/avx2_gemm.h"  // OwnKernelMode
#include "kernels/dnnl/dnnl_common.h"
#include "kernels/dnnl/igemm_conv.h"
#include "kernels/dnnl/winograd.h"
#include "kernels/ref/conv_common.h"
#include "ops/fused.h"

namespace medq {
namespace dnnl_k {
namespace {

using ref::Window3;
using ref::WindowAttrs;

bool conv_layout_plain() {
  static const bool plain = [] {
    const char* e = std::getenv("MEDQ_DNNL_CONV_LAYOUT");
    return e && std::string(e) == "plain";
  }();
  return plain;
}

// MEDQ_WINOGRAD (read when a shape is first built, so tests can set it per session):
// off | on | auto (default: with kernel tuning Winograd is timed against oneDNN; without it,
// Winograd runs where oneDNN has no AVX-512 kernels, since its AVX2 direct convolution is
// 1.5-2.6x slower than Winograd on resnet's 3x3 shapes and 2.6 has no Winograd for AVX2).
OwnKernelMode winograd_mode() { return own_kernel_mode("MEDQ_WINOGRAD"); }

// MEDQ_IGEMM (read like MEDQ_WINOGRAD): off | on | auto (default: with kernel tuning medq's
// implicit-GEMM kernel (igemm_conv.h) is timed against oneDNN; without it, it runs the strided
// convolutions on CPUs without AVX-512, where oneDNN's AVX2 direct kernel is slowest).
OwnKernelMode igemm_mode() { return own_kernel_mode("MEDQ_IGEMM"); }

struct ConvEntry {
  std::shared_ptr<const Winograd3x3> wino;  // set: this shape runs Winograd (no oneDNN primitive)
  std::shared_ptr<const IgemmConv> igemm;   // set: this shape runs medq's implicit GEMM (ditto)
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::memory weights;  // packed, owned
  dnnl::memory::desc src_plain, dst_plain, sum_user;  // user-side descriptors (plain or marked layout)
  bool src_reorder = false, dst_reorder = false;
  dnnl::reorder::primitive_desc src_rpd, dst_rpd, sum_rpd;
  dnnl::reorder src_r, dst_r, sum_r;
};

class DnnlConvKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    fused_ = n.domain == kMedqDomain;
    RETURN_IF_ERROR(attrs_.parse(n));
    group_ = n.attr_i("group", 1);
    if (group_ < 1) return error("group must be >= 1");
    if (fused_) RETURN_IF_ERROR(parse_fused_activation(n, &act_, &act_params_));
    if (n.inputs.size() < 2) return error("needs inputs X and W");
    const Tensor* w = info.constant_input(1);
    if (!w) return unsupported_error("W is not a constant");
    if (w->dtype() != DataType::kFloat32) return unsupported_error("W is not float32");
    const DataType xdt = graph_dtype(info, 0);
    if (xdt != DataType::kUndefined && xdt != DataType::kFloat32) return unsupported_error("X is not float32");
    if (w->rank() < 3 || w->rank() > 5) return unsupported_error("W rank " + std::to_string(w->rank()));
    if (w->dim(0) % group_ != 0) return error("W output channels not divisible by group");
    if (!attrs_.kernel.empty() && attrs_.kernel != Shape(w->shape().begin() + 2, w->shape().end()))
      return error("kernel_shape " + shape_str(attrs_.kernel) + " does not match W dims " + shape_str(w->shape()));
    if (n.has_input(2)) {
      const DataType bdt = graph_dtype(info, 2);
      if (bdt != DataType::kUndefined && bdt != DataType::kFloat32) return unsupported_error("B is not float32");
    }
    has_sum_ = fused_ && n.has_input(3);
    src_l_ = node_layout(n, true, 0);
    sum_l_ = node_layout(n, true, 3);
    dst_l_ = node_layout(n, false, 0);
    if ((src_l_ != Layout::kPlain || sum_l_ != Layout::kPlain || dst_l_ != Layout::kPlain) && w->rank() != 4)
      return unsupported_error("blocked layouts need a 2-D convolution");
    w_ = *w;
    wino_layouts_ = w->rank() == 4 && src_l_ == Layout::kNhwc && dst_l_ == Layout::kNhwc &&
                    (!has_sum_ || sum_l_ == Layout::kNhwc);
    return Status::ok();
  }

  Status geometry(const TensorList& in, Window3& w) const {
    const Tensor& x = *in[0];
    const Tensor& wt = *in[1];
    if (x.dtype() != DataType::kFloat32 || wt.dtype() != DataType::kFloat32)
      return unsupported_error("only float32 is supported");
    if (x.rank() != w_.rank())
      return error("X " + shape_str(x.shape()) + " and W " + shape_str(w_.shape()) + " have different ranks");
    if (wt.shape() != w_.shape()) return error("W shape changed since create");
    const int64_t C = x.dim(1);
    if (C != w_.dim(1) * group_)
      return error("X has " + std::to_string(C) + " channels but W " + shape_str(w_.shape()) + " with group " +
                   std::to_string(group_) + " expects " + std::to_string(w_.dim(1) * group_));
    if (const Tensor* b = opt_in(in, 2)) {
      if (b->dtype() != DataType::kFloat32 || b->rank() != 1 || b->dim(0) != w_.dim(0))
        return error("B must be float32 [" + std::to_string(w_.dim(0)) + "], got " + b->desc());
    }
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    std::vector<int64_t> k_sp(w_.shape().begin() + 2, w_.shape().end());
    return ref::compute_window(label_, attrs_, in_sp, k_sp, false, w);
  }

  Shape out_shape(const TensorList& in, const Window3& w) const {
    Shape ys = {in[0]->dim(0), w_.dim(0)};
    for (int i = ref::kMaxSpatial - w.spatial; i < ref::kMaxSpatial; ++i) ys.push_back(w.out[i]);
    return ys;
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, fused_ ? 4 : 3));
    Window3 w;
    RETURN_IF_ERROR(geometry(in, w));
    Shape ys = out_shape(in, w);
    if (const Tensor* s = opt_in(in, 3)) {
      if (s->dtype() != DataType::kFloat32 || s->shape() != ys)
        return error("Sum input " + s->desc() + " must be float32 " + shape_str(ys));
    }
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    return Status::ok();
  }

  // Shape-level Winograd conditions (the layouts were checked at init).
  bool winograd_eligible(const Window3& w) const {
    const int off = ref::kMaxSpatial - 2;
    return wino_layouts_ && w.spatial == 2 &&
           Winograd3x3::eligible(w_.dim(1) * group_, w_.dim(0), w.k[off], w.k[off + 1], w.s[off], w.s[off + 1],
                                 w.d[off], w.d[off + 1], group_, act_);
  }

  // The node's Winograd weights, transformed on first use.
  std::shared_ptr<const Winograd3x3> winograd() const {
    std::lock_guard<std::mutex> lock(wino_mu_);
    if (!wino_) wino_ = std::make_shared<Winograd3x3>(w_.data<float>(), w_.dim(0), w_.dim(1), act_, act_params_);
    return wino_;
  }

  bool igemm_eligible(const Window3& w) const {
    const int off = ref::kMaxSpatial - 2;
    return wino_layouts_ && w.spatial == 2 &&
           IgemmConv::eligible(w_.dim(1) * group_, w_.dim(0), w.k[off], w.k[off + 1], group_, act_);
  }

  // The node's packed implicit-GEMM weights, built on first use.
  std::shared_ptr<const IgemmConv> igemm() const {
    std::lock_guard<std::mutex> lock(wino_mu_);
    if (!igemm_)
      igemm_ = std::make_shared<IgemmConv>(w_.data<float>(), w_.dim(0), w_.dim(1), w_.dim(2), w_.dim(3), act_,
                                           act_params_);
    return igemm_;
  }

  // Drops the node's own-kernel weights that tuning timed but no built shape runs (resnet50:
  // 30 MiB of peak RSS); a later shape that wants them builds them again.
  template <typename T>
  void release_unused(std::shared_ptr<const T>& p) const {
    std::lock_guard<std::mutex> lock(wino_mu_);
    if (p && p.use_count() == 1) p.reset();
  }

  static void run_igemm(const IgemmConv& ig, const float* x, float* y, const float* bias, const float* sum,
                        const Shape& xs, const Shape& ys, const Window3& w, int num_threads) {
    const int off = ref::kMaxSpatial - 2;
    const IgemmConv::Geometry g{xs[0],       xs[2],           xs[3],       ys[2],       ys[3],          w.s[off],
                                w.s[off + 1], w.d[off], w.d[off + 1], w.pb[off], w.pb[off + 1]};
    ig.run(x, y, bias, sum, g, num_threads);
  }

  static void run_winograd(const Winograd3x3& wg, const float* x, float* y, const float* bias, const float* sum,
                           const Shape& xs, const Shape& ys, const Window3& w, int num_threads) {
    const int off = ref::kMaxSpatial - 2;
    wg.run(x, y, bias, sum, xs[0], xs[2], xs[3], ys[2], ys[3], w.pb[off], w.pb[off + 1], num_threads);
  }

  // An own kernel's time on zero-filled buffers of this shape (tuning), like the oneDNN
  // candidates'. run(x, y, bias, sum) runs it once.
  template <typename Run>
  double own_kernel_ms(const Run& run, const Shape& xs, const Shape& ys, bool has_bias, double bound_ms) const {
    auto zeros = [](const Shape& s) { return std::vector<float>(static_cast<size_t>(shape_numel(s)), 0.f); };
    std::vector<float> x = zeros(xs), y = zeros(ys), b(static_cast<size_t>(w_.dim(0)), 0.f);
    return time_best_of([&] { run(x.data(), y.data(), has_bias ? b.data() : nullptr, has_sum_ ? y.data() : nullptr); },
                        bound_ms);
  }

  Result<std::shared_ptr<ConvEntry>> build(const Shape& xs, const Shape& ys, const Window3& w, bool has_bias,
                                           bool tune, int num_threads) const {
    auto e = std::make_shared<ConvEntry>();
    const int sp = w.spatial, off = ref::kMaxSpatial - sp;
    dnnl::memory::dims strides, dil, pl, pr;
    for (int i = 0; i < sp; ++i) {
      strides.push_back(w.s[off + i]);
      dil.push_back(w.d[off + i] - 1);
      pl.push_back(w.pb[off + i]);
      pr.push_back(w.pe[off + i]);
    }
    dnnl::memory::dims wdims = to_dims(w_.shape());
    if (group_ > 1) {
      wdims[0] /= group_;
      wdims.insert(wdims.begin(), group_);
    }
    const bool plain = conv_layout_plain();
    const dnnl::memory::dims xd = to_dims(xs), yd = to_dims(ys);
    dnnl::memory::desc src_md = src_l_ != Layout::kPlain ? layout_md(xd, src_l_) : plain ? plain_md(xd) : any_md(xd);
    dnnl::memory::desc dst_md = dst_l_ != Layout::kPlain ? layout_md(yd, dst_l_) : plain ? plain_md(yd) : any_md(yd);
    dnnl::memory::desc bias_md = has_bias ? plain_md({w_.dim(0)}) : dnnl::memory::desc();
    dnnl::primitive_attr attr = user_scratchpad_attr();
    dnnl::post_ops po;
    if (has_sum_) po.append_sum(1.f);
    append_activation(po, act_, act_params_);
    attr.set_post_ops(po);
    using PD = dnnl::convolution_forward::primitive_desc;
    auto make_desc = [&](const dnnl::memory::desc& s_md, const dnnl::memory::desc& d_md) {
      return dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                             s_md, any_md(wdims), bias_md, d_md, strides, dil, pl, pr);
    };
    dnnl::convolution_forward::desc d = make_desc(src_md, dst_md);
    // A layout the node was given may have no optimized implementation on this CPU (AVX2: a
    // 3-channel first convolution with nhwc output only has oneDNN's reference kernel, 100x
    // slower): then oneDNN chooses the layouts and the sides are reordered per call.
    if (std::string(PD(d, attr, cpu_engine()).impl_info_str()).rfind("ref", 0) == 0 &&
        (src_l_ != Layout::kPlain || dst_l_ != Layout::kPlain)) {
      dnnl::convolution_forward::desc free_d = make_desc(any_md(xd), any_md(yd));
      if (std::string(PD(free_d, attr, cpu_engine()).impl_info_str()).rfind("ref", 0) != 0) d = free_d;
    }
    auto make_pd = [&] { return PD(d, attr, cpu_engine()); };
    const OwnKernelMode wmode = winograd_eligible(w) ? winograd_mode() : OwnKernelMode::kOff;
    double dnnl_ms = 0;
    e->pd = tune ? pd_at<PD>(make_pd, fastest_impl_index<PD, dnnl::convolution_forward>(make_pd, {}, &dnnl_ms))
                 : make_pd();
    if (wmode != OwnKernelMode::kOff) {
      const bool use = wmode == OwnKernelMode::kOn ||
                       (tune ? own_kernel_ms(
                                   [&](const float* x, float* y, const float* b, const float* sm) {
                                     run_winograd(*winograd(), x, y, b, sm, xs, ys, w, num_threads);
                                   },
                                   xs, ys, has_bias, dnnl_ms) < dnnl_ms
                             : !__builtin_cpu_supports("avx512f"));
      if (use) {
        e->wino = winograd();
        return e;
      }
      release_unused(wino_);
    }
    if (tune && (src_l_ != Layout::kPlain || dst_l_ != Layout::kPlain)) {
      // Tuning also times oneDNN's own preferred layouts (nChw8c with AVX2) plus the per-call
      // reorders from and to the layouts the plan gave the node, and keeps them when that is
      // 10% faster: AVX2's direct kernel runs resnet50's stride-2 3x3 convolutions at batch 8
      // 1.2-1.8x faster blocked than nhwc.
      const dnnl::convolution_forward::desc free_d = make_desc(any_md(xd), any_md(yd));
      auto make_free = [&] { return PD(free_d, attr, cpu_engine()); };
      double free_ms = std::numeric_limits<double>::infinity();
      PD fpd = pd_at<PD>(make_free, fastest_impl_index<PD, dnnl::convolution_forward>(make_free, {}, &free_ms));
      if (fpd.src_desc() != e->pd.src_desc() || fpd.dst_desc() != e->pd.dst_desc()) {
        free_ms += reorder_time_ms(user_md_for(xd, src_l_, fpd.src_desc()), fpd.src_desc()) +
                   reorder_time_ms(fpd.dst_desc(), user_md_for(yd, dst_l_, fpd.dst_desc())) +
                   (has_sum_ ? reorder_time_ms(user_md_for(yd, sum_l_, fpd.dst_desc()), fpd.dst_desc()) : 0.0);
        if (free_ms < kTuneMargin * dnnl_ms) {
          e->pd = fpd;
          dnnl_ms = free_ms;
        }
      }
    }
    const OwnKernelMode imode = igemm_eligible(w) ? igemm_mode() : OwnKernelMode::kOff;
    if (imode != OwnKernelMode::kOff) {
      const int off = ref::kMaxSpatial - 2;
      const bool strided = w.s[off] > 1 || w.s[off + 1] > 1;
      const bool use = imode == OwnKernelMode::kOn ||
                       (tune ? own_kernel_ms(
                                   [&](const float* x, float* y, const float* b, const float* sm) {
                                     run_igemm(*igemm(), x, y, b, sm, xs, ys, w, num_threads);
                                   },
                                   xs, ys, has_bias, dnnl_ms) < kTuneMargin * dnnl_ms
                             : strided && !__builtin_cpu_supports("avx512f"));
      if (use) {
        e->igemm = igemm();
        return e;
      }
      release_unused(igemm_);
    }
    e->prim = dnnl::convolution_forward(e->pd);
    // Weights: plain OIHW (or GOIHW) -> preferred layout, once.
    e->weights = packed_.get(e->pd.weights_desc(),
                             [&] { return pack_memory(w_.data<float>(), plain_md(wdims), e->pd.weights_desc()); });
    e->src_plain = user_md_for(xd, src_l_, e->pd.src_desc());
    e->dst_plain = user_md_for(yd, dst_l_, e->pd.dst_desc());
    e->sum_user = user_md_for(yd, sum_l_, e->pd.dst_desc());
    e->src_reorder = e->pd.src_desc() != e->src_plain;
    e->dst_reorder = e->pd.dst_desc() != e->dst_plain;
    const bool sum_reorder = e->pd.dst_desc() != e->sum_user;
    if (e->src_reorder) {
      e->src_rpd = make_reorder_pd(e->src_plain, e->pd.src_desc());
      e->src_r = dnnl::reorder(e->src_rpd);
    }
    if (e->dst_reorder) {
      e->dst_rpd = make_reorder_pd(e->pd.dst_desc(), e->dst_plain);
      e->dst_r = dnnl::reorder(e->dst_rpd);
    }
    if (has_sum_ && sum_reorder) {
      e->sum_rpd = make_reorder_pd(e->sum_user, e->pd.dst_desc());
      e->sum_r = dnnl::reorder(e->sum_rpd);
    }
    return e;
  }

  int inplace_input() const override { return has_sum_ ? 3 : -1; }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    RETURN_IF_ERROR(geometry(in, w));
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    const Tensor* bias = opt_in(in, 2);
    const Tensor* sum = has_sum_ ? opt_in(in, 3) : nullptr;
    if (has_sum_ && !sum) return error("Sum input is missing");
    RETURN_IF_ERROR(check_layout(label_, "X", x, src_l_));
    RETURN_IF_ERROR(check_layout(label_, "Y", y, dst_l_));
    if (sum) RETURN_IF_ERROR(check_layout(label_, "Sum", *sum, sum_l_));
    set_threads(ctx);
    try {
      PrimitiveCache<ConvEntry>::Key key = x.shape();
      key.push_back(ctx.num_threads);
      key.push_back(bias ? 1 : 0);
      const Shape ys = y.shape();
      ASSIGN_OR_RETURN(std::shared_ptr<const ConvEntry> e,
                       cache_.get(key, [&]() { return build(x.shape(), ys, w, bias != nullptr, ctx.tune, ctx.num_threads); }));
      if (e->wino) {
        run_winograd(*e->wino, x.data<float>(), y.data<float>(), bias ? bias->data<float>() : nullptr,
                     sum ? sum->data<float>() : nullptr, x.shape(), ys, w, ctx.num_threads);
        return Status::ok();
      }
      if (e->igemm) {
        run_igemm(*e->igemm, x.data<float>(), y.data<float>(), bias ? bias->data<float>() : nullptr,
                  sum ? sum->data<float>() : nullptr, x.shape(), ys, w, ctx.num_threads);
        return Status::ok();
      }
      dnnl::engine& eng = cpu_engine();
      dnnl::stream& s = thread_stream();
      dnnl::memory src_user(e->src_plain, eng, const_cast<void*>(x.raw()));
      dnnl::memory dst_user(e->dst_plain, eng, y.raw());
      dnnl::memory src = src_user, dst = dst_user;
      if (e->src_reorder) {
        src = dnnl::memory(e->pd.src_desc(), eng, Workspace::get(Workspace::kSrc, e->pd.src_desc().get_size()));
        run_reorder(e->src_r, e->src_rpd, s, src_user, src);
      }
      if (e->dst_reorder)
        dst = dnnl::memory(e->pd.dst_desc(), eng, Workspace::get(Workspace::kDst, e->pd.dst_desc().get_size()));
      if (sum) {
        if (e->pd.dst_desc() != e->sum_user) {
          const void* sum_data = sum->raw();
          if (sum_data == dst.get_data_handle()) {  // in place (inplace_input): no reorder onto itself
            void* copy = Workspace::get(Workspace::kExtra, sum->nbytes());
            std::memcpy(copy, sum_data, sum->nbytes());
            sum_data = copy;
          }
          dnnl::memory sum_user(e->sum_user, eng, const_cast<void*>(sum_data));
          run_reorder(e->sum_r, e->sum_rpd, s, sum_user, dst);
        } else if (sum->raw() != dst.get_data_handle()) {
          std::memcpy(dst.get_data_handle(), sum->raw(), e->pd.dst_desc().get_size());
        }
      }
      std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, src},
                                                    {DNNL_ARG_WEIGHTS, e->weights},
                                                    {DNNL_ARG_DST, dst},
                                                    {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}};
      if (bias) args[DNNL_ARG_BIAS] = dnnl::memory(plain_md({w_.dim(0)}), eng, const_cast<void*>(bias->raw()));
      e->prim.execute(s, args);
      if (e->dst_reorder) run_reorder(e->dst_r, e->dst_rpd, s, dst, dst_user);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  bool fused_ = false;
  WindowAttrs attrs_;
  int64_t group_ = 1;
  ActKind act_ = ActKind::kNone;
  std::vector<float> act_params_;
  bool has_sum_ = false;
  Layout src_l_ = Layout::kPlain, dst_l_ = Layout::kPlain, sum_l_ = Layout::kPlain;
  Tensor w_;  // the constant W (shares the initializer's storage)
  bool wino_layouts_ = false;  // X, Y (and Sum) nhwc: Winograd may run this node
  mutable std::mutex wino_mu_;
  mutable std::shared_ptr<const Winograd3x3> wino_;
  mutable std::shared_ptr<const IgemmConv> igemm_;
  PrimitiveCache<ConvEntry> cache_;
  PackedWeightStore packed_;
};

}  // namespace

void register_dnnl_conv(KernelRegistry& r, int priority) {
  r.add("", "Conv", "dnnl", priority, make_factory<DnnlConvKernel>());
  r.add(kMedqDomain, "FusedConv", "dnnl", priority, make_factory<DnnlConvKernel>());
}

}  // namespace dnnl_k
}  // namespace medq
