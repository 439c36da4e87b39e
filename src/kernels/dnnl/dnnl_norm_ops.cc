// oneDNN Softmax / LogSoftmax and LayerNormalization (fp32, plain layout).
//
// Softmax / LogSoftmax: the input is viewed as
// [outer, R, inner] with R the softmax axis (opset >= 13) or, below opset 13,
// as the 2-D [prod(dims[:axis]), prod(dims[axis:])] the older operator
// coerces to. oneDNN's jit kernels vectorize exp and the reductions (vit_b_16's
// attention: 12 x 197 rows of 197 per layer, 8x faster than the reference kernel).
//
// LayerNormalization: X as [rows, prod(dims[axis:])], constant Scale and B with that many
// elements; only the first output (Mean / InvStdDev outputs are ref's). Also runs the
// LayerNorms that passes/fuse_layernorm.cc recovers from opset < 17 exports.
#include <string>
#include <vector>

#include "kernels/dnnl/dnnl_common.h"

namespace medq {
namespace dnnl_k {
namespace {

struct SoftmaxEntry {
  dnnl::primitive_desc pd;  // softmax_forward's or logsoftmax_forward's
  dnnl::primitive prim;
  dnnl::memory::desc md;
};

class DnnlSoftmaxKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (n.inputs.size() != 1 || !n.has_input(0)) return error("expects 1 input");
    const DataType dt = graph_dtype(info, 0);
    if (dt != DataType::kUndefined && dt != DataType::kFloat32) return unsupported_error("input is not float32");
    log_ = n.op_type == "LogSoftmax";
    legacy_ = info.opset < 13;
    axis_ = n.attr_i("axis", legacy_ ? 1 : -1);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    if (in[0]->dtype() != DataType::kFloat32) return unsupported_error("input must be float32");
    RETURN_IF_ERROR(split(in[0]->shape()).status());
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, in[0]->shape()};
    return Status::ok();
  }

  int inplace_input() const override { return 0; }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    ASSIGN_OR_RETURN(dnnl::memory::dims d, split(x.shape()));
    set_threads(ctx);
    try {
      PrimitiveCache<SoftmaxEntry>::Key key = d;
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const SoftmaxEntry> e, cache_.get(key, [&]() { return build(d); }));
      dnnl::engine& eng = cpu_engine();
      dnnl::stream& s = thread_stream();
      e->prim.execute(s, {{DNNL_ARG_SRC, dnnl::memory(e->md, eng, const_cast<void*>(x.raw()))},
                          {DNNL_ARG_DST, dnnl::memory(e->md, eng, y.raw())},
                          {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}});
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  // [outer, R, inner] for the axis (legacy: [outer, R] over the trailing dims).
  Result<dnnl::memory::dims> split(const Shape& s) const {
    const int64_t r = static_cast<int64_t>(s.size());
    if (r == 0) return dnnl::memory::dims{1, 1};
    if (axis_ < -r || axis_ >= r)
      return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    const int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    int64_t outer = 1, mid = 1, inner = 1;
    for (int64_t i = 0; i < r; ++i) {
      if (i < axis) outer *= s[i];
      else if (i == axis || legacy_) mid *= s[i];
      else inner *= s[i];
    }
    if (legacy_ || inner == 1) return dnnl::memory::dims{outer, mid};
    return dnnl::memory::dims{outer, mid, inner};
  }

  Result<std::shared_ptr<SoftmaxEntry>> build(const dnnl::memory::dims& d) const {
    auto e = std::make_shared<SoftmaxEntry>();
    e->md = plain_md(d);
    const dnnl::primitive_attr attr = user_scratchpad_attr();
    if (log_) {
      dnnl::logsoftmax_forward::primitive_desc pd(
          dnnl::logsoftmax_forward::desc(dnnl::prop_kind::forward_inference, e->md, 1), attr, cpu_engine());
      e->pd = pd;
      e->prim = dnnl::logsoftmax_forward(pd);
    } else {
      dnnl::softmax_forward::primitive_desc pd(
          dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, e->md, 1), attr, cpu_engine());
      e->pd = pd;
      e->prim = dnnl::softmax_forward(pd);
    }
    return e;
  }

  bool log_ = false, legacy_ = false;
  int64_t axis_ = -1;
  PrimitiveCache<SoftmaxEntry> cache_;
};

struct LayerNormEntry {
  dnnl::layer_normalization_forward::primitive_desc pd;
  dnnl::layer_normalization_forward prim;
  dnnl::memory::desc md;
};

class DnnlLayerNormKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (n.inputs.size() < 2 || n.inputs.size() > 3 || !n.has_input(0) || !n.has_input(1))
      return error("expects X, Scale and an optional B");
    for (size_t i = 1; i < n.outputs.size(); ++i)
      if (n.outputs[i] != kNoValue && (!info.graph.value(n.outputs[i]).consumers.empty() ||
                                       info.graph.is_graph_output(n.outputs[i])))
        return unsupported_error("Mean / InvStdDev outputs are used");
    const DataType dt = graph_dtype(info, 0);
    if (dt != DataType::kFloat32) return unsupported_error("X is not float32");
    const Tensor* scale = info.constant_input(1);
    const Tensor* bias = n.has_input(2) ? info.constant_input(2) : nullptr;
    if (!scale || scale->dtype() != DataType::kFloat32 || (n.has_input(2) && (!bias || bias->dtype() != DataType::kFloat32)))
      return unsupported_error("Scale and B must be constant float32");
    if (bias && bias->numel() != scale->numel()) return unsupported_error("Scale and B sizes differ");
    scale_ = *scale;
    if (bias) bias_ = *bias;
    axis_ = n.attr_i("axis", -1);
    epsilon_ = n.attr_f("epsilon", 1e-5f);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    if (in[0]->dtype() != DataType::kFloat32) return unsupported_error("X must be float32");
    RETURN_IF_ERROR(split(in[0]->shape()).status());
    out.resize(1);
    out[0] = {DataType::kFloat32, in[0]->shape()};
    return Status::ok();
  }

  int inplace_input() const override { return 0; }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    ASSIGN_OR_RETURN(dnnl::memory::dims d, split(x.shape()));
    set_threads(ctx);
    try {
      PrimitiveCache<LayerNormEntry>::Key key = d;
      key.push_back(ctx.num_threads);
      ASSIGN_OR_RETURN(std::shared_ptr<const LayerNormEntry> e, cache_.get(key, [&]() { return build(d); }));
      dnnl::engine& eng = cpu_engine();
      dnnl::stream& s = thread_stream();
      const dnnl::memory::desc vec = plain_md({d[1]});
      std::unordered_map<int, dnnl::memory> args = {
          {DNNL_ARG_SRC, dnnl::memory(e->md, eng, const_cast<void*>(x.raw()))},
          {DNNL_ARG_DST, dnnl::memory(e->md, eng, y.raw())},
          {DNNL_ARG_SCALE, dnnl::memory(vec, eng, const_cast<void*>(scale_.raw()))},
          {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e->pd)}};
      if (bias_.defined()) args[DNNL_ARG_SHIFT] = dnnl::memory(vec, eng, const_cast<void*>(bias_.raw()));
      e->prim.execute(s, args);
      s.wait();
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  // [rows, prod(dims[axis:])]; the normalized size must match Scale's.
  Result<dnnl::memory::dims> split(const Shape& s) const {
    const int64_t r = static_cast<int64_t>(s.size());
    if (r == 0 || axis_ < -r || axis_ >= r)
      return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    const int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    int64_t rows = 1, inner = 1;
    for (int64_t i = 0; i < r; ++i) (i < axis ? rows : inner) *= s[i];
    if (inner != scale_.numel())
      return unsupported_error("Scale has " + std::to_string(scale_.numel()) + " elements, the normalized shape " +
                               std::to_string(inner));
    return dnnl::memory::dims{rows, inner};
  }

  Result<std::shared_ptr<LayerNormEntry>> build(const dnnl::memory::dims& d) const {
    auto e = std::make_shared<LayerNormEntry>();
    e->md = plain_md(d);
    auto flags = dnnl::normalization_flags::use_scale;
    if (bias_.defined()) flags = flags | dnnl::normalization_flags::use_shift;
    e->pd = dnnl::layer_normalization_forward::primitive_desc(
        dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_inference, e->md, epsilon_, flags),
        user_scratchpad_attr(), cpu_engine());
    e->prim = dnnl::layer_normalization_forward(e->pd);
    return e;
  }

  Tensor scale_, bias_;
  int64_t axis_ = -1;
  float epsilon_ = 1e-5f;
  PrimitiveCache<LayerNormEntry> cache_;
};

}  // namespace

void register_dnnl_norm_ops(KernelRegistry& r, int priority) {
  r.add("", "Softmax", "dnnl", priority, make_factory<DnnlSoftmaxKernel>());
  r.add("", "LogSoftmax", "dnnl", priority, make_factory<DnnlSoftmaxKernel>());
  r.add("", "LayerNormalization", "dnnl", priority, make_factory<DnnlLayerNormKernel>());
}

}  // namespace dnnl_k
}  // namespace medq
