#include "quant/fp16.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "passes/pass.h"
#include "quant/quantize.h"

namespace medq {

using nlohmann::json;

std::vector<std::string> Fp16Options::default_fp16_block_ops() {
  return {"Softmax", "LogSoftmax", "LayerNormalization", "ReduceMean", "ReduceSum", "ReduceSumSquare",
          "ReduceL2", "ReduceLogSumExp", "ReduceProd", "Pow", "Sqrt", "Exp", "Log", "Erf", "Reciprocal",
          "Resize", "Upsample", "Range", "CumSum", "Einsum", "NonMaxSuppression", "RoiAlign", "TopK"};
}

namespace {

constexpr float kHalfMax = 65504.f;

bool is_float(DataType d) { return d == DataType::kFloat32 || d == DataType::kFloat16; }

// Input slots that are not of the node's compute type T (stay as they are).
bool is_t_slot(const Node& n, size_t slot) {
  if (n.op_type == "Resize") return slot == 0;
  if (n.op_type == "Upsample") return slot == 0;
  return true;
}

}  // namespace

Result<json> convert_fp16(Model& m, const Fp16Options& o) {
  {
    PassContext ctx;
    ctx.opset = m.opset("");
    ASSIGN_OR_RETURN(auto passes, make_pipeline({"identity", "fold", "bn", "dce"}));
    RETURN_IF_ERROR(run_passes(m.graph, ctx, passes).with_context("preparing the model"));
  }
  Graph& g = m.graph;
  const int64_t bytes_before = initializer_bytes(g);
  std::set<std::string> block_ops(o.block_ops.begin(), o.block_ops.end());
  std::set<std::string> block_nodes(o.block_nodes.begin(), o.block_nodes.end());
  for (const auto& bn : block_nodes) {
    bool hit = false;
    for (const auto& n : g.nodes) hit |= n.name == bn;
    if (!hit) return invalid_argument("--block-nodes: no node named '" + bn + "'");
  }
  json kept_output = json::array();
  if (o.keep_output_layers != 0) {
    int64_t total = 0;
    for (const Value& val : g.values)
      if (val.is_constant() && val.initializer.dtype() == DataType::kFloat32) total += val.initializer.numel();
    for (const auto& n : g.nodes) {
      if (n.dead || n.name.empty() || n.outputs.empty() ||
          (n.op_type != "Gemm" && n.op_type != "MatMul" && n.op_type != "Conv"))
        continue;
      // Follow single-consumer shape/normalisation nodes to a graph output.
      uint32_t v = n.outputs[0];
      for (int hops = 0; hops < 4 && v != kNoValue && !g.is_graph_output(v); ++hops) {
        const Value& val = g.value(v);
        if (val.consumers.size() != 1) break;
        const Node& c = g.nodes[val.consumers[0]];
        if (c.op_type != "Flatten" && c.op_type != "Reshape" && c.op_type != "Squeeze" && c.op_type != "Softmax") break;
        v = c.outputs.empty() ? kNoValue : c.outputs[0];
      }
      if (v == kNoValue || !g.is_graph_output(v)) continue;
      int64_t params = 0;
      for (size_t s = 1; s < n.inputs.size(); ++s)
        if (n.has_input(s) && g.value(n.inputs[s]).is_constant()) params += g.value(n.inputs[s]).initializer.numel();
      const double share = total > 0 ? static_cast<double>(params) / total : 0.0;
      if (o.keep_output_layers == 1 || share <= 0.02) {
        block_nodes.insert(n.name);
        kept_output.push_back({{"node", n.label()}, {"parameters", params}, {"share", share}});
      }
    }
  }
  auto vdtype = [&](uint32_t v) -> DataType {
    const Value& val = g.value(v);
    return val.is_constant() ? val.initializer.dtype() : val.dtype;
  };

  // 1. Which nodes compute in float16.
  const size_t n0 = g.nodes.size();
  std::vector<bool> conv(n0, false);
  json blocked = json::array();
  int converted = 0;
  for (size_t ni = 0; ni < n0; ++ni) {
    const Node& n = g.nodes[ni];
    if (n.dead || !(n.domain.empty() || n.domain == "ai.onnx")) continue;
    bool has_float_in = false;
    for (size_t s = 0; s < n.inputs.size(); ++s)
      if (n.has_input(s) && is_t_slot(n, s) && vdtype(n.inputs[s]) == DataType::kFloat32) has_float_in = true;
    if (n.op_type == "Cast") has_float_in = n.attr_i("to", 0) == static_cast<int64_t>(DataType::kFloat32);
    if (!has_float_in) continue;
    if (block_ops.count(n.op_type) || block_nodes.count(n.name)) {
      blocked.push_back(n.label());
      continue;
    }
    conv[ni] = true;
    ++converted;
  }

  // 2. New dtypes of activations produced by converted nodes (and of graph inputs).
  std::map<uint32_t, DataType> newtype;
  for (size_t ni = 0; ni < n0; ++ni)
    if (conv[ni])
      for (uint32_t out : g.nodes[ni].outputs)
        if (out != kNoValue && g.value(out).dtype == DataType::kFloat32) newtype[out] = DataType::kFloat16;
  if (!o.keep_io_types)
    for (uint32_t in : g.inputs)
      if (g.value(in).dtype == DataType::kFloat32) newtype[in] = DataType::kFloat16;
  auto cur = [&](uint32_t v) {
    auto it = newtype.find(v);
    return it == newtype.end() ? vdtype(v) : it->second;
  };

  // 3. Initializers: converted in place when every use wants float16, else a float16 copy.
  int64_t clamped = 0;
  std::map<uint32_t, uint32_t> fp16_copy;
  std::map<uint32_t, std::pair<int, int>> init_uses;  // (fp16 uses, fp32 uses)
  for (size_t ni = 0; ni < n0; ++ni) {
    const Node& n = g.nodes[ni];
    if (n.dead) continue;
    for (size_t s = 0; s < n.inputs.size(); ++s) {
      if (!n.has_input(s)) continue;
      uint32_t v = n.inputs[s];
      if (!g.value(v).is_constant() || vdtype(v) != DataType::kFloat32) continue;
      bool want16 = conv[ni] && is_t_slot(n, s) && n.op_type != "Cast";
      (want16 ? init_uses[v].first : init_uses[v].second)++;
    }
  }
  auto to_half = [&](const Value& v) -> Result<Tensor> {
    const Tensor& t = v.initializer;
    Tensor h(DataType::kFloat16, t.shape());
    const float* s = t.data<float>();
    uint16_t* d = h.data<uint16_t>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      float f = s[i];
      if (!std::isfinite(f)) return invalid_argument("initializer '" + v.name + "' contains NaN/Inf");
      if (f > kHalfMax || f < -kHalfMax) {
        f = f > 0 ? kHalfMax : -kHalfMax;
        ++clamped;
      }
      d[i] = float_to_half(f);
      float back = half_to_float(d[i]);
      if (!std::isfinite(back)) return internal_error("initializer '" + v.name + "' converts to a non-finite float16");
    }
    return h;
  };
  for (auto& [v, uses] : init_uses) {
    if (!uses.first) continue;
    ASSIGN_OR_RETURN(Tensor h, to_half(g.value(v)));
    if (!uses.second && !g.is_graph_output(v)) {
      g.value(v).initializer = h;
      g.value(v).dtype = DataType::kFloat16;
      fp16_copy[v] = v;
    } else {
      fp16_copy[v] = g.add_constant(g.fresh_name(g.value(v).name + "_fp16"), h);
    }
  }

  // 4. Casts where a node's input type differs from what it computes in.
  std::set<std::string> node_names;
  for (const auto& n : g.nodes) node_names.insert(n.name);
  auto node_name = [&](const std::string& base) {
    std::string n = base;
    for (int i = 1; !node_names.insert(n).second; ++i) n = base + "_" + std::to_string(i);
    return n;
  };
  std::map<std::pair<uint32_t, DataType>, uint32_t> cast_cache;
  int casts = 0;
  auto cast_of = [&](uint32_t v, DataType to) -> uint32_t {
    auto key = std::make_pair(v, to);
    auto it = cast_cache.find(key);
    if (it != cast_cache.end()) return it->second;
    std::string base = g.value(v).name + (to == DataType::kFloat16 ? "_to_fp16" : "_to_fp32");
    uint32_t out = g.add_value(g.fresh_name(base));
    Value& ov = g.value(out);
    ov.dtype = to;
    ov.has_shape = g.value(v).has_shape;
    ov.shape = g.value(v).shape;
    ov.dim_params = g.value(v).dim_params;
    Node c;
    c.op_type = "Cast";
    c.name = node_name(base);
    c.inputs = {v};
    c.outputs = {out};
    c.attrs.push_back(Attribute::make_int("to", static_cast<int64_t>(to)));
    g.add_node(std::move(c));
    ++casts;
    cast_cache[key] = out;
    return out;
  };
  for (size_t ni = 0; ni < n0; ++ni) {
    if (g.nodes[ni].dead) continue;
    if (g.nodes[ni].op_type == "Cast") {
      if (conv[ni]) g.nodes[ni].set_attr(Attribute::make_int("to", static_cast<int64_t>(DataType::kFloat16)));
      continue;
    }
    for (size_t s = 0; s < g.nodes[ni].inputs.size(); ++s) {
      uint32_t v = g.nodes[ni].inputs[s];
      if (v == kNoValue || !is_float(cur(v))) continue;
      DataType need = conv[ni] && is_t_slot(g.nodes[ni], s) ? DataType::kFloat16 : DataType::kFloat32;
      if (g.value(v).is_constant()) {
        if (need == DataType::kFloat16 && cur(v) == DataType::kFloat32) g.nodes[ni].inputs[s] = fp16_copy.at(v);
        continue;
      }
      if (cur(v) != need) {
        uint32_t c = cast_of(v, need);
        g.nodes[ni].inputs[s] = c;
      }
    }
  }
  for (auto& [v, t] : newtype) g.value(v).dtype = t;

  // 5. Graph outputs stay float32 (names unchanged): the producer writes NAME_fp16, a Cast writes NAME.
  if (o.keep_io_types) {
    for (auto& out : g.outputs) {
      if (g.value(out).dtype != DataType::kFloat16 || g.value(out).is_constant()) continue;
      std::string name = g.value(out).name;
      std::string n16 = g.fresh_name(name + "_fp16");
      uint32_t inner = g.add_value(n16);
      Value& iv = g.value(inner);
      const Value& ov = g.value(out);
      iv.dtype = DataType::kFloat16;
      iv.has_shape = ov.has_shape;
      iv.shape = ov.shape;
      iv.dim_params = ov.dim_params;
      for (auto& n : g.nodes) {
        for (auto& i : n.inputs)
          if (i == out) i = inner;
        for (auto& oo : n.outputs)
          if (oo == out) oo = inner;
      }
      g.value(out).dtype = DataType::kFloat32;
      Node c;
      c.op_type = "Cast";
      c.name = node_name(name + "_to_fp32");
      c.inputs = {inner};
      c.outputs = {out};
      c.attrs.push_back(Attribute::make_int("to", static_cast<int64_t>(DataType::kFloat32)));
      g.add_node(std::move(c));
      ++casts;
    }
  }
  RETURN_IF_ERROR(g.finalize().with_context("float16 graph"));
  RETURN_IF_ERROR(g.verify().with_context("float16 graph"));
  // Verify: every used float16 initializer is finite.
  for (const auto& v : g.values) {
    if (!v.is_constant() || v.initializer.dtype() != DataType::kFloat16 || v.consumers.empty()) continue;
    const uint16_t* d = v.initializer.data<uint16_t>();
    for (int64_t i = 0; i < v.initializer.numel(); ++i)
      if ((d[i] & 0x7c00) == 0x7c00) return internal_error("float16 initializer '" + v.name + "' has NaN/Inf");
  }
  json meta{{"tool", "medq"}, {"mode", "fp16"}, {"keep_io_types", o.keep_io_types}, {"block_ops", o.block_ops}};
  m.set_meta("medq.fp16", meta.dump());
  return json{{"mode", "fp16"},
              {"converted_nodes", converted},
              {"blocked_nodes", blocked},
              {"kept_output_layers", kept_output},
              {"casts_inserted", casts},
              {"clamped_values", clamped},
              {"keep_io_types", o.keep_io_types},
              {"size_before_bytes", bytes_before},
              {"size_after_bytes", initializer_bytes(g)}};
}

Result<int> store_weights_fp16(Model& m, const std::vector<std::string>& node_names) {
  Graph& g = m.graph;
  std::set<std::string> names(node_names.begin(), node_names.end());
  int converted = 0;
  const size_t n_nodes = g.nodes.size();
  for (size_t ni = 0; ni < n_nodes; ++ni) {
    if (g.nodes[ni].dead || g.nodes[ni].name.empty() || !names.count(g.nodes[ni].name) || !g.nodes[ni].has_input(1))
      continue;
    const uint32_t w = g.nodes[ni].inputs[1];
    const Value& wv = g.value(w);
    if (!wv.is_constant() || wv.initializer.dtype() != DataType::kFloat32 || wv.initializer.rank() < 2) continue;
    if (wv.consumers.size() != 1 || g.is_graph_output(w)) continue;
    Tensor h = wv.initializer.cast(DataType::kFloat16);
    Tensor back = h.cast(DataType::kFloat32);
    bool finite = true;
    for (int64_t i = 0; i < back.numel() && finite; ++i) finite = std::isfinite(back.data<float>()[i]);
    if (!finite) continue;
    const std::string base = wv.name;
    const Shape shape = wv.initializer.shape();
    const uint32_t hv = g.add_constant(g.fresh_name(base + "_f16"), std::move(h));
    const uint32_t fv = g.add_value(g.fresh_name(base + "_f32"));
    g.value(fv).dtype = DataType::kFloat32;
    g.value(fv).has_shape = true;
    g.value(fv).shape = shape;
    g.value(fv).dim_params.assign(shape.size(), "");
    Node c;
    c.op_type = "Cast";
    c.name = g.value(fv).name;
    c.inputs = {hv};
    c.outputs = {fv};
    c.attrs.push_back(Attribute::make_int("to", static_cast<int64_t>(DataType::kFloat32)));
    g.nodes[ni].inputs[1] = fv;
    g.add_node(std::move(c));
    ++converted;
  }
  RETURN_IF_ERROR(g.finalize().with_context("fp16 weight storage"));
  return converted;
}

}  // namespace medq
