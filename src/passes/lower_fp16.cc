// fp16 legalization: runs fp16 models (medq convert --fp16, or any model with
// float16 weights feeding Conv/Gemm/MatMul) on medq's fp32 kernels.
//
// Why fp32 compute: the x86 CPUs medq targets have no fp16 arithmetic short of
// AVX512-FP16 (Sapphire Rapids+), and oneDNN 2.6 has no f16 convolution on
// anything older. ONNX Runtime's CPU provider does the same thing by inserting
// Cast nodes around every op that lacks an fp16 kernel. The fp16 file keeps its
// purpose (half the download/storage, GPU runtimes such as TensorRT run it in
// fp16); on CPU the weights are widened once at session creation.
//
// The rewrite: every float16 constant becomes float32 (exact), every internal
// float16 value is re-typed float32, Cast(to=FLOAT16) becomes Cast(to=FLOAT)
// (and Identity when its input is already float32), Constant/ConstantOfShape
// fp16 tensors are widened. float16 graph inputs and outputs keep their type:
// a Cast is inserted at the boundary so callers see the model's declared
// signature. Numerically this is the fp32 model with fp16-rounded weights; the
// intermediate activations are not rounded to fp16 (more accurate, not less).
#include "passes/pass.h"

namespace medq {
namespace {

bool is_f16(const Value& v) { return v.dtype == DataType::kFloat16; }

// True when an fp16 value feeds an op that only has fp32 kernels in medq.
bool needs_lowering(const Graph& g) {
  static const char* kCompute[] = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
                                   "InstanceNormalization", "LayerNormalization", "AveragePool",
                                   "MaxPool", "GlobalAveragePool"};
  for (const auto& n : g.nodes) {
    if (n.dead || !n.domain.empty()) continue;
    bool compute = false;
    for (const char* op : kCompute) compute |= n.op_type == op;
    if (!compute) continue;
    for (uint32_t in : n.inputs)
      if (in != kNoValue && is_f16(g.value(in))) return true;
  }
  return false;
}

Node make_cast(Graph& g, uint32_t in, uint32_t out, DataType to, const std::string& base) {
  Node c;
  c.name = g.unique_name(base + "/medq_fp16_cast");
  c.op_type = "Cast";
  c.inputs = {in};
  c.outputs = {out};
  c.set_attr(Attribute::make_int("to", static_cast<int64_t>(to)));
  return c;
}

class LowerFp16Pass : public Pass {
 public:
  const char* name() const override { return "fp16"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    if (!needs_lowering(g)) return Status::ok();
    changed = true;
    int widened = 0;
    // 1. Boundary values keep their declared type; internal copies become float32.
    std::vector<Node> boundary;
    // A new float32 value shaped like `like` (taken by value: add_value may move g.values).
    auto f32_twin = [&g](Value like) {
      uint32_t f32 = g.add_value(g.unique_name(like.name + "/f32"));
      g.value(f32).dtype = DataType::kFloat32;
      g.value(f32).has_shape = like.has_shape;
      g.value(f32).shape = like.shape;
      g.value(f32).dim_params = like.dim_params;
      return f32;
    };
    for (uint32_t in : std::vector<uint32_t>(g.inputs)) {
      if (!is_f16(g.value(in))) continue;
      Value copy = g.value(in);
      uint32_t f32 = f32_twin(copy);
      g.replace_all_uses(in, f32);
      boundary.push_back(make_cast(g, in, f32, DataType::kFloat32, copy.name));
    }
    for (uint32_t& out : g.outputs) {
      if (!is_f16(g.value(out))) continue;
      uint32_t orig = out;
      // A constant or a graph input returned as an output keeps its fp16 storage as it is.
      if (g.value(orig).is_constant() || g.is_graph_input(orig)) continue;
      Value copy = g.value(orig);
      uint32_t f32 = f32_twin(copy);
      // Producer (or a passthrough from an input/constant) now writes f32; the Cast writes the output.
      for (auto& n : g.nodes) {
        if (n.dead) continue;
        for (auto& o : n.outputs) if (o == orig) o = f32;
        for (auto& i : n.inputs) if (i == orig) i = f32;
      }
      boundary.push_back(make_cast(g, f32, orig, DataType::kFloat16, copy.name));
    }
    std::vector<bool> keep16(g.values.size(), false);
    for (uint32_t v : g.inputs) keep16[v] = true;
    for (uint32_t v : g.outputs) keep16[v] = true;
    // 2. Internal values and constants.
    for (uint32_t v = 0; v < g.values.size(); ++v) {
      Value& val = g.values[v];
      if (!is_f16(val) || keep16[v]) continue;
      if (val.is_constant()) {
        val.initializer = val.initializer.cast(DataType::kFloat32);
        ++widened;
      }
      val.dtype = DataType::kFloat32;
    }
    // 3. Attributes that produce fp16.
    for (auto& n : g.nodes) {
      if (n.dead || !n.domain.empty()) continue;
      if (n.op_type == "Cast") {
        Attribute* to = n.attr("to");
        if (to && to->i == static_cast<int64_t>(DataType::kFloat16) && !keep16[n.outputs[0]]) {
          to->i = static_cast<int64_t>(DataType::kFloat32);
          if (g.value(n.inputs[0]).dtype == DataType::kFloat32) {
            n.op_type = "Identity";
            n.remove_attr("to");
          }
        } else if (to && to->i == static_cast<int64_t>(DataType::kFloat32) &&
                   g.value(n.inputs[0]).dtype == DataType::kFloat32) {
          n.op_type = "Identity";
          n.remove_attr("to");
        }
      }
      for (auto& a : n.attrs)
        if (a.type == Attribute::Type::kTensor && a.t.defined() && a.t.dtype() == DataType::kFloat16 &&
            (n.op_type == "Constant" || n.op_type == "ConstantOfShape"))
          a.t = a.t.cast(DataType::kFloat32);
    }
    for (auto& c : boundary) g.add_node(std::move(c));
    ctx.log.push_back("fp16 lowered to fp32 compute: " + std::to_string(widened) + " constants widened");
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_lower_fp16_pass() { return std::make_unique<LowerFp16Pass>(); }

}  // namespace medq
