// oneDNN int8 kernels for the medq quantized ops QConv and QMatMul
// (ops/fused.h; attributes in kernels/ref/quant_common.h).
//
//   acc  = sum (x - x_zp) * w          u8s8 or s8s8 -> s32 (VNNI on AVX-512 cores)
//   real = x_scale * w_scale[o] * (acc + bias_acc[o])
//   y    = quantize(act(real), y_scale, y_zp)  or  act(real) for float32 output
//
// Mapping onto the oneDNN 2.x int8 quantization model:
//   dst = zp_dst + post_ops(output_scale[o] * (conv_s32(src - zp_src, wei) + bias))
// with output_scale[o] = x_scale * w_scale[o] / y_scale (no / y_scale for
// float output), bias in accumulator units (f32, bias_real / (x_scale * w_scale[o])),
// Clip bounds divided by y_scale, runtime s32 zero points for src and dst.
// The f32 -> u8/s8 conversion rounds half to even and saturates, as
// QuantizeLinear does. Results can differ from the reference by one
// quantization step where real / y_scale lies within float rounding of a .5 tie.
//
// W (int8) and the bias must be constants; they are pre-packed once per cache
// entry (weights reordered into the primitive's preferred layout, including
// the s8s8 compensation). Activations are plain NCHW at the boundary; the
// primitive uses `any` (oneDNN picks nhwc for int8) and per-call reorders.
// Primitives are cached per (X shape, X dtype, thread count).
//
// Only on CPUs with VNNI (cpu_has_vnni()): without it oneDNN's u8s8 kernels sum pairs of 8-bit
// products into saturating int16 (vpmaddubsw) and are wrong for large values, so QConv and
// QMatMul decline and the exact reference kernels (int32 accumulation) run them.
// Also: MaxPool on uint8/int8 tensors (run by the QDQ pass on quantized data).
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "core/cpu.h"
#include "kernels/dnnl/dnnl_common.h"
#include "kernels/ref/conv_common.h"
#include "kernels/ref/quant_common.h"
#include "ops/fused.h"

namespace medq {
namespace dnnl_k {
namespace {

using dnnl::memory;
using ref::Window3;
using ref::WindowAttrs;

memory::data_type dnnl_type(DataType dt) {
  switch (dt) {
    case DataType::kUInt8: return memory::data_type::u8;
    case DataType::kInt8: return memory::data_type::s8;
    case DataType::kInt32: return memory::data_type::s32;
    default: return memory::data_type::f32;
  }
}

// Plain int8 weights `w` with dims `dims` reordered into `md` (the primitive's
// layout, including the s8 compensation oneDNN adds).
memory pack_s8(const memory::desc& md, const memory::dims& dims, const Tensor& w) {
  memory packed(md, cpu_engine());
  memory wplain(plain_md(dims, memory::data_type::s8), cpu_engine(), const_cast<void*>(w.raw()));
  dnnl::stream s(cpu_engine());
  dnnl::reorder(wplain, packed).execute(s, wplain, packed);
  s.wait();
  return packed;
}

bool plain_or_nhwc(const Node& n) {
  for (size_t i = 0; i < n.inputs.size(); ++i)
    if (channel_block(node_layout(n, true, i))) return false;
  for (size_t i = 0; i < n.outputs.size(); ++i)
    if (channel_block(node_layout(n, false, i))) return false;
  return true;
}

// State shared by QConv and QMatMul: quantization parameters, pre-scaled
// output scales / bias / clip bounds and the constant zero-point storage.
class Int8Base : public DnnlKernel {
 protected:
  // Checked after the node's attributes, so that a malformed node is reported as such.
  Status require_vnni() const {
    if (cpu_has_vnni()) return Status::ok();
    return unsupported_error("CPU has no VNNI: oneDNN's u8s8 kernels would saturate 16-bit sums (the reference kernel runs instead)");
  }
  Status init_quant(const KernelCreateInfo& info, int64_t channels, const Tensor* bias) {
    RETURN_IF_ERROR(p_.parse(info.node));
    if (p_.w_scales.size() != 1 && static_cast<int64_t>(p_.w_scales.size()) != channels)
      return error("w_scales has " + std::to_string(p_.w_scales.size()) + " entries, expected 1 or " +
                   std::to_string(channels));
    const float ys = p_.quantized_output() ? p_.y_scale : 1.f;
    per_channel_ = p_.w_scales.size() != 1;
    for (size_t o = 0; o < p_.w_scales.size(); ++o) scales_.push_back(p_.x_scale * p_.w_scales[o] / ys);
    if (bias) {
      if ((bias->dtype() != DataType::kInt32 && bias->dtype() != DataType::kFloat32) || bias->numel() != channels)
        return error("bias must be int32 or float32 [" + std::to_string(channels) + "], got " + bias->desc());
      bias_acc_.resize(static_cast<size_t>(channels));
      for (int64_t o = 0; o < channels; ++o)
        bias_acc_[o] = bias->dtype() == DataType::kInt32
                           ? static_cast<float>(bias->data<int32_t>()[o])
                           : bias->data<float>()[o] / (p_.x_scale * p_.w_scale(o));
    }
    if (p_.act == ActKind::kClip) clip_ = {p_.act_params[0] / ys, p_.act_params[1] / ys};
    x_zp_ = p_.x_zp;
    y_zp_ = p_.quantized_output() ? p_.y_zp : 0;
    return Status::ok();
  }

  // Output scales, zero points, activation post-op and user scratchpad.
  dnnl::primitive_attr make_attr() const {
    dnnl::primitive_attr attr = user_scratchpad_attr();
    attr.set_output_scales(per_channel_ ? (1 << 1) : 0, scales_);
    if (x_zp_ != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
    if (y_zp_ != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
    dnnl::post_ops po;
    // QConv Sum input (passes/fuse_qsum.cc): dst holds B_q on entry; sum adds
    // sum_scale / y_scale * (B_q - sum_zero_point) before the activation.
    if (has_sum_) {
      if (!pre_sum_clip_.empty()) append_activation(po, ActKind::kClip, pre_sum_clip_);
      po.append_sum(sum_scale_, sum_zp_, dnnl_type(p_.out_dtype));
    }
    if (p_.act == ActKind::kRelu) append_activation(po, ActKind::kRelu, {});
    if (p_.act == ActKind::kClip) append_activation(po, ActKind::kClip, clip_);
    attr.set_post_ops(po);
    return attr;
  }

  void add_zero_point_args(std::unordered_map<int, memory>& args) const {
    const memory::desc zmd({1}, memory::data_type::s32, memory::format_tag::x);
    if (x_zp_ != 0)
      args[DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC] = memory(zmd, cpu_engine(), const_cast<int32_t*>(&x_zp_));
    if (y_zp_ != 0)
      args[DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST] = memory(zmd, cpu_engine(), const_cast<int32_t*>(&y_zp_));
  }

  quant::QParams p_;
  bool per_channel_ = false;
  std::vector<float> scales_;    // output scales
  std::vector<float> bias_acc_;  // bias in accumulator units (empty: none)
  std::vector<float> clip_;      // Clip bounds in output units
  int32_t x_zp_ = 0, y_zp_ = 0;
  bool has_sum_ = false;
  float sum_scale_ = 1.f;  // in output units (sum_scale / y_scale)
  int32_t sum_zp_ = 0;
  std::vector<float> pre_sum_clip_;  // clamp of the conv result before the sum, output units
};

// ---------------------------------------------------------------- QConv

struct QConvEntry {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  memory weights;  // packed, owned
  memory::desc src_user, dst_user;
  SideReorder src_r, dst_r;
};

class DnnlQConvKernel : public Int8Base {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (!plain_or_nhwc(n)) return unsupported_error("only plain and nhwc layouts are supported");
    src_l_ = node_layout(n, true, 0);
    dst_l_ = node_layout(n, false, 0);
    for (size_t i = 1; i < n.inputs.size() && i < 3; ++i)
      if (node_layout(n, true, i) != Layout::kPlain) return unsupported_error("W/B must be plain");
    RETURN_IF_ERROR(attrs_.parse(n));
    group_ = n.attr_i("group", 1);
    if (group_ < 1) return error("group must be >= 1");
    if (n.inputs.size() < 2) return error("needs inputs X and W");
    if (n.has_input(3)) {
      // Sum input: same type as the 8-bit output, stored in the output's layout.
      if (graph_dtype(info, 3) != static_cast<DataType>(n.attr_i("output_dtype", 1)) ||
          !quant::is_q8(graph_dtype(info, 3)))
        return unsupported_error("the Sum input must have the (8-bit) output type");
      if (node_layout(n, true, 3) != dst_l_) return unsupported_error("the Sum input must share the output layout");
      const float ss = n.attr_f("sum_scale", 0.f), ys = n.attr_f("y_scale", 0.f);
      if (!(ss > 0.f) || !(ys > 0.f)) return error("sum_scale and y_scale must be positive");
      has_sum_ = true;
      sum_scale_ = ss / ys;
      sum_zp_ = static_cast<int32_t>(n.attr_i("sum_zero_point", 0));
      const std::vector<float> c = n.attr_floats("pre_sum_clip");
      if (!c.empty() && c.size() != 2) return error("pre_sum_clip must have 2 values");
      if (c.size() == 2) pre_sum_clip_ = {c[0] / ys, c[1] / ys};
    }
    const Tensor* w = info.constant_input(1);
    if (!w) return unsupported_error("W is not a constant");
    if (w->dtype() != DataType::kInt8) return unsupported_error("W is not int8");
    if (w->rank() < 3 || w->rank() > 5) return unsupported_error("W rank " + std::to_string(w->rank()));
    if (w->dim(0) % group_ != 0) return error("W output channels not divisible by group");
    const DataType xdt = graph_dtype(info, 0);
    if (xdt != DataType::kUndefined && !quant::is_q8(xdt)) return unsupported_error("X is not uint8/int8");
    const Tensor* b = info.constant_input(2);
    if (n.has_input(2) && !b) return unsupported_error("B is not a constant");
    RETURN_IF_ERROR(init_quant(info, w->dim(0), b));
    RETURN_IF_ERROR(require_vnni());
    w_ = *w;
    return Status::ok();
  }

  Status geometry(const TensorList& in, Window3& w, Shape& ys) const {
    const Tensor& x = *in[0];
    if (!quant::is_q8(x.dtype())) return error(std::string("X must be uint8 or int8, got ") + dtype_name(x.dtype()));
    if (in[1]->shape() != w_.shape() || in[1]->dtype() != DataType::kInt8) return error("W changed since create");
    if (x.rank() != w_.rank())
      return error("X " + shape_str(x.shape()) + " and W " + shape_str(w_.shape()) + " have different ranks");
    if (x.dim(1) != w_.dim(1) * group_)
      return error("X has " + std::to_string(x.dim(1)) + " channels but W " + shape_str(w_.shape()) + " with group " +
                   std::to_string(group_) + " expects " + std::to_string(w_.dim(1) * group_));
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    std::vector<int64_t> k_sp(w_.shape().begin() + 2, w_.shape().end());
    if (!attrs_.kernel.empty() && attrs_.kernel != k_sp)
      return error("kernel_shape " + shape_str(attrs_.kernel) + " does not match W dims " + shape_str(w_.shape()));
    RETURN_IF_ERROR(ref::compute_window(label_, attrs_, in_sp, k_sp, false, w));
    ys = {x.dim(0), w_.dim(0)};
    for (int i = ref::kMaxSpatial - w.spatial; i < ref::kMaxSpatial; ++i) ys.push_back(w.out[i]);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 4));
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(geometry(in, w, ys));
    if (has_sum_ && (in.size() < 4 || !in[3] || in[3]->shape() != ys || in[3]->dtype() != p_.out_dtype))
      return error("Sum input must be " + std::string(dtype_name(p_.out_dtype)) + " " + shape_str(ys));
    out.resize(num_outputs_);
    out[0] = {p_.out_dtype, ys};
    return Status::ok();
  }

  Result<std::shared_ptr<QConvEntry>> build(const Tensor& x, const Shape& ys, const Window3& w, bool tune) const {
    auto e = std::make_shared<QConvEntry>();
    const int sp = w.spatial, off = ref::kMaxSpatial - sp;
    memory::dims strides, dil, pl, pr;
    for (int i = 0; i < sp; ++i) {
      strides.push_back(w.s[off + i]);
      dil.push_back(w.d[off + i] - 1);
      pl.push_back(w.pb[off + i]);
      pr.push_back(w.pe[off + i]);
    }
    memory::dims wdims = to_dims(w_.shape());
    if (group_ > 1) {
      wdims[0] /= group_;
      wdims.insert(wdims.begin(), group_);
    }
    const memory::dims xd = to_dims(x.shape()), yd = to_dims(ys);
    const memory::data_type st = dnnl_type(x.dtype()), dt = dnnl_type(p_.out_dtype);
    memory::desc src_md(xd, st, memory::format_tag::any);
    memory::desc dst_md(yd, dt, memory::format_tag::any);
    memory::desc wei_md(wdims, memory::data_type::s8, memory::format_tag::any);
    memory::desc bias_md = bias_acc_.empty() ? memory::desc() : plain_md({w_.dim(0)});
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md,
                                      wei_md, bias_md, dst_md, strides, dil, pl, pr);
    using PD = dnnl::convolution_forward::primitive_desc;
    const dnnl::primitive_attr attr = make_attr();
    auto make_pd = [&] { return PD(d, attr, cpu_engine()); };
    if (tune) {
      std::unordered_map<int, memory> zps;
      add_zero_point_args(zps);
      e->pd = pd_at<PD>(make_pd, fastest_impl_index<PD, dnnl::convolution_forward>(make_pd, zps));
    } else {
      e->pd = make_pd();
    }
    e->prim = dnnl::convolution_forward(e->pd);
    // Weights: plain (g)oihw s8 -> the preferred layout (with compensation), once.
    e->weights = packed_.get(e->pd.weights_desc(), [&] { return pack_s8(e->pd.weights_desc(), wdims, w_); });
    e->src_user = layout_md(xd, src_l_, st);
    e->dst_user = layout_md(yd, dst_l_, dt);
    e->src_r.init_in(e->src_user, e->pd.src_desc());
    e->dst_r.init_out(e->pd.dst_desc(), e->dst_user);
    return e;
  }

  // B_q is copied (or reordered into the compute layout) into the destination before the
  // convolution, so the destination may be B_q's own storage.
  int inplace_input() const override { return has_sum_ ? 3 : -1; }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(geometry(in, w, ys));
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    set_threads(ctx);
    try {
      PrimitiveCache<QConvEntry>::Key key = x.shape();
      key.push_back(static_cast<int64_t>(x.dtype()));
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const QConvEntry> e, cache_.get(key, [&]() { return build(x, ys, w, ctx.tune); }));
      dnnl::stream s(cpu_engine());
      memory src = e->src_r.input(x.raw(), Workspace::kSrc, s);
      memory dst = e->dst_r.output(y.raw(), Workspace::kDst);
      if (has_sum_) {
        // The sum post-op reads the destination: put B_q there (in the compute layout).
        const Tensor& b = *in[3];
        if (!e->dst_r.needed) {
          if (y.raw() != b.raw()) std::memcpy(y.raw(), b.raw(), b.nbytes());
        } else {
          memory bm(e->dst_r.user, cpu_engine(), const_cast<void*>(b.raw()));
          dnnl::reorder(bm, dst).execute(s, bm, dst);
        }
      }
      std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src},
                                              {DNNL_ARG_WEIGHTS, e->weights},
                                              {DNNL_ARG_DST, dst},
                                              {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}};
      if (!bias_acc_.empty())
        args[DNNL_ARG_BIAS] = memory(plain_md({w_.dim(0)}), cpu_engine(),
                                     const_cast<float*>(bias_acc_.data()));
      add_zero_point_args(args);
      e->prim.execute(s, args);
      e->dst_r.finish(dst, y.raw(), s);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  WindowAttrs attrs_;
  int64_t group_ = 1;
  Layout src_l_ = Layout::kPlain, dst_l_ = Layout::kPlain;
  Tensor w_;
  PrimitiveCache<QConvEntry> cache_;
  PackedWeightStore packed_;
};

// ---------------------------------------------------------------- QMatMul

struct QMatMulEntry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  memory weights;
  memory::desc src_md, dst_md;
};

class DnnlQMatMulKernel : public Int8Base {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (has_blocked_io(n)) return unsupported_error("blocked layouts are not supported");
    if (n.inputs.size() < 2) return error("needs inputs A and B");
    const Tensor* b = info.constant_input(1);
    if (!b) return unsupported_error("B is not a constant");
    if (b->dtype() != DataType::kInt8 || b->rank() != 2) return unsupported_error("B is not an int8 matrix");
    const DataType adt = graph_dtype(info, 0);
    if (adt != DataType::kUndefined && !quant::is_q8(adt)) return unsupported_error("A is not uint8/int8");
    const Tensor* bias = info.constant_input(2);
    if (n.has_input(2) && !bias) return unsupported_error("bias is not a constant");
    RETURN_IF_ERROR(init_quant(info, b->dim(1), bias));
    RETURN_IF_ERROR(require_vnni());
    b_ = *b;
    return Status::ok();
  }

  Status shape_of(const TensorList& in, Shape& ys) const {
    const Tensor& a = *in[0];
    if (!quant::is_q8(a.dtype())) return error(std::string("A must be uint8 or int8, got ") + dtype_name(a.dtype()));
    if (a.rank() < 1 || a.dim(-1) != b_.dim(0))
      return error("A " + shape_str(a.shape()) + " does not match B " + shape_str(b_.shape()));
    if (in[1]->shape() != b_.shape()) return error("B changed since create");
    ys = a.shape();
    ys.back() = b_.dim(1);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    Shape ys;
    RETURN_IF_ERROR(shape_of(in, ys));
    out.resize(num_outputs_);
    out[0] = {p_.out_dtype, ys};
    return Status::ok();
  }

  Result<std::shared_ptr<QMatMulEntry>> build(int64_t M, DataType adt) const {
    auto e = std::make_shared<QMatMulEntry>();
    const int64_t K = b_.dim(0), N = b_.dim(1);
    e->src_md = plain_md({M, K}, dnnl_type(adt));
    e->dst_md = plain_md({M, N}, dnnl_type(p_.out_dtype));
    memory::desc wei_md({K, N}, memory::data_type::s8, memory::format_tag::any);
    memory::desc bias_md = bias_acc_.empty() ? memory::desc() : plain_md({1, N});
    dnnl::matmul::desc d(e->src_md, wei_md, bias_md, e->dst_md);
    e->pd = dnnl::matmul::primitive_desc(d, make_attr(), cpu_engine());
    e->prim = dnnl::matmul(e->pd);
    e->weights = packed_.get(e->pd.weights_desc(), [&] { return pack_s8(e->pd.weights_desc(), {K, N}, b_); });
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Shape ys;
    RETURN_IF_ERROR(shape_of(in, ys));
    const Tensor& a = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    const int64_t M = a.numel() / a.dim(-1);
    set_threads(ctx);
    try {
      PrimitiveCache<QMatMulEntry>::Key key = {M, static_cast<int64_t>(a.dtype()), ctx.num_threads};
      ASSIGN_OR_RETURN(std::shared_ptr<const QMatMulEntry> e, cache_.get(key, [&]() { return build(M, a.dtype()); }));
      dnnl::stream s(cpu_engine());
      std::unordered_map<int, memory> args = {
          {DNNL_ARG_SRC, memory(e->src_md, cpu_engine(), const_cast<void*>(a.raw()))},
          {DNNL_ARG_WEIGHTS, e->weights},
          {DNNL_ARG_DST, memory(e->dst_md, cpu_engine(), y.raw())},
          {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}};
      if (!bias_acc_.empty())
        args[DNNL_ARG_BIAS] = memory(plain_md({1, b_.dim(1)}), cpu_engine(),
                                     const_cast<float*>(bias_acc_.data()));
      add_zero_point_args(args);
      e->prim.execute(s, args);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  Tensor b_;
  PrimitiveCache<QMatMulEntry> cache_;
  PackedWeightStore packed_;
};

// ---------------------------------------------------------------- 8-bit MaxPool

// MaxPool on uint8/int8 NCHW data (the QDQ pass runs MaxPool on quantized
// tensors). 2-D, no dilation, no Indices output. Pools in nhwc (oneDNN's int8
// pooling layout) with per-call u8 reorders; float MaxPool stays with dnnl_pool.cc.
struct QPoolEntry {
  dnnl::pooling_forward::primitive_desc pd;
  dnnl::pooling_forward prim;
  SideReorder src_r, dst_r;
};

class DnnlMaxPool8Kernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const DataType xdt = graph_dtype(info, 0);
    if (!quant::is_q8(xdt)) return unsupported_error("X is not uint8/int8");
    if (!plain_or_nhwc(n)) return unsupported_error("only plain and nhwc layouts are supported");
    src_l_ = node_layout(n, true, 0);
    dst_l_ = node_layout(n, false, 0);
    if (n.inputs.size() != 1) return error("expects 1 input");
    for (size_t i = 1; i < n.outputs.size(); ++i)
      if (n.outputs[i] != kNoValue) return unsupported_error("MaxPool Indices output");
    if (n.attr_i("storage_order", 0) != 0) return unsupported_error("storage_order 1");
    RETURN_IF_ERROR(attrs_.parse(n));
    if (attrs_.kernel.size() != 2) return unsupported_error("only 2-D MaxPool");
    for (int64_t d : attrs_.dilations)
      if (d != 1) return unsupported_error("dilated MaxPool");
    if (attrs_.auto_pad == "NOTSET" && !attrs_.pads.empty()) {
      if (attrs_.pads.size() != 4) return error("pads must have 4 entries");
      for (size_t i = 0; i < 4; ++i)
        if (attrs_.pads[i] >= attrs_.kernel[i % 2]) return unsupported_error("pads >= kernel");
    }
    return Status::ok();
  }

  Status geometry(const Tensor& x, Window3& w, Shape& ys) const {
    if (!quant::is_q8(x.dtype())) return unsupported_error("X is not uint8/int8");
    if (x.rank() != 4) return error("X must have rank 4, got " + shape_str(x.shape()));
    RETURN_IF_ERROR(ref::compute_window(label_, attrs_, {x.dim(2), x.dim(3)}, attrs_.kernel, true, w));
    ys = {x.dim(0), x.dim(1), w.out[1], w.out[2]};
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(geometry(*in[0], w, ys));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    for (size_t i = 1; i < out.size(); ++i) out[i] = {DataType::kInt64, ys};
    return Status::ok();
  }

  Result<std::shared_ptr<QPoolEntry>> build(const Tensor& x, const Shape& ys, const Window3& w) const {
    auto e = std::make_shared<QPoolEntry>();
    const memory::data_type t = dnnl_type(x.dtype());
    const memory::dims xd = to_dims(x.shape()), yd = to_dims(ys);
    memory::dims strides = {w.s[1], w.s[2]}, kernel = {w.k[1], w.k[2]}, pl = {w.pb[1], w.pb[2]}, pr;
    for (int i = 1; i < 3; ++i) pr.push_back(std::max<int64_t>(0, (w.out[i] - 1) * w.s[i] + w.k[i] - w.in[i] - w.pb[i]));
    memory::desc src(xd, t, memory::format_tag::nhwc), dst(yd, t, memory::format_tag::nhwc);
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, src, dst, strides,
                                  kernel, pl, pr);
    e->pd = dnnl::pooling_forward::primitive_desc(d, user_scratchpad_attr(), cpu_engine());
    e->prim = dnnl::pooling_forward(e->pd);
    e->src_r.init_in(layout_md(xd, src_l_, t), e->pd.src_desc());
    e->dst_r.init_out(e->pd.dst_desc(), layout_md(yd, dst_l_, t));
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(geometry(x, w, ys));
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    set_threads(ctx);
    try {
      PrimitiveCache<QPoolEntry>::Key key = x.shape();
      key.push_back(static_cast<int64_t>(x.dtype()));
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const QPoolEntry> e, cache_.get(key, [&]() { return build(x, ys, w); }));
      dnnl::stream s(cpu_engine());
      memory src = e->src_r.input(x.raw(), Workspace::kSrc, s);
      memory dst = e->dst_r.output(y.raw(), Workspace::kDst);
      e->prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}});
      e->dst_r.finish(dst, y.raw(), s);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  WindowAttrs attrs_;
  Layout src_l_ = Layout::kPlain, dst_l_ = Layout::kPlain;
  PrimitiveCache<QPoolEntry> cache_;
};

// The reference kernel of the node without its layout markers: for element-wise int8 ops
// whose math does not depend on the storage order when every side shares one layout.
Result<std::unique_ptr<Kernel>> ref_kernel_of(const KernelCreateInfo& info) {
  Node plain = info.node;
  plain.remove_attr(kInLayoutsAttr);
  plain.remove_attr(kOutLayoutsAttr);
  return KernelRegistry::global().create(KernelCreateInfo{plain, info.graph, info.opset}, {"ref"});
}

// ---------------------------------------------------------------- QAdd

// medq QAdd (int8 residual add) between nhwc int8 values. A, B and Y have the
// same shape (the op requires it), so the element-wise computation is the same
// whatever the storage order, as long as all three sides share one layout. This
// kernel accepts exactly that (all plain or all nhwc) and delegates the math to
// the reference QAdd kernel, so int8 residual chains stay in oneDNN's nhwc
// without a reorder before and after every Add.
class DnnlQAddKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (n.inputs.size() != 2 || n.outputs.size() != 1) return error("expects 2 inputs and 1 output");
    const Layout l = node_layout(n, false, 0);
    if (channel_block(l)) return unsupported_error("only plain and nhwc layouts are supported");
    if (node_layout(n, true, 0) != l || node_layout(n, true, 1) != l)
      return unsupported_error("A, B and Y must share one layout");
    ASSIGN_OR_RETURN(impl_, ref_kernel_of(info));
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override { return impl_->infer(in, out); }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    return impl_->run(in, out, ctx);
  }

 private:
  std::unique_ptr<Kernel> impl_;
};

// ---------------------------------------------------------------- QuantizeLinear / DequantizeLinear

// Per-tensor QuantizeLinear / DequantizeLinear inside the int8 nhwc chains: e.g. the last
// QConv's nhwc output is dequantized in nhwc for a dnnl GlobalAveragePool, instead of a u8
// reorder back to nchw before a plain DequantizeLinear. Same layout on both sides: the
// computation is element-wise and the reference kernel runs it; nhwc -> plain dequantization
// of a 4-D tensor is a transposing loop.
class DnnlQdqKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const bool quantize = n.op_type == "QuantizeLinear";
    if (n.inputs.size() < 2 || n.outputs.size() != 1) return error("expects 2 or 3 inputs and 1 output");
    if (!plain_or_nhwc(n)) return unsupported_error("only plain and nhwc layouts are supported");
    in_l_ = node_layout(n, true, 0);
    out_l_ = node_layout(n, false, 0);
    const bool blocked = in_l_ != Layout::kPlain || out_l_ != Layout::kPlain;
    if (blocked) {
      // A blocked side is only meaningful with one scale for the whole tensor.
      const Value& sv = info.graph.value(n.inputs[1]);
      if (!sv.is_constant() || sv.initializer.numel() != 1) return unsupported_error("per-axis scales");
      if (n.has_input(2)) {
        const Value& zv = info.graph.value(n.inputs[2]);
        if (!zv.is_constant() || zv.initializer.numel() != 1) return unsupported_error("per-axis zero points");
      }
      // Quantizing the model input straight into nhwc was tried: a fused transposing loop
      // (0.57 ms for 8x3x224x224) lost to QuantizeLinear + oneDNN's u8 reorder (0.33 + 0.17 ms).
      if (in_l_ != out_l_ && (quantize || out_l_ != Layout::kPlain))
        return unsupported_error("only nhwc -> plain dequantization converts layouts");
    }
    ASSIGN_OR_RETURN(impl_, ref_kernel_of(info));
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(impl_->infer(in, out));
    if (in_l_ != out_l_ && in[0]->rank() != 4) return error("a layout change needs a 4-D tensor");
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    if (in_l_ == out_l_) return impl_->run(in, out, ctx);
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (x.rank() != 4 || in[1]->numel() != 1) return error("a layout change needs a 4-D tensor and one scale");
    const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    const float sc = static_cast<float>(in[1]->get_f64(0));
    const Tensor* zp = opt_in(in, 2);
    const int32_t z = zp ? static_cast<int32_t>(zp->get_i64(0)) : 0;
    const int nt = x.numel() > (1 << 16) ? ctx.num_threads : 1;
    if (x.dtype() == DataType::kUInt8) dequantize_nchw(x.data<uint8_t>(), y.data<float>(), N, C, H, W, sc, z, nt);
    else if (x.dtype() == DataType::kInt8) dequantize_nchw(x.data<int8_t>(), y.data<float>(), N, C, H, W, sc, z, nt);
    else return error("x must be uint8 or int8");
    return Status::ok();
  }

 private:
  template <class T>
  static void dequantize_nchw(const T* x, float* y, int64_t N, int64_t C, int64_t H, int64_t W, float sc, int32_t z,
                              int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t nh = 0; nh < N * H; ++nh) {
      const int64_t n = nh / H, h = nh % H;
      const T* src = x + nh * W * C;
      for (int64_t c = 0; c < C; ++c) {
        float* dst = y + ((n * C + c) * H + h) * W;
        for (int64_t w = 0; w < W; ++w) dst[w] = static_cast<float>(static_cast<int32_t>(src[w * C + c]) - z) * sc;
      }
    }
  }

  Layout in_l_ = Layout::kPlain, out_l_ = Layout::kPlain;
  std::unique_ptr<Kernel> impl_;
};

}  // namespace

void register_dnnl_int8(KernelRegistry& r, int priority) {
  r.add(kMedqDomain, "QConv", "dnnl", priority, make_factory<DnnlQConvKernel>());
  r.add(kMedqDomain, "QMatMul", "dnnl", priority, make_factory<DnnlQMatMulKernel>());
  r.add(kMedqDomain, "QAdd", "dnnl", priority, make_factory<DnnlQAddKernel>());
  r.add("", "QuantizeLinear", "dnnl", priority, make_factory<DnnlQdqKernel>());
  r.add("", "DequantizeLinear", "dnnl", priority, make_factory<DnnlQdqKernel>());
  // Tried before the float dnnl MaxPool (which declines 8-bit inputs anyway).
  r.add("", "MaxPool", "dnnl", priority + 1, make_factory<DnnlMaxPool8Kernel>());
}

}  // namespace dnnl_k
}  // namespace medq
