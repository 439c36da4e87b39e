// Conv fusion into medq::FusedConv (see ops/fused.h):
//   Conv -> Add(other)            => FusedConv(sum = other)   (residual branch, same shape)
//   (Fused)Conv -> activation     => FusedConv(activation)
//   (Fused)Conv -> Sigmoid, Mul(conv, sigmoid) => FusedConv(activation = SiLU)
//   (Fused)Conv -> HardSigmoid(1/6, 0.5), Mul(conv, hardsigmoid) => FusedConv(activation = HardSwish)
// Applies only when the conv output has a single use (two for the SiLU pattern).
#include <cmath>

#include "ops/fused.h"
#include "passes/pass.h"

namespace medq {
namespace {

bool is_conv_like(const Node& n) {
  return (n.op_type == "Conv" && n.domain.empty()) || (n.op_type == "FusedConv" && n.domain == kMedqDomain);
}

bool has_activation(const Node& n) { return n.op_type == "FusedConv" && !n.attr_s("activation", "").empty(); }

void to_fused(Node& conv) {
  if (conv.op_type == "FusedConv") return;
  conv.op_type = "FusedConv";
  conv.domain = kMedqDomain;
}

bool known_shape(const Graph& g, uint32_t v, Shape* s) {
  const Value& val = g.value(v);
  if (!val.has_shape) return false;
  *s = val.shape;
  return true;
}

class FuseConvPass : public Pass {
 public:
  const char* name() const override { return "fuse"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    bool again = true;
    while (again) {
      again = false;
      for (size_t ci = 0; ci < g.nodes.size(); ++ci) {
        Node& conv = g.nodes[ci];
        if (!conv.dead && try_matmul_bias(g, conv, ctx)) {
          changed = true;
          again = true;
          continue;
        }
        if (conv.dead || !is_conv_like(conv) || conv.outputs.empty()) continue;
        uint32_t y = conv.outputs[0];
        if (try_sum(g, conv, y, ctx) || try_activation(g, conv, y, ctx) || try_gated(g, conv, y, ctx)) {
          changed = true;
          again = true;
        }
      }
    }
    return Status::ok();
  }

 private:
  // MatMul(A, B constant [K, N]) -> Add(constant bias with N elements along the last axis)
  //   => FusedMatMul(A, B, bias): the transformers' projections; the bias is added in the GEMM's
  //   epilogue instead of a separate pass over the output.
  bool try_matmul_bias(Graph& g, Node& mm, PassContext& ctx) {
    if (mm.op_type != "MatMul" || !mm.domain.empty() || mm.inputs.size() != 2 || mm.outputs.size() != 1) return false;
    const Value& b = g.value(mm.inputs[1]);
    if (!b.is_constant() || b.initializer.rank() != 2 || b.initializer.dtype() != DataType::kFloat32) return false;
    const int64_t N = b.initializer.dim(1);
    const uint32_t y = mm.outputs[0];
    Node* add = single_consumer(g, y);
    if (!add || add->op_type != "Add" || !add->domain.empty() || add->inputs.size() != 2) return false;
    const uint32_t other = add->inputs[0] == y ? add->inputs[1] : add->inputs[0];
    if (other == y) return false;
    const Value& bias = g.value(other);
    if (!bias.is_constant() || bias.initializer.dtype() != DataType::kFloat32 || bias.initializer.numel() != N ||
        bias.initializer.rank() < 1 || bias.initializer.dim(-1) != N)
      return false;
    const Value& yv = g.value(y);
    // A [N] bias always broadcasts along the last axis; a higher-rank one needs Y's rank to be known.
    if (bias.initializer.rank() > 1 && (!yv.has_shape || static_cast<int64_t>(yv.shape.size()) < bias.initializer.rank()))
      return false;
    mm.op_type = "FusedMatMul";
    mm.domain = kMedqDomain;
    mm.inputs.push_back(other);
    mm.set_attr(Attribute::make_string("activation", ""));
    mm.set_attr(Attribute::make_floats("activation_params", {}));
    mm.outputs[0] = add->outputs[0];
    add->dead = true;
    ctx.log.push_back("fused bias " + add->label() + " into " + mm.label());
    return true;
  }

  bool try_sum(Graph& g, Node& conv, uint32_t y, PassContext& ctx) {
    if (has_activation(conv) || (conv.inputs.size() > 3 && conv.inputs[3] != kNoValue)) return false;
    Node* add = single_consumer(g, y);
    if (!add || add->op_type != "Add" || !add->domain.empty() || add->inputs.size() != 2) return false;
    uint32_t other = add->inputs[0] == y ? add->inputs[1] : add->inputs[0];
    if (other == y || g.value(other).is_constant()) return false;
    // Same shape required (no broadcasting in the sum post-op).
    Shape sy, so;
    if (!known_shape(g, y, &sy) || !known_shape(g, other, &so) || sy != so) return false;
    int unknown = 0;
    for (int64_t d : sy) unknown += d < 0;
    if (unknown > 1 || (unknown == 1 && sy[0] >= 0)) return false;  // only the batch dim may be dynamic
    to_fused(conv);
    while (conv.inputs.size() < 3) conv.inputs.push_back(kNoValue);
    conv.inputs.resize(4);
    conv.inputs[3] = other;
    conv.outputs[0] = add->outputs[0];
    add->dead = true;
    ctx.log.push_back("fused " + add->label() + " into " + conv.label());
    return true;
  }

  bool try_activation(Graph& g, Node& conv, uint32_t y, PassContext& ctx) {
    if (has_activation(conv)) return false;
    Node* act = single_consumer(g, y);
    if (!act || !act->domain.empty() || act->inputs.empty() || act->inputs[0] != y) return false;
    std::string kind;
    std::vector<float> params;
    const std::string& op = act->op_type;
    if (op == "Relu" || op == "Sigmoid" || op == "HardSwish" || op == "Tanh") {
      kind = op;
    } else if (op == "LeakyRelu") {
      kind = op;
      params = {act->attr_f("alpha", 0.01f)};
    } else if (op == "HardSigmoid") {
      kind = op;
      params = {act->attr_f("alpha", 0.2f), act->attr_f("beta", 0.5f)};
    } else if (op == "Clip") {
      float lo = -3.4028235e38f, hi = 3.4028235e38f;
      if (act->has_attr("min") || act->has_attr("max")) {
        lo = act->attr_f("min", lo);
        hi = act->attr_f("max", hi);
      }
      for (size_t i = 1; i < act->inputs.size(); ++i) {
        if (act->inputs[i] == kNoValue) continue;
        const Value& v = g.value(act->inputs[i]);
        if (!v.is_constant() || v.initializer.numel() != 1) return false;
        (i == 1 ? lo : hi) = static_cast<float>(v.initializer.get_f64(0));
      }
      kind = "Clip";
      params = {lo, hi};
    } else {
      return false;
    }
    to_fused(conv);
    conv.set_attr(Attribute::make_string("activation", kind));
    conv.set_attr(Attribute::make_floats("activation_params", params));
    conv.outputs[0] = act->outputs[0];
    act->dead = true;
    ctx.log.push_back("fused " + act->label() + " into " + conv.label());
    return true;
  }

  // y -> gate, Mul(y, gate(y)) with gate Sigmoid (x * sigmoid(x) = SiLU) or HardSigmoid with
  // alpha 1/6, beta 0.5 (x * hardsigmoid(x) = HardSwish, how torch exports hardswish below opset 14).
  bool try_gated(Graph& g, Node& conv, uint32_t y, PassContext& ctx) {
    if (has_activation(conv) || g.is_graph_output(y)) return false;
    Node* gate = nullptr;
    Node* mul = nullptr;
    int uses = 0;
    for (auto& n : g.nodes) {
      if (n.dead) continue;
      for (uint32_t i : n.inputs) {
        if (i != y) continue;
        ++uses;
        if ((n.op_type == "Sigmoid" || n.op_type == "HardSigmoid") && n.domain.empty()) gate = &n;
        else if (n.op_type == "Mul" && n.domain.empty()) mul = &n;
      }
    }
    if (uses != 2 || !gate || !mul || mul->inputs.size() != 2) return false;
    std::string kind = "SiLU";
    if (gate->op_type == "HardSigmoid") {
      if (std::fabs(gate->attr_f("alpha", 0.2f) - 1.0f / 6) > 1e-6f || gate->attr_f("beta", 0.5f) != 0.5f) return false;
      kind = "HardSwish";
    }
    uint32_t s = gate->outputs[0];
    if (!((mul->inputs[0] == y && mul->inputs[1] == s) || (mul->inputs[1] == y && mul->inputs[0] == s))) return false;
    if (use_count(g, s) != 1) return false;
    to_fused(conv);
    conv.set_attr(Attribute::make_string("activation", kind));
    conv.set_attr(Attribute::make_floats("activation_params", {}));
    conv.outputs[0] = mul->outputs[0];
    gate->dead = true;
    mul->dead = true;
    ctx.log.push_back("fused " + kind + " (" + gate->label() + ", " + mul->label() + ") into " + conv.label());
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_conv_activation_pass() { return std::make_unique<FuseConvPass>(); }

}  // namespace medq
