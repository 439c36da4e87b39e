// LayerNorm recovery ("layernorm"): torch exports nn.LayerNorm below opset 17 as
//   m = ReduceMean(x, axes); d = Sub(x, m); v = ReduceMean(Pow(d, 2), axes);
//   n = Div(d, Sqrt(Add(v, eps))); y = Mul(n, gamma) [; y = Add(y, beta)]
// (convnext_tiny, vit_b_16): nine ops and seven passes over the tensor. When the axes are the
// trailing dims, keepdims is 1, eps, the exponent 2, gamma and beta are constants and every
// intermediate has no other use, the chain becomes one LayerNormalization(x, gamma, beta;
// axis, epsilon) node (the opset-17 operator, run by ref and dnnl at any opset).
#include <algorithm>
#include <vector>

#include "passes/pass.h"

namespace medq {
namespace {

bool is(const Node* n, const char* op) { return n && n->domain.empty() && n->op_type == op; }

// A constant float scalar (any rank, one element).
bool scalar_of(const Graph& g, uint32_t v, double* out) {
  if (v == kNoValue) return false;
  const Value& val = g.value(v);
  if (!val.is_constant() || val.initializer.numel() != 1) return false;
  const DataType dt = val.initializer.dtype();
  if (dt != DataType::kFloat32 && dt != DataType::kFloat64) return false;
  *out = val.initializer.get_f64(0);
  return true;
}

// The other input of binary node n (not `v`), or kNoValue.
uint32_t other_input(const Node& n, uint32_t v) {
  if (n.inputs.size() != 2) return kNoValue;
  if (n.inputs[0] == v) return n.inputs[1];
  if (n.inputs[1] == v) return n.inputs[0];
  return kNoValue;
}

// First axis, counted from the end (-k), of ReduceMean r when its axes are the trailing k dims
// with keepdims 1; 0 when not. rank: x's rank, or 0 when unknown (then only negative axes
// can be checked).
int64_t trailing_axis(const Graph& g, const Node& r, int64_t rank) {
  if (r.attr_i("keepdims", 1) != 1) return 0;
  std::vector<int64_t> axes;
  if (r.has_attr("axes")) {
    axes = r.attr_ints("axes");
  } else if (r.inputs.size() > 1 && r.inputs[1] != kNoValue) {
    const Value& a = g.value(r.inputs[1]);
    if (!a.is_constant() || a.initializer.dtype() != DataType::kInt64) return 0;
    for (int64_t i = 0; i < a.initializer.numel(); ++i) axes.push_back(a.initializer.get_i64(i));
  }
  if (axes.empty()) return 0;
  for (int64_t& ax : axes) {
    if (ax >= 0 && rank == 0) return 0;
    if (ax >= 0) ax -= rank;
  }
  std::sort(axes.begin(), axes.end());
  const int64_t k = static_cast<int64_t>(axes.size());
  for (int64_t i = 0; i < k; ++i)
    if (axes[i] != i - k) return 0;
  return -k;
}

class FuseLayerNormPass : public Pass {
 public:
  const char* name() const override { return "layernorm"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    struct Match {
      uint32_t x, gamma, beta, out;
      int64_t axis;
      float eps;
      std::vector<size_t> nodes;
    };
    std::vector<Match> matches;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& m1 = g.nodes[i];
      if (m1.dead || !is(&m1, "ReduceMean") || m1.inputs.empty() || m1.outputs.size() != 1) continue;
      const uint32_t x = m1.inputs[0];
      const Value& xv = g.value(x);
      if (xv.dtype != DataType::kFloat32 && xv.dtype != DataType::kUndefined) continue;
      // x's rank when shape inference knew it (vit's token sequence after its class-token Concat
      // has none): then the trailing axes are only recognized in negative form.
      const int64_t rank = xv.has_shape ? static_cast<int64_t>(xv.shape.size()) : 0;
      const int64_t axis = trailing_axis(g, m1, rank);  // -k
      if (axis == 0) continue;
      Node* sub = single_consumer(g, m1.outputs[0]);
      if (!is(sub, "Sub") || sub->inputs.size() != 2 || sub->inputs[0] != x || sub->inputs[1] != m1.outputs[0])
        continue;
      const uint32_t d = sub->outputs[0];
      // d feeds exactly Pow(d, 2) and Div(d, .).
      Node* pw = nullptr;
      Node* div = nullptr;
      int uses = 0;
      for (auto& n : g.nodes) {
        if (n.dead) continue;
        for (uint32_t in : n.inputs)
          if (in == d) {
            ++uses;
            if (is(&n, "Pow") && n.inputs[0] == d) pw = &n;
            else if (is(&n, "Div") && n.inputs[0] == d) div = &n;
          }
      }
      double two = 0, eps = 0;
      if (uses != 2 || !pw || !div || g.is_graph_output(d) || pw->inputs.size() != 2 ||
          !scalar_of(g, pw->inputs[1], &two) || two != 2.0)
        continue;
      Node* m2 = single_consumer(g, pw->outputs[0]);
      if (!is(m2, "ReduceMean") || m2->inputs[0] != pw->outputs[0] || trailing_axis(g, *m2, rank) != axis) continue;
      Node* add = single_consumer(g, m2->outputs[0]);
      if (!is(add, "Add") || !scalar_of(g, other_input(*add, m2->outputs[0]), &eps) || !(eps > 0)) continue;
      Node* sq = single_consumer(g, add->outputs[0]);
      if (!is(sq, "Sqrt") || single_consumer(g, sq->outputs[0]) != div || div->inputs[1] != sq->outputs[0]) continue;
      Node* mul = single_consumer(g, div->outputs[0]);
      if (!is(mul, "Mul")) continue;
      const uint32_t gamma = other_input(*mul, div->outputs[0]);
      // gamma (and beta) constant float32 of the normalized shape: its element count when x's
      // shape is known, else exactly -axis dims (so that it cannot have broadcast in the Mul).
      int64_t inner = 1;
      for (int64_t a = rank + axis; rank > 0 && a < rank; ++a) inner = xv.shape[a] > 0 ? inner * xv.shape[a] : -1;
      auto param_ok = [&](uint32_t v) {
        if (v == kNoValue) return false;
        const Value& p = g.value(v);
        if (!p.is_constant() || p.initializer.dtype() != DataType::kFloat32) return false;
        if (rank > 0 && inner > 0) return p.initializer.numel() == inner && p.initializer.rank() <= -axis;
        return p.initializer.rank() == -axis;
      };
      if (!param_ok(gamma)) continue;
      Match mt{x, gamma, kNoValue, mul->outputs[0], axis, static_cast<float>(eps), {}};
      auto index = [&](const Node* n) { return static_cast<size_t>(n - g.nodes.data()); };
      mt.nodes = {i, index(sub), index(pw), index(m2), index(add), index(sq), index(div), index(mul)};
      Node* bias = single_consumer(g, mul->outputs[0]);
      if (is(bias, "Add") && param_ok(other_input(*bias, mul->outputs[0]))) {
        mt.beta = other_input(*bias, mul->outputs[0]);
        mt.out = bias->outputs[0];
        mt.nodes.push_back(index(bias));
      }
      matches.push_back(mt);
    }
    for (const Match& mt : matches) {
      Node ln;
      ln.name = g.nodes[mt.nodes.front()].name + "/LayerNorm";
      ln.op_type = "LayerNormalization";
      ln.inputs = {mt.x, mt.gamma};
      if (mt.beta != kNoValue) ln.inputs.push_back(mt.beta);
      ln.outputs = {mt.out};
      ln.attrs = {Attribute::make_int("axis", mt.axis), Attribute::make_float("epsilon", mt.eps)};
      for (size_t k : mt.nodes) g.nodes[k].dead = true;
      ctx.log.push_back("layernorm: " + std::to_string(mt.nodes.size()) + " nodes from " +
                        g.nodes[mt.nodes.front()].label() + " -> " + ln.name);
      g.add_node(std::move(ln));
      changed = true;
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_layernorm_pass() { return std::make_unique<FuseLayerNormPass>(); }

}  // namespace medq
