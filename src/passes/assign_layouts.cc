// Activation layout assignment (last pass of the default pipeline).
//
// Marks a value "blocked" (stored nhwc, or nChw16c, in its ordinary buffer;
// see kernels/dnnl/dnnl_layout.h) iff
//   * it is a 4-D float32 intermediate with static C, H, W (batch may be
//     dynamic), not H = W = 1 (same bytes in every layout anyway), C % 16 == 0
//     for nChw16c; not a graph input/output, not a constant;
//   * its producer and all its consumers are nodes whose dnnl kernel is
//     actually created for them (checked by creating it here with the "dnnl"
//     backend) and supports a blocked layout at that input/output position.
// The decision is recorded on the nodes as "_in_layouts" / "_out_layouts"
// (ints per input/output: 0 plain, 1 nChw16c, 2 nhwc), which the dnnl
// kernels read at create time. Every marked node is re-created with its
// markers; a node that is then rejected loses its candidacy and the
// assignment is recomputed. The pass does nothing when the allowed backends
// exclude "dnnl" or MEDQ_DNNL_BLOCKED=off.
//
// First, two rewrites: a Pad with constant all-zero pads is removed (it would
// split a blocked chain), and, dnnl-only, BatchNormalization -> Relu becomes
// medq FusedBatchNorm (see ops/fused.h) where the dnnl kernel accepts it.
#include <algorithm>

#include "kernels/dnnl/dnnl_layout.h"
#include "ops/fused.h"
#include "ops/kernel.h"
#include "passes/pass.h"

namespace medq {
namespace {

void clear_markers(Node& n) {
  n.remove_attr(kInLayoutsAttr);
  n.remove_attr(kOutLayoutsAttr);
}

void set_markers(Node& n, const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  n.set_attr(Attribute::make_ints(kInLayoutsAttr, in));
  n.set_attr(Attribute::make_ints(kOutLayoutsAttr, out));
}

bool may_be_blocked(const Graph& g, uint32_t vid, Layout bl) {
  const Value& v = g.value(vid);
  if (v.is_constant() || g.is_graph_output(vid) || g.is_graph_input(vid)) return false;
  // 8-bit activations (QConv/QAdd/MaxPool chains of a QDQ model) only as nhwc,
  // oneDNN's int8 activation layout.
  const bool q8 = v.dtype == DataType::kUInt8 || v.dtype == DataType::kInt8;
  if (q8 && bl != Layout::kNhwc) return false;
  if ((v.dtype != DataType::kFloat32 && !q8) || !v.has_shape || v.shape.size() != 4) return false;
  const int64_t c = v.shape[1], h = v.shape[2], w = v.shape[3];
  if (c <= 0 || h <= 0 || w <= 0) return false;
  if (h == 1 && w == 1) return false;
  if (channel_block(bl) && c % channel_block(bl) != 0) return false;
  return true;
}

class AssignLayoutsPass : public Pass {
 public:
  const char* name() const override { return "layouts"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    for (auto& n : g.nodes)
      if (has_layout_marker(n)) {
        clear_markers(n);
        changed = true;
      }
    if (!backend_allowed(ctx, "dnnl")) return Status::ok();
    const Layout bl = blocked_layout_for(g, ctx.layout);
    if (bl == Layout::kPlain) return Status::ok();
    if (!ctx.keep_values) {
      RETURN_IF_ERROR(remove_noop_pads(g, ctx, changed));
      RETURN_IF_ERROR(fuse_batchnorm_relu(g, ctx, changed));
      RETURN_IF_ERROR(fuse_concat_batchnorm(g, ctx, changed));
    }
    const size_t nn = g.nodes.size();

    // 1. Nodes whose dnnl kernel can be created (with plain markers).
    std::vector<uint8_t> capable(nn, 0);
    for (size_t i = 0; i < nn; ++i) {
      const Node& n = g.nodes[i];
      if (n.dead) continue;
      bool any = false;
      for (size_t k = 0; k < n.inputs.size(); ++k) any |= dnnl_k::supports_blocked_io(n, true, k);
      for (size_t k = 0; k < n.outputs.size(); ++k) any |= dnnl_k::supports_blocked_io(n, false, k);  // NHWC -> NCHW Transpose
      if (!any) continue;
      Node probe = n;
      set_markers(probe, std::vector<int64_t>(n.inputs.size(), 0), std::vector<int64_t>(n.outputs.size(), 0));
      capable[i] = dnnl_accepts(g, probe, ctx.opset);
    }

    int blocked_values = 0;
    // Each rejected attempt removes at least one capable node, so nn + 1 attempts always converge.
    for (size_t attempt = 0; attempt <= nn; ++attempt) {
      // 2. Values: producer and all consumers capable at their positions.
      std::vector<uint8_t> blocked(g.values.size(), 0);
      blocked_values = 0;
      for (uint32_t vid = 0; vid < g.values.size(); ++vid) {
        const Value& v = g.value(vid);
        if (v.producer == kNoNode || v.consumers.empty() || !may_be_blocked(g, vid, bl)) continue;
        const Node& p = g.nodes[v.producer];
        if (p.dead || !capable[v.producer]) continue;
        bool ok = false;
        for (size_t k = 0; k < p.outputs.size(); ++k)
          if (p.outputs[k] == vid) ok = dnnl_k::supports_blocked_io(p, false, k);
        for (uint32_t ci : v.consumers) {
          if (!ok) break;
          const Node& c = g.nodes[ci];
          if (c.dead || !capable[ci]) ok = false;
          for (size_t k = 0; ok && k < c.inputs.size(); ++k)
            if (c.inputs[k] == vid && !dnnl_k::supports_blocked_io(c, true, k)) ok = false;
        }
        if (ok) blocked[vid] = 1;
      }
      keep_spatial_components(g, blocked);
      for (uint8_t b : blocked) blocked_values += b;
      // 3. Markers on every node touching a blocked value.
      std::vector<size_t> marked;
      for (size_t i = 0; i < nn; ++i) {
        Node& n = g.nodes[i];
        clear_markers(n);
        if (n.dead || !capable[i]) continue;
        std::vector<int64_t> in(n.inputs.size(), 0), out(n.outputs.size(), 0);
        bool any = false;
        for (size_t k = 0; k < n.inputs.size(); ++k)
          if (n.inputs[k] != kNoValue && blocked[n.inputs[k]]) in[k] = static_cast<int64_t>(bl), any = true;
        for (size_t k = 0; k < n.outputs.size(); ++k)
          if (n.outputs[k] != kNoValue && blocked[n.outputs[k]]) out[k] = static_cast<int64_t>(bl), any = true;
        if (!any) continue;
        set_markers(n, in, out);
        marked.push_back(i);
      }
      // 4. Every marked node must get its dnnl kernel with these markers.
      bool rejected = false;
      for (size_t i : marked) {
        if (!dnnl_accepts(g, g.nodes[i], ctx.opset)) {
          capable[i] = 0;
          rejected = true;
          ctx.log.push_back("layouts: " + g.nodes[i].label() + " rejects blocked layouts");
        }
      }
      if (!rejected) {
        changed |= !marked.empty();
        if (blocked_values > 0)
          ctx.log.push_back("layouts: " + std::to_string(blocked_values) + " values stored " + layout_name(bl) +
                            " across " + std::to_string(marked.size()) + " nodes");
        return Status::ok();
      }
    }
    for (auto& n : g.nodes) clear_markers(n);
    return internal_error("layout assignment did not converge");
  }

 private:
  // Blocked values pay off only around the ops whose kernels are faster blocked (convolutions,
  // pools, normalizations). A chain of elementwise ops alone (convnext's decomposed LayerNorm
  // and MLP on [N, H, W, C] tensors between Transposes and MatMuls) gains nothing and can hit
  // broadcasts that oneDNN has only reference kernels for in blocked layouts (10-100x slower):
  // values stay blocked only in connected groups of nodes (joined by blocked values) that
  // contain such an op.
  static void keep_spatial_components(const Graph& g, std::vector<uint8_t>& blocked) {
    const size_t nn = g.nodes.size();
    std::vector<uint32_t> parent(nn);
    for (size_t i = 0; i < nn; ++i) parent[i] = static_cast<uint32_t>(i);
    auto find = [&](uint32_t x) {
      while (parent[x] != x) x = parent[x] = parent[parent[x]];
      return x;
    };
    for (uint32_t vid = 0; vid < g.values.size(); ++vid) {
      if (!blocked[vid]) continue;
      const Value& v = g.value(vid);
      for (uint32_t c : v.consumers) parent[find(c)] = find(v.producer);
    }
    std::vector<uint8_t> spatial(nn, 0);
    for (size_t i = 0; i < nn; ++i) {
      const Node& n = g.nodes[i];
      if (n.dead || (dnnl_k::needs_layout_marker(n) && n.op_type != "BatchNormalization"))
        continue;  // elementwise, binary, Concat: not a reason to block
      spatial[find(static_cast<uint32_t>(i))] = 1;
    }
    for (uint32_t vid = 0; vid < g.values.size(); ++vid)
      if (blocked[vid] && !spatial[find(g.value(vid).producer)]) blocked[vid] = 0;
  }

  // Pad with constant all-zero pads (e.g. exported before DenseNet's AveragePool)
  // is an identity that would otherwise split a blocked chain (and copy).
  static Status remove_noop_pads(Graph& g, PassContext& ctx, bool& changed) {
    bool removed = false;
    for (auto& n : g.nodes) {
      if (n.dead || n.op_type != "Pad" || !n.domain.empty() || !n.has_input(0) || n.outputs.size() != 1) continue;
      const uint32_t in = n.inputs[0], out = n.outputs[0];
      if (out == kNoValue || g.is_graph_output(out)) continue;
      if (g.value(in).dtype != g.value(out).dtype || g.value(in).dtype == DataType::kUndefined) continue;
      std::vector<int64_t> pads;
      if (n.has_attr("pads")) {
        pads = n.attr_ints("pads");  // opset < 11
      } else {
        if (!n.has_input(1) || n.has_input(3)) continue;  // pads input; no axes input
        const Value& pv = g.value(n.inputs[1]);
        if (!pv.is_constant() || pv.initializer.dtype() != DataType::kInt64) continue;
        for (int64_t i = 0; i < pv.initializer.numel(); ++i) pads.push_back(pv.initializer.get_i64(i));
      }
      if (pads.empty()) continue;
      bool zero = true;
      for (int64_t p : pads) zero &= p == 0;
      if (!zero) continue;
      n.dead = true;
      g.replace_all_uses(out, in);
      ctx.log.push_back("layouts: removed no-op " + n.label());
      removed = true;
    }
    if (removed) {
      changed = true;
      RETURN_IF_ERROR(g.finalize());
    }
    return Status::ok();
  }

  // BatchNormalization -> Relu (its only consumer) => medq FusedBatchNorm(activation "Relu"),
  // when the dnnl kernel accepts the fused node (there is no ref FusedBatchNorm).
  static Status fuse_batchnorm_relu(Graph& g, PassContext& ctx, bool& changed) {
    bool fused = false;
    for (auto& bn : g.nodes) {
      if (bn.dead || bn.op_type != "BatchNormalization" || !bn.domain.empty() || bn.outputs.empty()) continue;
      const uint32_t y = bn.outputs[0];
      if (y == kNoValue || g.is_graph_output(y) || g.value(y).consumers.size() != 1) continue;
      bool extra = false;
      for (size_t i = 1; i < bn.outputs.size(); ++i)
        extra |= bn.outputs[i] != kNoValue && use_count(g, bn.outputs[i]) > 0;
      if (extra) continue;
      Node& act = g.nodes[g.value(y).consumers[0]];
      if (act.dead || act.op_type != "Relu" || !act.domain.empty() || act.inputs.size() != 1 ||
          act.outputs.size() != 1)
        continue;
      Node probe = bn;
      probe.op_type = "FusedBatchNorm";
      probe.domain = kMedqDomain;
      probe.set_attr(Attribute::make_string("activation", "Relu"));
      probe.outputs = {act.outputs[0]};
      fused |= adopt_if_accepted(g, ctx, bn, std::move(probe), act);
    }
    return finish_fusion(g, fused, changed);
  }

  // `node` becomes `probe` (which absorbs `absorbed`) when the dnnl kernel accepts the probe.
  static bool adopt_if_accepted(Graph& g, PassContext& ctx, Node& node, Node probe, Node& absorbed) {
    if (!dnnl_accepts(g, probe, ctx.opset)) return false;
    ctx.log.push_back("layouts: fused " + absorbed.label() + " into " + node.label());
    node = std::move(probe);
    absorbed.dead = true;
    return true;
  }

  static Status finish_fusion(Graph& g, bool fused, bool& changed) {
    if (!fused) return Status::ok();
    changed = true;
    return g.finalize();
  }

  // Concat (axis 1, 4-D) -> BatchNormalization / FusedBatchNorm (the concat's only consumer)
  // => medq ConcatBatchNorm(scale, B, mean, var, X0, X1, ...), when the dnnl kernel accepts it:
  // DenseNet's dense layers no longer write and re-read the concatenation.
  static Status fuse_concat_batchnorm(Graph& g, PassContext& ctx, bool& changed) {
    bool fused = false;
    for (auto& bn : g.nodes) {
      const bool plain_bn = bn.op_type == "BatchNormalization" && bn.domain.empty();
      const bool fused_bn = bn.op_type == "FusedBatchNorm" && bn.domain == kMedqDomain;
      if (bn.dead || !(plain_bn || fused_bn) || bn.inputs.size() != 5 || !bn.has_input(0)) continue;
      if (bn.attr_i("training_mode", 0) != 0) continue;
      const uint32_t x = bn.inputs[0];
      const Value& xv = g.value(x);
      if (xv.producer == kNoNode || g.is_graph_output(x) || xv.consumers.size() != 1) continue;
      Node& cat = g.nodes[xv.producer];
      if (cat.dead || cat.op_type != "Concat" || !cat.domain.empty() || cat.outputs.size() != 1) continue;
      if (!xv.has_shape || xv.shape.size() != 4) continue;
      const int64_t axis = cat.attr_i("axis", 0);
      if (axis != 1 && axis != -3) continue;
      bool inputs_ok = !cat.inputs.empty();
      for (size_t i = 0; i < cat.inputs.size(); ++i) inputs_ok &= cat.has_input(i);
      if (!inputs_ok) continue;
      Node probe = bn;
      probe.op_type = "ConcatBatchNorm";
      probe.domain = kMedqDomain;
      if (plain_bn) probe.set_attr(Attribute::make_string("activation", ""));
      probe.remove_attr("training_mode");
      probe.remove_attr("momentum");
      probe.inputs.assign(bn.inputs.begin() + 1, bn.inputs.end());
      probe.inputs.insert(probe.inputs.end(), cat.inputs.begin(), cat.inputs.end());
      probe.outputs = {bn.outputs[0]};
      fused |= adopt_if_accepted(g, ctx, bn, std::move(probe), cat);
    }
    return finish_fusion(g, fused, changed);
  }
};

}  // namespace

std::unique_ptr<Pass> make_assign_layouts_pass() { return std::make_unique<AssignLayoutsPass>(); }

}  // namespace medq
