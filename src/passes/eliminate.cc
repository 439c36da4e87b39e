// Identity / Dropout elimination and dead-code elimination.
#include "passes/pass.h"

namespace medq {
namespace {

class EliminateIdentityPass : public Pass {
 public:
  const char* name() const override { return "identity"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    for (auto& n : g.nodes) {
      if (n.dead || !n.domain.empty()) continue;
      bool is_identity = n.op_type == "Identity";
      if (n.op_type == "Dropout") {
        // Inference: Y = X; only when the mask output is unused and training_mode is not set to true.
        bool mask_used = n.outputs.size() > 1 && n.outputs[1] != kNoValue && use_count(g, n.outputs[1]) > 0;
        bool training = n.has_input(2) && g.value(n.inputs[2]).is_constant() &&
                        g.value(n.inputs[2]).initializer.get_i64(0) != 0;
        bool training_unknown = n.has_input(2) && !g.value(n.inputs[2]).is_constant();
        is_identity = !mask_used && !training && !training_unknown;
      }
      if (!is_identity || !n.has_input(0) || n.outputs.empty() || n.outputs[0] == kNoValue) continue;
      uint32_t in = n.inputs[0], out = n.outputs[0];
      // Keep the node when it connects a graph input (or constant) directly to a graph output:
      // the output value name must survive.
      if (g.is_graph_output(out) && (g.is_graph_input(in) || g.value(in).is_constant() || g.is_graph_output(in)))
        continue;
      if (g.is_graph_output(out)) {
        // Rename the producer's output to the graph output's value: redirect in -> out.
        uint32_t prod = g.value(in).producer;
        if (prod == kNoNode || use_count(g, in) != 1) continue;
        for (auto& o : g.nodes[prod].outputs) if (o == in) o = out;
        n.dead = true;
      } else {
        n.dead = true;
        g.replace_all_uses(out, in);
      }
      ctx.log.push_back("removed " + n.label());
      changed = true;
    }
    return Status::ok();
  }
};

class DeadCodePass : public Pass {
 public:
  const char* name() const override { return "dce"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    std::vector<uint8_t> live(g.values.size(), 0);
    for (uint32_t o : g.outputs) live[o] = 1;
    for (int i = static_cast<int>(g.nodes.size()) - 1; i >= 0; --i) {
      Node& n = g.nodes[i];
      if (n.dead) continue;
      bool needed = false;
      for (uint32_t o : n.outputs) if (o != kNoValue && live[o]) needed = true;
      if (!needed) {
        n.dead = true;
        changed = true;
        ctx.log.push_back("dead " + n.label());
        continue;
      }
      for (uint32_t in : n.inputs) if (in != kNoValue) live[in] = 1;
    }
    // Drop initializers nobody uses any more.
    for (uint32_t v = 0; v < g.values.size(); ++v)
      if (g.values[v].is_constant() && !live[v] && !g.is_graph_input(v)) g.values[v].initializer = Tensor();
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_eliminate_identity_pass() { return std::make_unique<EliminateIdentityPass>(); }
std::unique_ptr<Pass> make_dead_code_pass() { return std::make_unique<DeadCodePass>(); }

}  // namespace medq
