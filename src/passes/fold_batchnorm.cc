// BatchNormalization folding into a preceding Conv (inference):
//   W'[o] = W[o] * s[o],  b'[o] = (b[o] - mean[o]) * s[o] + beta[o],  s = gamma / sqrt(var + eps)
// Applies when the Conv output feeds only the BN and all parameters are constant float32.
#include <cmath>

#include "passes/pass.h"

namespace medq {
namespace {

bool const_f32(const Graph& g, const Node& n, size_t i) {
  return n.has_input(i) && g.value(n.inputs[i]).is_constant() &&
         g.value(n.inputs[i]).initializer.dtype() == DataType::kFloat32;
}

class FoldBatchNormPass : public Pass {
 public:
  const char* name() const override { return "bn"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    for (auto& bn : g.nodes) {
      if (bn.dead || bn.op_type != "BatchNormalization" || !bn.domain.empty()) continue;
      if (bn.attr_i("training_mode", 0) != 0 || bn.inputs.size() < 5 || bn.outputs.empty()) continue;
      if (bn.inputs[0] == kNoValue || bn.outputs[0] == kNoValue) continue;
      if (bn.outputs.size() > 1) {
        bool extra = false;
        for (size_t i = 1; i < bn.outputs.size(); ++i) extra |= bn.outputs[i] != kNoValue && use_count(g, bn.outputs[i]) > 0;
        if (extra) continue;
      }
      uint32_t x = bn.inputs[0];
      uint32_t prod = g.value(x).producer;
      if (prod == kNoNode) continue;
      Node& conv = g.nodes[prod];
      if (conv.dead || conv.op_type != "Conv" || !conv.domain.empty() || conv.outputs.size() != 1) continue;
      if (use_count(g, x) != 1 || g.is_graph_output(x)) continue;
      if (!const_f32(g, conv, 1) || (conv.has_input(2) && !const_f32(g, conv, 2))) continue;
      bool params_ok = true;
      for (size_t i = 1; i <= 4; ++i) params_ok &= const_f32(g, bn, i);
      if (!params_ok) continue;
      const Tensor& w = g.value(conv.inputs[1]).initializer;
      if (w.rank() < 3 || w.dim(0) <= 0) continue;  // malformed: the Conv kernel reports it
      int64_t oc = w.dim(0);
      if (conv.has_input(2) && g.value(conv.inputs[2]).initializer.numel() != oc) continue;
      const Tensor& gamma = g.value(bn.inputs[1]).initializer;
      const Tensor& beta = g.value(bn.inputs[2]).initializer;
      const Tensor& mean = g.value(bn.inputs[3]).initializer;
      const Tensor& var = g.value(bn.inputs[4]).initializer;
      if (gamma.numel() != oc || beta.numel() != oc || mean.numel() != oc || var.numel() != oc) continue;
      float eps = bn.attr_f("epsilon", 1e-5f);
      Tensor nw = w.clone();
      Tensor nb = Tensor::zeros(DataType::kFloat32, {oc});
      int64_t per = w.numel() / oc;
      for (int64_t o = 0; o < oc; ++o) {
        double s = gamma.data<float>()[o] / std::sqrt(static_cast<double>(var.data<float>()[o]) + eps);
        float* wp = nw.data<float>() + o * per;
        for (int64_t j = 0; j < per; ++j) wp[j] = static_cast<float>(wp[j] * s);
        double b = conv.has_input(2) ? g.value(conv.inputs[2]).initializer.data<float>()[o] : 0.0;
        nb.data<float>()[o] = static_cast<float>((b - mean.data<float>()[o]) * s + beta.data<float>()[o]);
      }
      uint32_t wid = g.add_constant(g.unique_name(g.value(conv.inputs[1]).name + "_bnfold"), nw);
      uint32_t bid = g.add_constant(g.unique_name(conv.name + "_bias_bnfold"), nb);
      conv.inputs.resize(3);
      conv.inputs[1] = wid;
      conv.inputs[2] = bid;
      // The conv now produces the BN's output.
      conv.outputs[0] = bn.outputs[0];
      bn.dead = true;
      changed = true;
      ctx.log.push_back("folded " + bn.label() + " into " + conv.label());
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_batchnorm_pass() { return std::make_unique<FoldBatchNormPass>(); }

}  // namespace medq
