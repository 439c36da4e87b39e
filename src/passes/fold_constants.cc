// Constant folding: a node whose inputs are all constants is executed once with
// its reference kernel and its outputs become initializers. Shape/Size nodes fold
// too when every graph input shape is static (so Shape->Gather->...->Reshape
// chains become constant reshapes); with a dynamic batch they stay.
#include "ops/kernel.h"
#include "passes/pass.h"

namespace medq {
namespace {

constexpr int64_t kMaxFoldedBytes = 64 << 20;

// True when every graph input has a fully static shape: then the shapes that ONNX shape
// inference recorded on intermediate values are exact (validate_inputs enforces the
// input shapes) and Shape/Size of them can be folded. With a dynamic dim they are not.
bool all_inputs_static(const Graph& g) {
  for (uint32_t i : g.inputs) {
    const Value& v = g.value(i);
    if (!v.has_shape) return false;
    for (int64_t d : v.shape)
      if (d < 0) return false;
  }
  return true;
}

class FoldConstantsPass : public Pass {
 public:
  explicit FoldConstantsPass(bool keep_qdq) : keep_qdq_(keep_qdq) {}
  const char* name() const override { return keep_qdq_ ? "prefold" : "fold"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    const bool static_graph = all_inputs_static(g);
    for (auto& n : g.nodes) {
      if (n.dead) continue;
      if (keep_qdq_ && n.domain.empty() && (n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")) continue;
      // Shape/Size of a value whose shape is statically known only need the shape: a
      // data-less placeholder tensor stands in for the input.
      Tensor shape_only;
      bool shape_fold = false;
      if (static_graph && n.domain.empty() && (n.op_type == "Shape" || n.op_type == "Size") && n.inputs.size() == 1 &&
          n.inputs[0] != kNoValue && !g.value(n.inputs[0]).is_constant()) {
        const Value& v = g.value(n.inputs[0]);
        bool known = v.has_shape && dtype_supported(v.dtype);
        for (int64_t d : v.shape) known &= d >= 0;
        if (!known) continue;
        shape_only = Tensor::wrap(v.dtype, v.shape, nullptr);
        shape_fold = true;
      }
      bool all_const = true;
      for (uint32_t in : n.inputs)
        if (in != kNoValue && !g.value(in).is_constant()) all_const = false;
      if (!all_const && !shape_fold) continue;
      bool any_output_is_graph_output = false;
      for (uint32_t o : n.outputs) if (o != kNoValue && g.is_graph_output(o)) any_output_is_graph_output = true;
      if (any_output_is_graph_output) continue;
      auto k = KernelRegistry::global().create(KernelCreateInfo{n, g, ctx.opset}, {"ref"});
      if (!k.is_ok()) continue;  // reported when the session creates kernels
      TensorList in;
      for (uint32_t i : n.inputs) in.push_back(i == kNoValue ? nullptr : &g.value(i).initializer);
      if (shape_fold) in[0] = &shape_only;
      std::vector<TensorDesc> descs(n.outputs.size());
      Status st = k.value()->infer(in, descs);
      if (!st.is_ok()) return st;
      int64_t bytes = 0;
      for (const auto& d : descs) bytes += shape_numel(d.shape) * static_cast<int64_t>(dtype_size(d.dtype));
      if (bytes > kMaxFoldedBytes) continue;
      std::vector<Tensor> outs;
      std::vector<Tensor*> outp;
      outs.reserve(descs.size());
      for (const auto& d : descs) outs.emplace_back(d.dtype, d.shape);
      for (auto& t : outs) outp.push_back(&t);
      RunContext rc;
      int view = k.value()->view_of_input();
      if (view >= 0 && in[view]) {
        outs[0] = in[view]->reshaped(descs[0].shape);
      } else {
        RETURN_IF_ERROR(k.value()->run(in, outp, rc));
      }
      for (size_t i = 0; i < n.outputs.size(); ++i) {
        uint32_t o = n.outputs[i];
        if (o == kNoValue) continue;
        Value& v = g.value(o);
        v.initializer = outs[i];
        v.dtype = outs[i].dtype();
        v.has_shape = true;
        v.shape = outs[i].shape();
      }
      n.dead = true;
      changed = true;
      ctx.log.push_back("folded " + n.label());
    }
    return Status::ok();
  }

 private:
  bool keep_qdq_;
};

}  // namespace

std::unique_ptr<Pass> make_fold_constants_pass() { return std::make_unique<FoldConstantsPass>(false); }
std::unique_ptr<Pass> make_prefold_constants_pass() { return std::make_unique<FoldConstantsPass>(true); }

}  // namespace medq
