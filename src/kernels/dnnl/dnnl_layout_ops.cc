// Layout-aware oneDNN kernels for the ops that sit between convolutions:
// BatchNormalization (inference; and medq FusedBatchNorm = BN + Relu), eltwise activations (Relu, LeakyRelu, Clip,
// Sigmoid, Tanh, HardSwish), binary Add/Mul/Sub/Div (numpy broadcasting, e.g.
// the [N,C,1,1] * [N,C,H,W] of squeeze-excitation blocks), Concat and Transpose (NHWC models'
// layout changes around pooling and at the head).
//
// fp32 only. These kernels only run nodes that carry layout markers
// (dnnl_layout.h; set by the assign_layouts pass): an unmarked node gets
// kUnsupported and runs on ref as before. Each side is plain row-major or, for
// 4-D tensors, nhwc / nChw16c per the markers; every kernel also works with all
// sides plain (any rank).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/dnnl/dnnl_common.h"
#include "kernels/ref/broadcast.h"
#include "ops/fused.h"

namespace medq {
namespace dnnl_k {
namespace {

Status require_marker(const KernelCreateInfo& info) {
  if (!has_layout_marker(info.node))
    return unsupported(info.node.label() + ": the dnnl kernel only runs layout-assigned nodes");
  return Status::ok();
}

Status require_f32_input(const KernelCreateInfo& info, size_t i) {
  const DataType dt = graph_dtype(info, i);
  if (dt != DataType::kFloat32)
    return unsupported(info.node.label() + ": input " + std::to_string(i) + " is not known to be float32");
  return Status::ok();
}

// The layout a kernel computes in: the first non-plain of the given layouts.
Layout compute_layout(std::initializer_list<Layout> ls) {
  for (Layout l : ls)
    if (l != Layout::kPlain) return l;
  return Layout::kPlain;
}

Status only_first_output(const KernelCreateInfo& info) {
  const Node& n = info.node;
  if (n.outputs.empty() || n.outputs[0] == kNoValue) return unsupported(n.label() + ": output 0 is not used");
  for (size_t i = 1; i < n.outputs.size(); ++i) {
    if (n.outputs[i] == kNoValue) continue;
    const Value& v = info.graph.value(n.outputs[i]);
    if (!v.consumers.empty() || info.graph.is_graph_output(n.outputs[i]))
      return unsupported(n.label() + ": output " + std::to_string(i) + " is used");
  }
  return Status::ok();
}

// ------------------------------------------------------------ eltwise

struct EltwiseEntry {
  dnnl::eltwise_forward::primitive_desc pd;
  dnnl::eltwise_forward prim;
  SideReorder src, dst;
};

class DnnlEltwiseKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(require_marker(info));
    RETURN_IF_ERROR(require_f32_input(info, 0));
    RETURN_IF_ERROR(only_first_output(info));
    const Node& n = info.node;
    const std::string& op = n.op_type;
    max_inputs_ = 1;
    if (op == "Relu") {
      alg_ = dnnl::algorithm::eltwise_relu;
    } else if (op == "LeakyRelu") {
      alg_ = dnnl::algorithm::eltwise_relu;
      alpha_ = n.attr_f("alpha", 0.01f);
    } else if (op == "Sigmoid") {
      alg_ = dnnl::algorithm::eltwise_logistic;
    } else if (op == "Tanh") {
      alg_ = dnnl::algorithm::eltwise_tanh;
    } else if (op == "HardSwish") {
      alg_ = dnnl::algorithm::eltwise_hardswish;
    } else if (op == "Clip") {
      max_inputs_ = 3;
      alg_ = dnnl::algorithm::eltwise_clip;
      const float big = std::numeric_limits<float>::max();
      float lo = -big, hi = big;
      if (info.opset < 11) {
        lo = n.attr_f("min", lo);
        hi = n.attr_f("max", hi);
      } else {
        for (size_t i = 1; i < 3; ++i) {
          if (!n.has_input(i)) continue;
          const Tensor* t = info.constant_input(i);
          if (!t || t->dtype() != DataType::kFloat32 || t->numel() != 1)
            return unsupported_error("Clip min/max must be constant float32 scalars");
          (i == 1 ? lo : hi) = t->data<float>()[0];
        }
      }
      if (!(lo <= hi)) return unsupported_error("Clip with min > max");
      alpha_ = std::max(lo, -big);
      beta_ = std::min(hi, big);
    } else {
      return unsupported_error("not an eltwise op");
    }
    in_l_ = node_layout(n, true, 0);
    out_l_ = node_layout(n, false, 0);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, max_inputs_));
    if (in[0]->dtype() != DataType::kFloat32) return error("input must be float32, got " + in[0]->desc());
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, in[0]->shape()};
    return Status::ok();
  }

  // Same layout on both sides: src and dst descriptors are equal, which oneDNN's eltwise takes in place.
  int inplace_input() const override { return in_l_ == out_l_ ? 0 : -1; }

  Result<std::shared_ptr<EltwiseEntry>> build(const Shape& xs) const {
    auto e = std::make_shared<EltwiseEntry>();
    const dnnl::memory::dims d = to_dims(xs);
    const dnnl::memory::desc md = layout_md(d, compute_layout({in_l_, out_l_}));
    e->src.init_in(user_md_for(d, in_l_, md), md);
    e->dst.init_out(md, user_md_for(d, out_l_, md));
    dnnl::eltwise_forward::desc desc(dnnl::prop_kind::forward_inference, alg_, md, alpha_, beta_);
    e->pd = dnnl::eltwise_forward::primitive_desc(desc, user_scratchpad_attr(), cpu_engine());
    e->prim = dnnl::eltwise_forward(e->pd);
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    RETURN_IF_ERROR(check_layout(label_, "X", x, in_l_));
    RETURN_IF_ERROR(check_layout(label_, "Y", y, out_l_));
    set_threads(ctx);
    try {
      PrimitiveCache<EltwiseEntry>::Key key = x.shape();
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const EltwiseEntry> e, cache_.get(key, [&]() { return build(x.shape()); }));
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
  dnnl::algorithm alg_ = dnnl::algorithm::eltwise_relu;
  float alpha_ = 0.f, beta_ = 0.f;
  size_t max_inputs_ = 1;
  Layout in_l_ = Layout::kPlain, out_l_ = Layout::kPlain;
  PrimitiveCache<EltwiseEntry> cache_;
};

// ------------------------------------------------------------ binary

struct BinaryEntry {
  dnnl::binary::primitive_desc pd;
  dnnl::binary prim;
  bool swap = false;  // src0 is node input 1
  // The sides as stored and as computed: the same unless oneDNN has only its reference
  // implementation for the stored mix of layouts (e.g. plain inputs, nhwc output), which is
  // 10-50x slower than reordering the odd sides into one layout around a jit binary.
  SideReorder src0, src1, dst;
};

// Pads a shape with leading 1s to rank r.
Shape pad_rank(const Shape& s, size_t r) {
  Shape o(r - s.size(), 1);
  o.insert(o.end(), s.begin(), s.end());
  return o;
}

// Statically: does input shape `a` (graph shape, -1 unknown) have the output's
// dims when broadcast against `b`? (Unknown dims must match unknown dims.)
bool covers_output(const Shape& a, const Shape& b) {
  if (a.size() < b.size()) return false;
  const Shape pb = pad_rank(b, a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == pb[i] || pb[i] == 1) continue;
    return false;
  }
  return true;
}

class DnnlBinaryKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(require_marker(info));
    const Node& n = info.node;
    if (n.inputs.size() != 2 || !n.has_input(0) || !n.has_input(1)) return error("expects 2 inputs");
    RETURN_IF_ERROR(require_f32_input(info, 0));
    RETURN_IF_ERROR(require_f32_input(info, 1));
    RETURN_IF_ERROR(only_first_output(info));
    const std::string& op = n.op_type;
    commutative_ = op == "Add" || op == "Mul";
    alg_ = op == "Add"   ? dnnl::algorithm::binary_add
           : op == "Mul" ? dnnl::algorithm::binary_mul
           : op == "Sub" ? dnnl::algorithm::binary_sub
                         : dnnl::algorithm::binary_div;
    const Value& a = info.graph.value(n.inputs[0]);
    const Value& b = info.graph.value(n.inputs[1]);
    if (!a.has_shape || !b.has_shape) return unsupported_error("input shapes are not known");
    if (a.shape.size() > 6 || b.shape.size() > 6) return unsupported_error("rank > 6");
    const bool c0 = covers_output(a.shape, b.shape), c1 = covers_output(b.shape, a.shape);
    if (!c0 && !(commutative_ && c1)) return unsupported_error("neither input has the output's shape");
    for (size_t i = 0; i < 2; ++i) in_l_[i] = node_layout(n, true, i);
    out_l_ = node_layout(n, false, 0);
    // In place (oneDNN binary: dst may be src0 when their descriptors are equal) on the input with
    // the output's shape and layout; the executor checks the sizes at run time.
    if (c0 && in_l_[0] == out_l_) inplace_ = 0;
    else if (commutative_ && c1 && in_l_[1] == out_l_) inplace_ = 1;
    // oneDNN 2.6 has only its reference binary for some broadcasts (a rank-4 divisor
    // [N, H, W, 1], LayerNorm decomposed by torch below opset 17): 30x slower than medq's ref
    // kernel, which then runs the node (and the layout pass, which probes with plain markers,
    // leaves its values plain). Blocked markers mean the pass already chose this kernel.
    if (in_l_[0] != Layout::kPlain || in_l_[1] != Layout::kPlain || out_l_ != Layout::kPlain) return Status::ok();
    Shape pa = a.shape, pb = b.shape;
    for (Shape* s : {&pa, &pb})
      for (int64_t& d : *s) d = d < 0 ? 1 : d;
    auto ys = broadcast_shapes(pa, pb);
    if (ys.is_ok()) {
      try {
        auto e = plan(pa, pb, ys.value());  // the primitive descriptor only: no code generated
        if (e.is_ok() && std::string(e.value()->pd.impl_info_str()).rfind("ref", 0) == 0)
          return unsupported_error("oneDNN has only its reference kernel for " + shape_str(a.shape) + " and " +
                                   shape_str(b.shape));
      } catch (const dnnl::error&) {
        return unsupported_error("oneDNN cannot broadcast " + shape_str(a.shape) + " and " + shape_str(b.shape));
      }
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    for (size_t i = 0; i < 2; ++i)
      if (in[i]->dtype() != DataType::kFloat32)
        return error("input " + std::to_string(i) + " must be float32, got " + in[i]->desc());
    auto s = broadcast_shapes(in[0]->shape(), in[1]->shape());
    if (!s.is_ok()) return error(s.status().message());
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, s.value()};
    return Status::ok();
  }

  int inplace_input() const override { return inplace_; }

  // The entry for these shapes without its primitive: descriptors, sides and reorders.
  Result<std::shared_ptr<BinaryEntry>> plan(const Shape& a, const Shape& b, const Shape& ys) const {
    auto e = std::make_shared<BinaryEntry>();
    e->swap = a != ys;
    if (e->swap && (!commutative_ || b != ys))
      return error("inputs " + shape_str(a) + " and " + shape_str(b) + ": no input has the output's shape");
    const Shape& s0 = e->swap ? b : a;
    const Shape s1 = pad_rank(e->swap ? a : b, ys.size());
    const Layout l0 = in_l_[e->swap ? 1 : 0], l1 = in_l_[e->swap ? 0 : 1];
    const Layout cl = compute_layout({out_l_, l0, l1});
    const dnnl::memory::dims d0 = to_dims(s0), d1 = to_dims(s1), dd = to_dims(ys);
    const dnnl::memory::desc c0 = layout_md(d0, cl), c1 = layout_md(d1, cl), cd = layout_md(dd, cl);
    const dnnl::memory::desc u0 = user_md_for(d0, l0, c0), u1 = user_md_for(d1, l1, c1), ud = user_md_for(dd, out_l_, cd);
    e->pd = dnnl::binary::primitive_desc(dnnl::binary::desc(alg_, u0, u1, ud), user_scratchpad_attr(), cpu_engine());
    auto is_ref = [](const dnnl::binary::primitive_desc& pd) {
      return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
    };
    e->src0.init_in(u0, u0);
    e->src1.init_in(u1, u1);
    e->dst.init_out(ud, ud);
    if (is_ref(e->pd) && !(u0 == c0 && u1 == c1 && ud == cd)) {
      // One layout for all sides, the odd ones reordered: src0's (the full-size input) when src1
      // is already stored in it (one reorder, of the output), else the first blocked one, else
      // plain (for broadcasts oneDNN has no blocked jit kernel for).
      for (Layout one : {same_bytes(d1, l1, l0) ? l0 : cl, Layout::kPlain}) {
        // A full-size src1 is reordered; a broadcast one keeps its bytes where they fit `one`.
        const dnnl::memory::desc o0 = layout_md(d0, one), od = layout_md(dd, one),
                                 o1 = d1 == d0 ? layout_md(d1, one) : user_md_for(d1, l1, layout_md(d1, one));
        dnnl::binary::primitive_desc pd(dnnl::binary::desc(alg_, o0, o1, od), user_scratchpad_attr(), cpu_engine());
        if (is_ref(pd)) continue;
        e->pd = pd;
        e->src0.init_in(u0, o0);
        e->src1.init_in(u1, o1);
        e->dst.init_out(od, ud);
        break;
      }
    }
    return e;
  }

  Result<std::shared_ptr<BinaryEntry>> build(const Shape& a, const Shape& b, const Shape& ys) const {
    ASSIGN_OR_RETURN(std::shared_ptr<BinaryEntry> e, plan(a, b, ys));
    e->prim = dnnl::binary(e->pd);
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    RETURN_IF_ERROR(check_layout(label_, "A", a, in_l_[0]));
    RETURN_IF_ERROR(check_layout(label_, "B", b, in_l_[1]));
    RETURN_IF_ERROR(check_layout(label_, "C", y, out_l_));
    set_threads(ctx);
    try {
      PrimitiveCache<BinaryEntry>::Key key = a.shape();
      key.push_back(-1);
      key.insert(key.end(), b.shape().begin(), b.shape().end());
      key.push_back(ctx.num_threads);
      const Shape ys = y.shape();
      ASSIGN_OR_RETURN(std::shared_ptr<const BinaryEntry> e,
                       cache_.get(key, [&]() { return build(a.shape(), b.shape(), ys); }));
      dnnl::stream& s = thread_stream();
      const Tensor& t0 = e->swap ? b : a;
      const Tensor& t1 = e->swap ? a : b;
      dnnl::memory m0 = e->src0.input(t0.raw(), Workspace::kSrc, s);
      dnnl::memory m1 = e->src1.input(t1.raw(), Workspace::kExtra, s);
      dnnl::memory md = e->dst.output(y.raw(), Workspace::kDst);
      e->prim.execute(s, {{DNNL_ARG_SRC_0, m0},
                          {DNNL_ARG_SRC_1, m1},
                          {DNNL_ARG_DST, md},
                          {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}});
      e->dst.finish(md, y.raw(), s);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  dnnl::algorithm alg_ = dnnl::algorithm::binary_add;
  bool commutative_ = false;
  int inplace_ = -1;
  Layout in_l_[2] = {Layout::kPlain, Layout::kPlain};
  Layout out_l_ = Layout::kPlain;
  PrimitiveCache<BinaryEntry> cache_;
};

// ------------------------------------------------------------ Concat

struct ConcatEntry {
  dnnl::concat::primitive_desc pd;
  dnnl::concat prim;
  std::vector<int> inputs;  // node inputs with elements, in order
  std::vector<dnnl::memory::desc> src;
  dnnl::memory::desc dst;
};

class DnnlConcatKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(require_marker(info));
    const Node& n = info.node;
    if (n.inputs.empty()) return error("expects at least 1 input");
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (!n.has_input(i)) return error("input " + std::to_string(i) + " is missing");
      RETURN_IF_ERROR(require_f32_input(info, i));
    }
    if (!n.has_attr("axis")) return error("missing 'axis' attribute");
    axis_ = n.attr_i("axis", 0);
    in_l_.resize(n.inputs.size());
    bool blocked = false;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      in_l_[i] = node_layout(n, true, i);
      blocked |= in_l_[i] != Layout::kPlain;
    }
    out_l_ = node_layout(n, false, 0);
    blocked |= out_l_ != Layout::kPlain;
    if (blocked) {
      const Value& v = info.graph.value(n.inputs[0]);
      if (!v.has_shape || v.shape.size() != 4 || (axis_ != 1 && axis_ != -3))
        return unsupported_error("blocked layouts need a 4-D concat on axis 1");
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, in_l_.size(), in_l_.size()));
    const int rank = in[0]->rank();
    if (rank < 1) return error("inputs must have rank >= 1");
    if (axis_ < -rank || axis_ >= rank)
      return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(rank));
    const int ax = static_cast<int>(axis_ < 0 ? axis_ + rank : axis_);
    Shape ys = in[0]->shape();
    ys[ax] = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const Tensor& t = *in[i];
      if (t.dtype() != DataType::kFloat32) return error("input " + std::to_string(i) + " must be float32");
      bool ok = t.rank() == rank;
      for (int d = 0; ok && d < rank; ++d)
        if (d != ax && t.dim(d) != in[0]->dim(d)) ok = false;
      if (!ok)
        return error("input " + std::to_string(i) + " " + shape_str(t.shape()) + " does not match input 0 " +
                     shape_str(in[0]->shape()) + " outside axis " + std::to_string(ax));
      ys[ax] += t.dim(ax);
    }
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    return Status::ok();
  }

  Result<std::shared_ptr<ConcatEntry>> build(const TensorList& in, const Shape& ys, int ax) const {
    auto e = std::make_shared<ConcatEntry>();
    std::vector<Layout> ls;
    for (size_t i = 0; i < in.size(); ++i) ls.push_back(in_l_[i]);
    Layout cl = out_l_;
    for (Layout l : ls)
      if (cl == Layout::kPlain) cl = l;
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i]->numel() == 0) continue;
      const dnnl::memory::dims d = to_dims(in[i]->shape());
      e->inputs.push_back(static_cast<int>(i));
      e->src.push_back(user_md_for(d, in_l_[i], layout_md(d, cl)));
    }
    const dnnl::memory::dims dd = to_dims(ys);
    e->dst = user_md_for(dd, out_l_, layout_md(dd, cl));
    e->pd = dnnl::concat::primitive_desc(e->dst, ax, e->src, cpu_engine(), user_scratchpad_attr());
    e->prim = dnnl::concat(e->pd);
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    for (size_t i = 0; i < in.size(); ++i) RETURN_IF_ERROR(check_layout(label_, "input", *in[i], in_l_[i]));
    RETURN_IF_ERROR(check_layout(label_, "output", y, out_l_));
    const int rank = y.rank();
    const int ax = static_cast<int>(axis_ < 0 ? axis_ + rank : axis_);
    set_threads(ctx);
    try {
      PrimitiveCache<ConcatEntry>::Key key;
      for (const Tensor* t : in) {
        key.insert(key.end(), t->shape().begin(), t->shape().end());
        key.push_back(-1);
      }
      key.push_back(ctx.num_threads);
      const Shape ys = y.shape();
      ASSIGN_OR_RETURN(std::shared_ptr<const ConcatEntry> e, cache_.get(key, [&]() { return build(in, ys, ax); }));
      dnnl::engine& eng = cpu_engine();
      dnnl::stream& s = thread_stream();
      std::unordered_map<int, dnnl::memory> args;
      for (size_t j = 0; j < e->inputs.size(); ++j)
        args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(j)] =
            dnnl::memory(e->src[j], eng, const_cast<void*>(in[e->inputs[j]]->raw()));
      args[DNNL_ARG_DST] = dnnl::memory(e->dst, eng, y.raw());
      args[DNNL_ARG_SCRATCHPAD] = scratchpad_memory(e->pd);
      e->prim.execute(s, args);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  int64_t axis_ = 0;
  std::vector<Layout> in_l_;
  Layout out_l_ = Layout::kPlain;
  PrimitiveCache<ConcatEntry> cache_;
};

// ------------------------------------------------------------ BatchNormalization

// BatchNormalization's scale, B, mean and var: constant float32 vectors of one length at node
// inputs first..first+3.
Status batchnorm_params(const KernelCreateInfo& info, size_t first, const Tensor* p[4]) {
  const std::string& label = info.node.label();
  for (size_t i = 0; i < 4; ++i) {
    p[i] = info.constant_input(first + i);
    if (!p[i] || p[i]->dtype() != DataType::kFloat32 || p[i]->rank() != 1)
      return unsupported(label + ": scale, B, mean and var must be constant float32 vectors");
  }
  for (size_t i = 1; i < 4; ++i)
    if (p[i]->dim(0) != p[0]->dim(0)) return invalid_argument(label + ": scale, B, mean and var must have the same length");
  return Status::ok();
}

struct BnEntry {
  dnnl::batch_normalization_forward::primitive_desc pd;
  dnnl::batch_normalization_forward prim;
  SideReorder src, dst;
};

// Also medq FusedBatchNorm (ops/fused.h): BatchNormalization + activation "Relu".
class DnnlBatchNormKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (n.domain == kMedqDomain) {
      const std::string act = n.attr_s("activation", "");
      if (act != "" && act != "Relu") return error("unsupported activation '" + act + "'");
      relu_ = act == "Relu";
    } else {
      RETURN_IF_ERROR(require_marker(info));
    }
    if (n.inputs.size() != 5) return error("expects 5 inputs");
    RETURN_IF_ERROR(require_f32_input(info, 0));
    RETURN_IF_ERROR(only_first_output(info));
    if (n.attr_i("training_mode", 0) != 0) return unsupported_error("training_mode");
    eps_ = n.attr_f("epsilon", 1e-5f);
    const Tensor* p[4];
    RETURN_IF_ERROR(batchnorm_params(info, 1, p));
    channels_ = p[0]->dim(0);
    scale_ = *p[0];
    shift_ = *p[1];
    mean_ = *p[2];
    var_ = *p[3];
    in_l_ = node_layout(n, true, 0);
    out_l_ = node_layout(n, false, 0);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 5, 5));
    const Tensor& x = *in[0];
    if (x.dtype() != DataType::kFloat32) return error("X must be float32, got " + x.desc());
    if (x.rank() < 2 || x.rank() > 5) return error("X must have rank 2 to 5, got " + shape_str(x.shape()));
    if (x.dim(1) != channels_)
      return error("X " + shape_str(x.shape()) + " has " + std::to_string(x.dim(1)) + " channels, parameters have " +
                   std::to_string(channels_));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, x.shape()};
    for (size_t i = 1; i < num_outputs_; ++i) out[i] = {DataType::kFloat32, {channels_}};
    return Status::ok();
  }

  Result<std::shared_ptr<BnEntry>> build(const Shape& xs) const {
    auto e = std::make_shared<BnEntry>();
    const dnnl::memory::dims d = to_dims(xs);
    const dnnl::memory::desc md = layout_md(d, compute_layout({in_l_, out_l_}));
    e->src.init_in(user_md_for(d, in_l_, md), md);
    e->dst.init_out(md, user_md_for(d, out_l_, md));
    auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
                 dnnl::normalization_flags::use_shift;
    if (relu_) flags |= dnnl::normalization_flags::fuse_norm_relu;
    dnnl::batch_normalization_forward::desc desc(dnnl::prop_kind::forward_inference, md, eps_, flags);
    e->pd = dnnl::batch_normalization_forward::primitive_desc(desc, user_scratchpad_attr(), cpu_engine());
    e->prim = dnnl::batch_normalization_forward(e->pd);
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    RETURN_IF_ERROR(check_layout(label_, "X", x, in_l_));
    RETURN_IF_ERROR(check_layout(label_, "Y", y, out_l_));
    set_threads(ctx);
    try {
      PrimitiveCache<BnEntry>::Key key = x.shape();
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const BnEntry> e, cache_.get(key, [&]() { return build(x.shape()); }));
      dnnl::engine& eng = cpu_engine();
      dnnl::stream& s = thread_stream();
      const dnnl::memory::desc vec = plain_md({channels_});
      dnnl::memory src = e->src.input(x.raw(), Workspace::kSrc, s);
      dnnl::memory dst = e->dst.output(y.raw(), Workspace::kDst);
      auto param = [&](const Tensor& t) { return dnnl::memory(vec, eng, const_cast<void*>(t.raw())); };
      e->prim.execute(s, {{DNNL_ARG_SRC, src},
                          {DNNL_ARG_DST, dst},
                          {DNNL_ARG_MEAN, param(mean_)},
                          {DNNL_ARG_VARIANCE, param(var_)},
                          {DNNL_ARG_SCALE, param(scale_)},
                          {DNNL_ARG_SHIFT, param(shift_)},
                          {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}});
      e->dst.finish(dst, y.raw(), s);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  float eps_ = 1e-5f;
  bool relu_ = false;
  int64_t channels_ = 0;
  Tensor scale_, shift_, mean_, var_;
  Layout in_l_ = Layout::kPlain, out_l_ = Layout::kPlain;
  PrimitiveCache<BnEntry> cache_;
};

// ------------------------------------------------------------ ConcatBatchNorm

// nhwc: for `pixels` pixels, y[p * y_stride + c] = act(x[p * n + c] * a[c] + b[c]), c < n.
__attribute__((target_clones("avx512f", "avx2", "default")))
void affine_rows(const float* __restrict x, const float* __restrict a, const float* __restrict b,
                 float* __restrict y, int64_t n, int64_t y_stride, int64_t pixels, bool relu) {
  for (int64_t p = 0; p < pixels; ++p, x += n, y += y_stride) {
    if (relu) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i] * a[i] + b[i], 0.f);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a[i] + b[i];
    }
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void affine_plane(const float* __restrict x, float a, float b, float* __restrict y, int64_t n, bool relu) {
  if (relu) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i] * a + b, 0.f);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a + b;
  }
}

// medq ConcatBatchNorm (ops/fused.h): Concat on the channel axis -> BatchNormalization (inference)
// -> optional Relu, in one pass that never writes the concatenation (DenseNet's dense layers
// concatenate every earlier feature map and normalize the result). Written here rather than with
// oneDNN primitives (concat + batch_normalization is exactly the two passes this saves); it takes
// part in the blocked (nhwc) chains of the layouts pass like the oneDNN kernels around it.
class ConcatBatchNormKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const std::string act = n.attr_s("activation", "");
    if (act != "" && act != "Relu") return error("unsupported activation '" + act + "'");
    relu_ = act == "Relu";
    if (n.inputs.size() < 5) return error("expects scale, B, mean, var and at least one input");
    RETURN_IF_ERROR(only_first_output(info));
    const float eps = n.attr_f("epsilon", 1e-5f);
    const Tensor* p[4];
    RETURN_IF_ERROR(batchnorm_params(info, 0, p));
    channels_ = p[0]->dim(0);
    a_.resize(channels_);
    b_.resize(channels_);
    for (int64_t c = 0; c < channels_; ++c) {
      const float a = p[0]->data<float>()[c] / std::sqrt(p[3]->data<float>()[c] + eps);
      a_[c] = a;
      b_[c] = p[1]->data<float>()[c] - p[2]->data<float>()[c] * a;
    }
    for (size_t i = 4; i < n.inputs.size(); ++i) {
      if (!n.has_input(i)) return error("input " + std::to_string(i) + " is missing");
      RETURN_IF_ERROR(require_f32_input(info, i));
      in_l_.push_back(node_layout(n, true, i));
    }
    out_l_ = node_layout(n, false, 0);
    for (Layout l : in_l_)
      if (channel_block(l)) return unsupported_error(std::string(layout_name(l)) + " inputs");
    if (channel_block(out_l_)) return unsupported_error(std::string(layout_name(out_l_)) + " output");
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 4 + in_l_.size(), 4 + in_l_.size()));
    const Tensor& x0 = *in[4];
    int64_t c = 0;
    for (size_t i = 4; i < in.size(); ++i) {
      const Tensor& x = *in[i];
      if (x.dtype() != DataType::kFloat32) return error("input " + std::to_string(i) + " must be float32, got " + x.desc());
      if (x.rank() != 4 || x.dim(0) != x0.dim(0) || x.dim(2) != x0.dim(2) || x.dim(3) != x0.dim(3))
        return error("input " + std::to_string(i) + " " + shape_str(x.shape()) + " does not match " +
                     shape_str(x0.shape()) + " outside axis 1");
      c += x.dim(1);
    }
    if (c != channels_)
      return error("inputs have " + std::to_string(c) + " channels in all, parameters have " + std::to_string(channels_));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, {x0.dim(0), c, x0.dim(2), x0.dim(3)}};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    for (size_t i = 4; i < in.size(); ++i) RETURN_IF_ERROR(check_layout(label_, "input", *in[i], in_l_[i - 4]));
    RETURN_IF_ERROR(check_layout(label_, "Y", y, out_l_));
    const int64_t N = y.dim(0), C = y.dim(1), HW = y.dim(2) * y.dim(3);
    const size_t k = in_l_.size();
    std::vector<int64_t> off(k + 1, 0);
    for (size_t i = 0; i < k; ++i) off[i + 1] = off[i] + in[4 + i]->dim(1);
    float* yd = y.data<float>();
    const float* a = a_.data();
    const float* b = b_.data();
    const bool nhwc_out = out_l_ == Layout::kNhwc;
    bool same = true;
    for (Layout l : in_l_) same &= (l == Layout::kNhwc) == nhwc_out;
    if (same && nhwc_out) {
      // Pixel blocks of ~32 KiB of output, each done input by input.
      const int64_t P = N * HW, block = std::max<int64_t>(1, 8192 / C), nblocks = (P + block - 1) / block;
      ref::parallel_range(nblocks, ctx.num_threads, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t bi = b0; bi < b1; ++bi) {
          const int64_t p0 = bi * block, np = std::min(block, P - p0);
          for (size_t i = 0; i < k; ++i) {
            const int64_t ci = off[i + 1] - off[i];
            affine_rows(in[4 + i]->data<float>() + p0 * ci, a + off[i], b + off[i], yd + p0 * C + off[i], ci, C, np,
                        relu_);
          }
        }
      });
    } else if (same) {
      ref::parallel_range(N * C, ctx.num_threads, 1, [&](int64_t nc0, int64_t nc1) {
        for (int64_t nc = nc0; nc < nc1; ++nc) {
          const int64_t n = nc / C, c = nc % C;
          size_t i = 0;
          while (off[i + 1] <= c) ++i;
          const int64_t ci = off[i + 1] - off[i];
          affine_plane(in[4 + i]->data<float>() + (n * ci + c - off[i]) * HW, a[c], b[c], yd + nc * HW, HW, relu_);
        }
      });
    } else {  // mixed layouts (not planned by the layouts pass, kept correct): element by element
      for (size_t i = 0; i < k; ++i) {
        const float* x = in[4 + i]->data<float>();
        const int64_t ci = off[i + 1] - off[i];
        const bool nhwc_in = in_l_[i] == Layout::kNhwc;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < ci; ++c)
            for (int64_t p = 0; p < HW; ++p) {
              const float v = x[nhwc_in ? (n * HW + p) * ci + c : (n * ci + c) * HW + p] * a[off[i] + c] + b[off[i] + c];
              const int64_t yc = off[i] + c;
              yd[nhwc_out ? (n * HW + p) * C + yc : (n * C + yc) * HW + p] = relu_ ? std::max(v, 0.f) : v;
            }
      }
    }
    return Status::ok();
  }

 private:
  bool relu_ = false;
  int64_t channels_ = 0;
  std::vector<float> a_, b_;  // y = x * a + b per output channel
  std::vector<Layout> in_l_;  // data inputs 4..
  Layout out_l_ = Layout::kPlain;
};

// ------------------------------------------------------------ Transpose

// Only layout-assigned nodes, float32, any rank with every side plain; one side may be stored
// blocked (dnnl_layout.cc supports_blocked_io): input 0 when perm is (0, 2, 3, 1) (an activation
// leaving a convolution chain into NHWC ops, as tf2onnx/Keras exports do around every pooling
// and at the head) and output 0 when perm is (0, 3, 1, 2) (NHWC data entering a chain). Stored
// nhwc, those bytes already are in the other side's order: the node is a copy, or nothing at all
// when the planner gives the output the input's buffer. Otherwise one oneDNN reorder, expressed in
// the frame of the blocked side (the plain side as a strided descriptor).
struct TransposeEntry {
  bool copy = false;
  dnnl::reorder::primitive_desc pd;
  dnnl::reorder prim;
};

bool is_perm(const std::vector<int64_t>& p, std::initializer_list<int64_t> want) {
  return p.size() == want.size() && std::equal(p.begin(), p.end(), want.begin());
}

// The Transpose's permutation (default: reversed axes of a rank-`rank` input).
std::vector<int64_t> transpose_perm(const Node& n, size_t rank) {
  std::vector<int64_t> p = n.attr_ints("perm");
  if (p.empty())
    for (size_t i = 0; i < rank; ++i) p.push_back(static_cast<int64_t>(rank - 1 - i));
  return p;
}

class DnnlTransposeKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(require_marker(info));
    RETURN_IF_ERROR(require_f32_input(info, 0));
    const Value& xv = info.graph.value(info.node.inputs[0]);
    if (!xv.has_shape) return unsupported_error("input rank unknown");
    perm_ = transpose_perm(info.node, xv.shape.size());
    if (perm_.size() != xv.shape.size() || perm_.empty() || perm_.size() > 6) return unsupported_error("perm / rank");
    std::vector<int64_t> seen(perm_.size(), 0);
    for (int64_t p : perm_) {
      if (p < 0 || p >= static_cast<int64_t>(perm_.size()) || seen[p]++) return error("invalid perm");
    }
    in_l_ = node_layout(info.node, true, 0);
    out_l_ = node_layout(info.node, false, 0);
    if (in_l_ != Layout::kPlain && out_l_ != Layout::kPlain) return unsupported_error("both sides blocked");
    if (in_l_ != Layout::kPlain && !is_perm(perm_, {0, 2, 3, 1})) return unsupported_error("blocked input, perm");
    if (out_l_ != Layout::kPlain && !is_perm(perm_, {0, 3, 1, 2})) return unsupported_error("blocked output, perm");
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    if (in[0]->dtype() != DataType::kFloat32) return error("input must be float32, got " + in[0]->desc());
    if (in[0]->rank() != static_cast<int>(perm_.size())) return error("rank differs from the graph's");
    Shape ys;
    for (int64_t p : perm_) ys.push_back(in[0]->dim(static_cast<int>(p)));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    return Status::ok();
  }

  // nhwc on the blocked side: the bytes do not move.
  int inplace_input() const override { return static_copy() ? 0 : -1; }

  Result<std::shared_ptr<TransposeEntry>> build(const Shape& xs) const {
    auto e = std::make_shared<TransposeEntry>();
    const size_t r = perm_.size();
    dnnl::memory::dims xd = to_dims(xs), yd(r);
    for (size_t i = 0; i < r; ++i) yd[i] = xs[static_cast<size_t>(perm_[i])];
    auto plain_strides = [](const dnnl::memory::dims& d) {
      dnnl::memory::dims s(d.size(), 1);
      for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * d[i + 1];
      return s;
    };
    dnnl::memory::desc src, dst;
    if (in_l_ != Layout::kPlain) {  // frame: the input's dims; the plain output as strides over them
      const dnnl::memory::dims ys = plain_strides(yd);
      dnnl::memory::dims st(r);
      for (size_t i = 0; i < r; ++i) st[static_cast<size_t>(perm_[i])] = ys[i];
      src = layout_md(xd, in_l_);
      dst = dnnl::memory::desc(xd, dnnl::memory::data_type::f32, st);
    } else {  // frame: the output's dims; the plain input as strides over them
      const dnnl::memory::dims xs_st = plain_strides(xd);
      dnnl::memory::dims st(r);
      for (size_t i = 0; i < r; ++i) st[i] = xs_st[static_cast<size_t>(perm_[i])];
      src = dnnl::memory::desc(yd, dnnl::memory::data_type::f32, st);
      dst = layout_md(yd, out_l_);
    }
    e->copy = src == dst;
    if (!e->copy) {
      e->pd = make_reorder_pd(src, dst);
      e->prim = dnnl::reorder(e->pd);
    }
    return e;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    RETURN_IF_ERROR(check_layout(label_, "X", x, in_l_));
    RETURN_IF_ERROR(check_layout(label_, "Y", y, out_l_));
    set_threads(ctx);
    try {
      PrimitiveCache<TransposeEntry>::Key key = x.shape();
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const TransposeEntry> e, cache_.get(key, [&]() { return build(x.shape()); }));
      if (e->copy) {
        if (y.raw() != x.raw()) std::memcpy(y.raw(), x.raw(), x.nbytes());
        return Status::ok();
      }
      dnnl::stream& s = thread_stream();
      dnnl::memory src(e->pd.src_desc(), cpu_engine(), const_cast<void*>(x.raw()));
      dnnl::memory dst(e->pd.dst_desc(), cpu_engine(), y.raw());
      run_reorder(e->prim, e->pd, s, src, dst);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  bool static_copy() const {
    return (in_l_ == Layout::kNhwc && is_perm(perm_, {0, 2, 3, 1})) ||
           (out_l_ == Layout::kNhwc && is_perm(perm_, {0, 3, 1, 2}));
  }

  std::vector<int64_t> perm_;
  Layout in_l_ = Layout::kPlain, out_l_ = Layout::kPlain;
  PrimitiveCache<TransposeEntry> cache_;
};

}  // namespace

void register_dnnl_layout_ops(KernelRegistry& r, int priority) {
  r.add("", "Transpose", "dnnl", priority, make_factory<DnnlTransposeKernel>());
  for (const char* op : {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "Clip"})
    r.add("", op, "dnnl", priority, make_factory<DnnlEltwiseKernel>());
  for (const char* op : {"Add", "Mul", "Sub", "Div"}) r.add("", op, "dnnl", priority, make_factory<DnnlBinaryKernel>());
  r.add("", "Concat", "dnnl", priority, make_factory<DnnlConcatKernel>());
  r.add("", "BatchNormalization", "dnnl", priority, make_factory<DnnlBatchNormKernel>());
  r.add(kMedqDomain, "FusedBatchNorm", "dnnl", priority, make_factory<DnnlBatchNormKernel>());
  r.add(kMedqDomain, "ConcatBatchNorm", "dnnl", priority, make_factory<ConcatBatchNormKernel>());
}

}  // namespace dnnl_k
}  // namespace medq
