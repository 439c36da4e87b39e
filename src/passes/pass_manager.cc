#include <algorithm>
#include <cstdio>

#include "ops/kernel.h"

#include "passes/pass.h"

namespace medq {

bool backend_allowed(const PassContext& ctx, const std::string& name) {
  return ctx.backends.empty() || std::find(ctx.backends.begin(), ctx.backends.end(), name) != ctx.backends.end();
}

bool dnnl_accepts(const Graph& g, const Node& n, int64_t opset) {
  auto k = KernelRegistry::global().create(KernelCreateInfo{n, g, opset}, {"dnnl"});
  return k.is_ok() && std::string(k.value()->backend()) == "dnnl";
}

int use_count(const Graph& g, uint32_t vid) {
  int c = 0;
  for (const auto& n : g.nodes) {
    if (n.dead) continue;
    for (uint32_t i : n.inputs) c += i == vid;
  }
  for (uint32_t o : g.outputs) c += o == vid;
  return c;
}

Node* single_consumer(Graph& g, uint32_t v) {
  if (v == kNoValue || g.is_graph_output(v)) return nullptr;
  Node* found = nullptr;
  for (auto& n : g.nodes) {
    if (n.dead) continue;
    for (uint32_t i : n.inputs)
      if (i == v) {
        if (found) return nullptr;
        found = &n;
      }
  }
  return found;
}

std::string graph_to_string(const Graph& g) {
  std::string s;
  for (const auto& n : g.nodes) {
    s += n.label() + " (";
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (i) s += ", ";
      s += n.inputs[i] == kNoValue ? "" : g.value(n.inputs[i]).name;
    }
    s += ") -> (";
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      if (i) s += ", ";
      s += n.outputs[i] == kNoValue ? "" : g.value(n.outputs[i]).name;
    }
    s += ")\n";
  }
  return s;
}

Status run_passes(Graph& g, PassContext& ctx, const std::vector<std::unique_ptr<Pass>>& passes) {
  for (const auto& p : passes) {
    bool changed = false;
    RETURN_IF_ERROR(p->run(g, ctx, changed).with_context(std::string("pass ") + p->name()));
    RETURN_IF_ERROR(g.finalize().with_context(std::string("after pass ") + p->name()));
    if (ctx.verify) RETURN_IF_ERROR(g.verify().with_context(std::string("after pass ") + p->name()));
    if (ctx.dump_after == p->name()) std::fprintf(stderr, "== after %s ==\n%s", p->name(), graph_to_string(g).c_str());
  }
  return Status::ok();
}

Result<std::vector<std::unique_ptr<Pass>>> make_pipeline(const std::vector<std::string>& names) {
  std::vector<std::unique_ptr<Pass>> ps;
  for (const auto& n : names) {
    if (n == "identity") ps.push_back(make_eliminate_identity_pass());
    else if (n == "dce") ps.push_back(make_dead_code_pass());
    else if (n == "fold") ps.push_back(make_fold_constants_pass());
    else if (n == "prefold") ps.push_back(make_prefold_constants_pass());
    else if (n == "bn") ps.push_back(make_fold_batchnorm_pass());
    else if (n == "layernorm") ps.push_back(make_fuse_layernorm_pass());
    else if (n == "fuse") ps.push_back(make_fuse_conv_activation_pass());
    else if (n == "qdq") ps.push_back(make_fuse_qdq_pass());
    else if (n == "layouts") ps.push_back(make_assign_layouts_pass());
    else if (n == "fp16") ps.push_back(make_lower_fp16_pass());
    else if (n == "qsum") ps.push_back(make_fuse_qsum_pass());
    else return invalid_argument("unknown pass '" + n + "' (known: fp16, identity, dce, prefold, fold, layernorm, bn, fuse, qdq, qsum, layouts)");
  }
  return ps;
}

Status run_default_pipeline(Graph& g, PassContext& ctx) {
  ASSIGN_OR_RETURN(auto ps, make_pipeline({"identity", "prefold", "qdq", "fold", "layernorm", "bn", "fuse", "dce", "qsum", "layouts"}));
  return run_passes(g, ctx, ps);
}

}  // namespace medq
