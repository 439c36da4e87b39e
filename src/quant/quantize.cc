#include "quant/quantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include <onnx/onnx_pb.h>

#include "onnx/model_io.h"
#include "passes/pass.h"
#include "runtime/session.h"

namespace medq {

using nlohmann::json;

// ---------------------------------------------------------------------------
// Quantization parameters

static void qrange(DataType dt, bool symmetric, int32_t& qmin, int32_t& qmax) {
  if (dt == DataType::kInt8) {
    qmin = symmetric ? -127 : -128;
    qmax = 127;
  } else {
    qmin = 0;
    qmax = 255;
  }
}

QParams activation_qparams(float lo, float hi, DataType dt, bool symmetric) {
  QParams q;
  q.dtype = dt;
  int32_t qmin, qmax;
  qrange(dt, symmetric, qmin, qmax);
  double rmin = std::min<double>(lo, 0.0), rmax = std::max<double>(hi, 0.0);
  if (!std::isfinite(rmin)) rmin = -std::numeric_limits<float>::max();
  if (!std::isfinite(rmax)) rmax = std::numeric_limits<float>::max();
  if (symmetric) {
    double a = std::max(std::fabs(rmin), std::fabs(rmax));
    rmin = -a;
    rmax = a;
  }
  double scale = (rmax - rmin) / static_cast<double>(qmax - qmin);
  if (!(scale > 0) || !std::isfinite(scale) || static_cast<float>(scale) < std::numeric_limits<float>::min()) {
    q.scale = 1.0f;
    q.zero_point = dt == DataType::kInt8 ? 0 : (symmetric ? 128 : 0);
    return q;
  }
  q.scale = static_cast<float>(scale);
  if (symmetric) {
    q.zero_point = dt == DataType::kInt8 ? 0 : 128;
  } else {
    double zp = std::nearbyint(qmin - rmin / scale);
    q.zero_point = static_cast<int32_t>(std::min<double>(qmax, std::max<double>(qmin, zp)));
  }
  return q;
}

int64_t initializer_bytes(const Graph& g) {
  std::vector<bool> used(g.values.size(), false);
  for (const auto& n : g.nodes) {
    if (n.dead) continue;
    for (uint32_t i : n.inputs)
      if (i != kNoValue) used[i] = true;
  }
  for (uint32_t o : g.outputs) used[o] = true;
  int64_t b = 0;
  for (size_t i = 0; i < g.values.size(); ++i)
    if (used[i] && g.values[i].is_constant()) b += static_cast<int64_t>(g.values[i].initializer.nbytes());
  return b;
}

Result<int64_t> save_model_checked(const Model& m, const std::string& path, bool intermediate_value_info) {
  onnx::ModelProto mp;
  model_to_proto(m, &mp);
  if (!intermediate_value_info) mp.mutable_graph()->clear_value_info();
  std::string bytes;
  if (!mp.SerializeToString(&bytes))
    return unsupported("'" + path + "': model is larger than 2 GB; external data saving is not implemented");
  auto check = load_model_from_bytes(bytes, path);
  if (!check.is_ok()) return internal_error("the written model fails the ONNX checker: " + check.status().message());
  RETURN_IF_ERROR(write_file_atomic(path, bytes));
  return static_cast<int64_t>(bytes.size());
}

// ---------------------------------------------------------------------------
// Preparation

Status raise_opset_to_13(Model& m) {
  int64_t v = m.opset("");
  if (v >= 13) return Status::ok();
  if (v <= 0) return invalid_argument("model imports no default-domain (ai.onnx) opset");
  // Ops whose opset-13 semantics equal their semantics at every opset >= 7 for the
  // attributes they can carry there.
  static const std::set<std::string> kSame = {
      "Conv", "ConvTranspose", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid",
      "Softplus", "Softsign", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "MatMul", "Gemm",
      "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Flatten", "Concat", "Reshape",
      "Transpose", "Identity", "Shape", "Size", "Gather", "Cast", "Exp", "Log", "Sqrt", "Neg", "Abs", "Pow",
      "Reciprocal", "Floor", "Ceil", "Constant", "Tile", "Expand", "Equal", "Less", "Greater", "Not", "And", "Or",
      "Where", "Erf", "InstanceNormalization", "LRN", "Sign", "ConstantOfShape", "Sin", "Cos", "Tan", "Atan",
      "Relu", "Einsum", "Range", "GatherElements", "Sqrt", "MatMulInteger", "QuantizeLinear", "DequantizeLinear"};
  std::vector<std::string> bad;
  for (const auto& n : m.graph.nodes) {
    if (n.dead || !(n.domain.empty() || n.domain == "ai.onnx")) continue;
    bool ok = kSame.count(n.op_type) > 0;
    if (n.op_type == "BatchNormalization") ok = !n.has_attr("spatial");
    if (n.op_type == "Dropout") ok = !n.has_attr("ratio");
    if (n.op_type == "Softmax" || n.op_type == "LogSoftmax" || n.op_type == "Hardmax") {
      // Before 13 the input was coerced to 2-D at `axis`; identical when axis is the last one.
      const Value& x = m.graph.value(n.inputs[0]);
      int64_t axis = n.attr_i("axis", 1);
      ok = x.has_shape && (axis == -1 || axis == static_cast<int64_t>(x.shape.size()) - 1);
    }
    if (n.op_type == "Clip") ok = v >= 11;  // min/max moved from attributes to inputs at 11
    if (n.op_type == "Pad") ok = v >= 11;
    if (n.op_type == "Slice") ok = v >= 10;
    if (!ok && std::find(bad.begin(), bad.end(), n.op_type) == bad.end()) bad.push_back(n.op_type);
  }
  if (!bad.empty()) {
    std::string list;
    for (const auto& b : bad) list += (list.empty() ? "" : ", ") + b;
    return unsupported("model opset " + std::to_string(v) +
                       " is below 13 (needed for per-axis DequantizeLinear) and cannot be raised safely: " + list +
                       " changed semantics by opset 13; re-export the model with opset >= 13");
  }
  for (auto& [d, ver] : m.opset_imports)
    if (d.empty() || d == "ai.onnx") ver = 13;
  if (m.ir_version < 7) m.ir_version = 7;
  return Status::ok();
}

Status prepare_for_quantization(Model& m) {
  PassContext ctx;
  ctx.opset = m.opset("");
  ASSIGN_OR_RETURN(auto passes, make_pipeline({"identity", "fold", "bn", "dce"}));
  RETURN_IF_ERROR(run_passes(m.graph, ctx, passes).with_context("preparing the model"));
  return raise_opset_to_13(m);
}

// ---------------------------------------------------------------------------
// Planning

namespace {

bool is_default_domain(const Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

bool is_float_activation(const Graph& g, uint32_t v) {
  if (v == kNoValue) return false;
  const Value& val = g.value(v);
  return !val.is_constant() && val.dtype == DataType::kFloat32;
}

bool is_float_const(const Graph& g, uint32_t v) {
  return v != kNoValue && g.value(v).is_constant() && g.value(v).initializer.dtype() == DataType::kFloat32;
}

// Activation input slots of an op that static quantization handles; empty if not handled.
std::vector<size_t> activation_slots(const Graph& g, const Node& n) {
  static const std::set<std::string> kUnary = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "MaxPool",
                                               "AveragePool", "GlobalAveragePool", "GlobalMaxPool"};
  const std::string& op = n.op_type;
  std::vector<size_t> s;
  if (op == "Conv") {
    s = {0};
  } else if (op == "Gemm" || op == "MatMul") {
    s = {0};
    if (n.has_input(1) && !g.value(n.inputs[1]).is_constant()) s.push_back(1);
  } else if (op == "Add" || op == "Mul" || op == "Concat") {
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (n.has_input(i) && !g.value(n.inputs[i]).is_constant()) s.push_back(i);
  } else if (kUnary.count(op)) {
    s = {0};
  }
  return s;
}

bool matches_exclude(const Node& n, const std::vector<std::string>& ex) {
  for (const auto& e : ex)
    if (e == n.name || e == n.op_type) return true;
  return false;
}

}  // namespace

Result<StaticPlan> plan_static(const Model& m, const QuantizeOptions& o) {
  const Graph& g = m.graph;
  StaticPlan p;
  for (const auto& e : o.exclude) {
    bool hit = false;
    for (const auto& n : g.nodes) hit |= !n.dead && (n.name == e || n.op_type == e);
    if (!hit) return invalid_argument("--exclude: '" + e + "' matches no node name or op type of the model");
  }
  for (uint32_t ni = 0; ni < g.nodes.size(); ++ni) {
    const Node& n = g.nodes[ni];
    if (n.dead || !is_default_domain(n)) continue;
    auto slots = activation_slots(g, n);
    if (slots.empty()) continue;
    if (matches_exclude(n, o.exclude)) {
      p.excluded.push_back(n.label());
      continue;
    }
    bool ok = n.outputs.size() >= 1 && n.outputs[0] != kNoValue && g.value(n.outputs[0]).dtype == DataType::kFloat32;
    for (size_t s : slots) ok = ok && is_float_activation(g, n.inputs[s]);
    if (n.op_type == "MaxPool" && n.outputs.size() > 1 && n.outputs[1] != kNoValue) ok = false;
    if (!ok) continue;
    p.nodes.push_back(ni);
  }
  // A Relu/Clip whose producer stays float (excluded, or not quantizable) stays float too:
  // quantizing it alone would put a second, wider Q/DQ on the producer's output before the
  // one on the activation (two roundings where the float graph had none). The activation's
  // own Q/DQ still comes from its quantized consumers.
  std::set<uint32_t> planned(p.nodes.begin(), p.nodes.end());
  std::vector<uint32_t> kept;
  for (uint32_t ni : p.nodes) {
    const Node& n = g.nodes[ni];
    if (n.op_type == "Relu" || n.op_type == "Clip") {
      const uint32_t prod = g.value(n.inputs[0]).producer;
      if (prod == kNoNode || !planned.count(prod)) {
        p.float_with_producer.push_back(n.label());
        continue;
      }
    }
    kept.push_back(ni);
  }
  p.nodes = kept;
  for (uint32_t ni : p.nodes) {
    const Node& n = g.nodes[ni];
    for (size_t s : activation_slots(g, n)) p.tensors.insert(g.value(n.inputs[s]).name);
    p.tensors.insert(g.value(n.outputs[0]).name);
  }
  if (p.nodes.empty()) return invalid_argument("the model has no float32 node that static quantization handles");
  return p;
}

// ---------------------------------------------------------------------------
// Writer helpers

namespace {

std::string fresh_node_name(Graph& g, std::set<std::string>& used, const std::string& base) {
  if (used.insert(base).second) return base;
  for (int i = 1;; ++i) {
    std::string n = base + "_" + std::to_string(i);
    if (used.insert(n).second) return n;
  }
}

template <class T>
Tensor scalar_tensor(T v) {
  return Tensor::scalar<T>(v);
}

Tensor zp_tensor(DataType dt, int32_t zp) {
  if (dt == DataType::kInt8) return scalar_tensor<int8_t>(static_cast<int8_t>(zp));
  if (dt == DataType::kInt32) return scalar_tensor<int32_t>(zp);
  return scalar_tensor<uint8_t>(static_cast<uint8_t>(zp));
}

struct WeightQ {
  uint32_t dq_out = kNoValue;
  uint32_t scale_value = kNoValue;  // the DequantizeLinear's scale initializer
  uint32_t q_value = kNoValue;      // the int8 weight initializer
  std::vector<float> scales;  // per channel (size 1 for per-tensor)
  int axis = -1;              // -1: per tensor
};

class Writer {
 public:
  Writer(Model& m) : m_(m), g_(m.graph) {
    for (const auto& n : g_.nodes) node_names_.insert(n.name);
  }

  uint32_t add_const(const std::string& base, Tensor t) { return g_.add_constant(g_.fresh_name(base), std::move(t)); }

  uint32_t add_act(const std::string& base, DataType dt, const Value& like) {
    uint32_t v = g_.add_value(g_.fresh_name(base));
    g_.value(v).dtype = dt;
    g_.value(v).has_shape = like.has_shape;
    g_.value(v).shape = like.shape;
    g_.value(v).dim_params = like.dim_params;
    return v;
  }

  void add_node(const std::string& op, const std::string& base, std::vector<uint32_t> in, std::vector<uint32_t> out,
                std::vector<Attribute> attrs = {}) {
    Node n;
    n.op_type = op;
    n.name = fresh_node_name(g_, node_names_, base);
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    n.attrs = std::move(attrs);
    g_.add_node(std::move(n));
  }

  // Int8 symmetric weight + DequantizeLinear (cached per weight and axis).
  WeightQ quantize_weight(uint32_t w, int axis) {
    auto key = std::make_pair(w, axis);
    auto it = wcache_.find(key);
    if (it != wcache_.end()) return it->second;
    const Tensor& t = g_.value(w).initializer;
    const std::string name = g_.value(w).name;
    const int64_t n = t.numel();
    const float* src = t.data<float>();
    WeightQ r;
    r.axis = axis;
    int64_t channels = 1, inner = n, outer = 1;
    if (axis >= 0) {
      channels = t.dim(axis);
      inner = 1;
      for (int d = axis + 1; d < t.rank(); ++d) inner *= t.dim(d);
      outer = 1;
      for (int d = 0; d < axis; ++d) outer *= t.dim(d);
    }
    std::vector<float> amax(channels, 0.f);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t i = 0; i < inner; ++i) {
          float v = std::fabs(src[(o * channels + c) * inner + i]);
          if (std::isfinite(v)) amax[c] = std::max(amax[c], v);
        }
    r.scales.resize(channels);
    for (int64_t c = 0; c < channels; ++c) r.scales[c] = amax[c] > 0 ? amax[c] / 127.f : 1.f;
    Tensor q(DataType::kInt8, t.shape());
    int8_t* dst = q.data<int8_t>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t i = 0; i < inner; ++i) {
          int64_t k = (o * channels + c) * inner + i;
          float v = std::nearbyint(src[k] / r.scales[c]);
          dst[k] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, std::isnan(v) ? 0.f : v)));
        }
    // The zero point (all 0) is omitted: it is optional for DequantizeLinear, which
    // takes the type from the int8 input (saves a byte per channel and a name).
    uint32_t qv = add_const(name + "_q", q);
    uint32_t sv;
    std::vector<Attribute> attrs;
    if (axis >= 0) {
      sv = add_const(name + "_s", Tensor::from_vector<float>(r.scales, {channels}));
      attrs.push_back(Attribute::make_int("axis", axis));
    } else {
      sv = add_const(name + "_s", scalar_tensor<float>(r.scales[0]));
    }
    Value like = g_.value(w);
    like.initializer = Tensor();
    r.dq_out = add_act(name + "_dq", DataType::kFloat32, like);
    add_node("DequantizeLinear", name + "_DQ", {qv, sv}, {r.dq_out}, attrs);
    r.scale_value = sv;
    r.q_value = qv;
    wcache_[key] = r;
    return r;
  }

  // Int32 bias + DequantizeLinear whose scale is Mul(x_scale, w_scale): the bias scale
  // is not stored (a float per channel) but computed from the two scales the graph
  // already holds; every runtime folds the constant Mul (medq: the "prefold" pass).
  // `xsv` is the scale initializer of the activation's DequantizeLinear.
  // `shift` (empty or one per channel) is added to the float bias first (bias correction).
  uint32_t quantize_bias(uint32_t b, uint32_t xsv, const WeightQ& wq, const std::vector<double>& shift, int* overflow) {
    const Tensor& t = g_.value(b).initializer;
    const std::string name = g_.value(b).name;
    const int64_t n = t.numel();
    const float* src = t.data<float>();
    const float x_scale = g_.value(xsv).initializer.data<float>()[0];
    Tensor q(DataType::kInt32, t.shape());
    int32_t* dst = q.data<int32_t>();
    for (int64_t c = 0; c < n; ++c) {
      float ws = wq.scales.size() == 1 ? wq.scales[0] : wq.scales[c];
      const float bs = x_scale * ws;  // exactly what the float Mul computes
      const double bias = static_cast<double>(src[c]) + (shift.empty() ? 0.0 : shift[c]);
      double v = std::nearbyint(bias / bs);
      if (!(std::fabs(v) <= 2147483647.0)) {
        ++*overflow;
        v = std::isnan(v) ? 0 : (v > 0 ? 2147483647.0 : -2147483647.0);
      }
      dst[c] = static_cast<int32_t>(v);
    }
    // Zero point 0 omitted (optional; the int32 input gives the type).
    uint32_t qv = add_const(name + "_q", q);
    Value scale_like;
    scale_like.has_shape = true;
    if (wq.axis >= 0) {
      scale_like.shape = {n};
      scale_like.dim_params = {""};
    }
    uint32_t sv = add_act(name + "_s", DataType::kFloat32, scale_like);
    add_node("Mul", name + "_S", {xsv, wq.scale_value}, {sv});
    std::vector<Attribute> attrs;
    if (wq.axis >= 0) attrs.push_back(Attribute::make_int("axis", 0));
    Value like = g_.value(b);
    like.initializer = Tensor();
    uint32_t out = add_act(name + "_dq", DataType::kFloat32, like);
    add_node("DequantizeLinear", name + "_DQ", {qv, sv}, {out}, attrs);
    return out;
  }

  // Q -> DQ pair on activation `v`; returns the DQ output.
  // The new names are short ("a<k>_s", "a<k>_q", ...) rather than derived from the
  // activation's own name: exporters' names ("/features/features.0/.../Clip_output_0")
  // would appear a dozen times per tensor and cost ~3% of a MobileNet's int8 file.
  uint32_t insert_qdq(uint32_t v, const QParams& q) {
    const std::string name = "a" + std::to_string(act_count_++);
    uint32_t sv = add_const(name + "_s", scalar_tensor<float>(q.scale));
    // A missing zero point means 0 and makes QuantizeLinear produce uint8, so it is
    // only omitted when it says exactly that (e.g. after a Relu); int8 keeps it.
    const bool zp_implied = q.dtype == DataType::kUInt8 && q.zero_point == 0;
    uint32_t zv = zp_implied ? kNoValue : add_const(name + "_z", zp_tensor(q.dtype, q.zero_point));
    Value like = g_.value(v);
    uint32_t qo = add_act(name + "_q", q.dtype, like);
    uint32_t dqo = add_act(name + "_dq", DataType::kFloat32, like);
    std::vector<uint32_t> qin{v, sv}, dqin{qo, sv};
    if (!zp_implied) {
      qin.push_back(zv);
      dqin.push_back(zv);
    }
    add_node("QuantizeLinear", name + "_Q", qin, {qo});
    add_node("DequantizeLinear", name + "_DQ", dqin, {dqo});
    acts_[dqo] = {v, sv};
    return dqo;
  }

  // The float tensor and the scale initializer behind an activation DQ output of
  // insert_qdq (nullptr for any other value).
  struct ActQdq {
    uint32_t source, scale;
  };
  const ActQdq* act_qdq(uint32_t dq_out) const {
    auto it = acts_.find(dq_out);
    return it == acts_.end() ? nullptr : &it->second;
  }

  Model& m_;
  Graph& g_;
  std::set<std::string> node_names_;
  std::map<std::pair<uint32_t, int>, WeightQ> wcache_;
  int act_count_ = 0;
  std::map<uint32_t, ActQdq> acts_;
};

// Output-channel axis of a constant weight, or -2 when it is not quantized.
int weight_axis(const Graph& g, const Node& n, bool per_channel) {
  if (!n.has_input(1) || !is_float_const(g, n.inputs[1])) return -2;
  const Tensor& w = g.value(n.inputs[1]).initializer;
  int axis = -2;
  if (n.op_type == "Conv" && w.rank() >= 3) axis = 0;
  if (n.op_type == "Gemm" && w.rank() == 2) axis = n.attr_i("transB", 0) ? 0 : 1;
  if (n.op_type == "MatMul" && w.rank() == 2) axis = 1;
  if (axis == -2) return -2;
  return per_channel ? axis : -1;
}

// Bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
// and Bias Correction", with empirical input means): rounding the weights to int8 shifts
// every output channel's mean by (W_q - W) . E[x]; adding the negative of that to the bias
// removes the systematic part of the weight error (largest for depthwise convs, whose 9
// weights per channel average little out). E[x] per input channel comes from calibration
// of the fp32 model; zero padding at the borders is ignored. Returns one shift per output
// channel, or nothing when the shapes do not fit (the bias is then left as it is).
std::vector<double> bias_shift(const Graph& g, const Node& n, uint32_t w, const WeightQ& wq,
                               const std::vector<double>& mean) {
  const Tensor& wf = g.value(w).initializer;
  const Tensor& qi = g.value(wq.q_value).initializer;
  if (wf.dtype() != DataType::kFloat32 || qi.dtype() != DataType::kInt8 || wf.numel() != qi.numel()) return {};
  const float* f = wf.data<float>();
  const int8_t* q = qi.data<int8_t>();
  auto scale = [&](int64_t c) { return static_cast<double>(wq.scales.size() == 1 ? wq.scales[0] : wq.scales[c]); };
  std::vector<double> shift;
  if (n.op_type == "Conv" && wf.rank() >= 3) {
    const int64_t m_out = wf.dim(0), cg = wf.dim(1), group = n.attr_i("group", 1);
    int64_t k = 1;
    for (int d = 2; d < wf.rank(); ++d) k *= wf.dim(d);
    if (group <= 0 || m_out % group || static_cast<int64_t>(mean.size()) != cg * group) return {};
    shift.assign(m_out, 0.0);
    for (int64_t m = 0; m < m_out; ++m) {
      const int64_t gi = m / (m_out / group);
      double e = 0;
      for (int64_t c = 0; c < cg; ++c) {
        double dw = 0;
        for (int64_t i = 0; i < k; ++i) {
          const int64_t idx = (m * cg + c) * k + i;
          dw += q[idx] * scale(m) - f[idx];
        }
        e += dw * mean[gi * cg + c];
      }
      shift[m] = -e;
    }
  } else if (n.op_type == "Gemm" && wf.rank() == 2 && !n.attr_i("transA", 0)) {
    const bool tb = n.attr_i("transB", 0) != 0;
    const int64_t nout = tb ? wf.dim(0) : wf.dim(1), kin = tb ? wf.dim(1) : wf.dim(0);
    if (static_cast<int64_t>(mean.size()) != kin) return {};
    shift.assign(nout, 0.0);
    for (int64_t o = 0; o < nout; ++o) {
      double e = 0;
      for (int64_t i = 0; i < kin; ++i) {
        const int64_t idx = tb ? o * kin + i : i * nout + o;
        e += (q[idx] * scale(o) - f[idx]) * mean[i];
      }
      shift[o] = -e;
    }
  }
  return shift;
}

json qparams_json(const QParams& q) {
  return json{{"scale", q.scale}, {"zero_point", q.zero_point}, {"dtype", dtype_name(q.dtype)}};
}

}  // namespace

Result<json> write_qdq(Model& m, const StaticPlan& plan, const std::map<std::string, StreamingHistogram>& stats,
                       const QuantizeOptions& o) {
  Graph& g = m.graph;
  const int64_t bytes_before = initializer_bytes(g);
  Writer w(m);
  RangeOptions ro;
  ro.method = o.method;
  ro.percentile = o.percentile;
  ro.symmetric = o.symmetric_activations;

  struct ActQ {
    TensorRange range;
    QParams q;
  };
  std::map<std::string, ActQ> acts;
  auto act_q = [&](uint32_t v) -> Result<ActQ> {
    const std::string& name = g.value(v).name;
    auto it = acts.find(name);
    if (it != acts.end()) return it->second;
    auto s = stats.find(name);
    if (s == stats.end() || s->second.count() == 0)
      return invalid_argument("tensor '" + name + "' was never observed during calibration");
    ActQ a;
    a.range = compute_range(s->second, ro);
    a.q = activation_qparams(a.range.lo, a.range.hi, o.activation_dtype, o.symmetric_activations);
    acts[name] = a;
    return a;
  };

  std::set<uint32_t> qnodes(plan.nodes.begin(), plan.nodes.end());
  std::set<uint32_t> skip;  // producer outputs that feed a kept Relu/Clip: no Q/DQ there
  json fused = json::array();
  int32_t qmin, qmax;
  qrange(o.activation_dtype, o.symmetric_activations, qmin, qmax);

  // Conv/Gemm/MatMul/Add -> Relu/Clip.
  for (uint32_t ni : plan.nodes) {
    Node& n = g.nodes[ni];
    if (n.op_type != "Conv" && n.op_type != "Gemm" && n.op_type != "MatMul" && n.op_type != "Add") continue;
    uint32_t t = n.outputs[0];
    const Value& tv = g.value(t);
    if (tv.consumers.size() != 1 || g.is_graph_output(t)) continue;
    uint32_t ri = tv.consumers[0];
    Node& r = g.nodes[ri];
    if (!qnodes.count(ri) || (r.op_type != "Relu" && r.op_type != "Clip")) continue;
    uint32_t rout = r.outputs[0];
    if (g.is_graph_output(rout) && !o.quantize_outputs) {
      skip.insert(t);
      continue;
    }
    ASSIGN_OR_RETURN(ActQ a, act_q(rout));
    bool removable = a.q.zero_point == qmin && !g.is_graph_output(rout);
    // Every reader of the activation must read it through the Q/DQ pair (a float
    // reader, e.g. an excluded node, would see the producer's output without the clamp).
    for (uint32_t c : g.value(rout).consumers) {
      bool via_qdq = false;
      if (qnodes.count(c))
        for (size_t s : activation_slots(g, g.nodes[c])) via_qdq |= g.nodes[c].inputs[s] == rout;
      removable = removable && via_qdq;
    }
    if (removable && r.op_type == "Clip") {
      float cmin = -std::numeric_limits<float>::infinity(), cmax = std::numeric_limits<float>::infinity();
      bool const_bounds = true;
      for (size_t k = 1; k <= 2; ++k) {
        if (!r.has_input(k)) continue;
        const Value& bv = g.value(r.inputs[k]);
        if (!bv.is_constant()) { const_bounds = false; continue; }
        (k == 1 ? cmin : cmax) = static_cast<float>(bv.initializer.get_f64(0));
      }
      float rep_max = (qmax - a.q.zero_point) * a.q.scale;
      removable = const_bounds && cmin == 0 && rep_max <= cmax;
    }
    if (removable) {
      n.outputs[0] = rout;  // the producer now writes the activation's output directly
      r.dead = true;
      qnodes.erase(ri);
      fused.push_back(n.label() + " + " + r.label() + " (removed: the QuantizeLinear clamps at 0)");
    } else {
      skip.insert(t);
      fused.push_back(n.label() + " + " + r.label() + " (kept; Q/DQ after it)");
    }
  }

  // Activation tensors: inputs of quantized nodes (rewired to the DQ output) and their outputs.
  std::vector<uint32_t> order;
  std::set<uint32_t> in_set;
  std::vector<std::pair<uint32_t, size_t>> rewire;  // (node, slot)
  for (uint32_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (!qnodes.count(ni)) continue;
    const Node& n = g.nodes[ni];
    for (size_t s : activation_slots(g, n)) {
      uint32_t v = n.inputs[s];
      if (skip.count(v)) continue;
      rewire.emplace_back(ni, s);
      if (in_set.insert(v).second) order.push_back(v);
    }
    uint32_t out = n.outputs[0];
    if (!skip.count(out) && (!g.is_graph_output(out) || o.quantize_outputs))
      if (in_set.insert(out).second) order.push_back(out);
  }
  std::map<uint32_t, uint32_t> dq_of;
  json layers = json::array();
  for (uint32_t v : order) {
    ASSIGN_OR_RETURN(ActQ a, act_q(v));
    const StreamingHistogram& h = stats.at(g.value(v).name);
    dq_of[v] = w.insert_qdq(v, a.q);
    layers.push_back(json{{"tensor", g.value(v).name}, {"observed_min", h.min()}, {"observed_max", h.max()},
                          {"range", {a.range.lo, a.range.hi}}, {"quantization", qparams_json(a.q)}});
  }
  for (auto [ni, s] : rewire) g.nodes[ni].inputs[s] = dq_of.at(g.nodes[ni].inputs[s]);
  // Quantized graph outputs keep their names: the DQ output takes the name.
  if (o.quantize_outputs) {
    for (auto& out : g.outputs) {
      auto it = dq_of.find(out);
      if (it == dq_of.end()) continue;
      std::string name = g.value(out).name;
      g.value(out).name = g.unique_name(name + "_float");
      g.value(it->second).name = name;
      out = it->second;
    }
  }

  // Weights and biases.
  json weights = json::array();
  int overflow = 0;
  for (uint32_t ni : plan.nodes) {
    if (!qnodes.count(ni)) continue;
    const std::string op = g.nodes[ni].op_type;
    if (op != "Conv" && op != "Gemm" && op != "MatMul") continue;
    int axis = weight_axis(g, g.nodes[ni], o.per_channel);
    if (axis == -2) continue;
    uint32_t wv = g.nodes[ni].inputs[1];
    WeightQ wq = w.quantize_weight(wv, axis);  // may reallocate g.nodes
    Node& n = g.nodes[ni];
    n.inputs[1] = wq.dq_out;
    auto [smin, smax] = std::minmax_element(wq.scales.begin(), wq.scales.end());
    json wj{{"node", n.label()}, {"weight", g.value(wv).name}, {"dtype", "int8"}, {"symmetric", true},
            {"axis", axis >= 0 ? json(axis) : json(nullptr)}, {"channels", wq.scales.size()},
            {"scale_min", *smin}, {"scale_max", *smax}};
    bool bias_ok = n.has_input(2) && is_float_const(g, n.inputs[2]) && g.value(n.inputs[2]).initializer.rank() == 1;
    if (op == "Gemm")
      bias_ok = bias_ok && n.attr_f("alpha", 1.f) == 1.f && n.attr_f("beta", 1.f) == 1.f && axis != 1 &&
                g.value(n.inputs[2]).initializer.numel() == static_cast<int64_t>(g.value(wv).initializer.dim(0));
    if (op == "MatMul") bias_ok = false;
    if (bias_ok && wq.axis >= 0 && g.value(n.inputs[2]).initializer.numel() != static_cast<int64_t>(wq.scales.size()))
      bias_ok = false;
    if (bias_ok) {
      if (const Writer::ActQdq* xq = w.act_qdq(n.inputs[0])) {  // the activation's Q/DQ
        const uint32_t xs = xq->scale;
        uint32_t bv = n.inputs[2];
        std::vector<double> shift;
        if (o.bias_correction) {
          auto st = stats.find(g.value(xq->source).name);
          if (st != stats.end()) shift = bias_shift(g, n, wv, wq, st->second.channel_means());
          if (shift.size() != static_cast<size_t>(g.value(bv).initializer.numel())) shift.clear();
          if (!shift.empty()) {
            double mx = 0;
            for (double d : shift) mx = std::max(mx, std::fabs(d));
            wj["bias_correction_max_abs"] = mx;
          }
        }
        uint32_t bdq = w.quantize_bias(bv, xs, wq, shift, &overflow);
        g.nodes[ni].inputs[2] = bdq;
        wj["bias"] = g.value(bv).name;
        wj["bias_dtype"] = "int32";
      }
    }
    weights.push_back(wj);
  }

  RETURN_IF_ERROR(g.finalize().with_context("quantized graph"));
  RETURN_IF_ERROR(g.verify().with_context("quantized graph"));
  const int64_t bytes_after = initializer_bytes(g);
  json rep{{"mode", "static"},
           {"method", calib_method_name(o.method)},
           {"activations", {{"dtype", dtype_name(o.activation_dtype)}, {"symmetric", o.symmetric_activations}}},
           {"weights", {{"dtype", "int8"}, {"symmetric", true}, {"per_channel", o.per_channel}}},
           {"layers", layers},
           {"weight_layers", weights},
           {"fused_activations", fused},
           {"bias_correction", o.bias_correction},
           {"excluded", plan.excluded},
           {"float_with_producer", plan.float_with_producer},
           {"size_before_bytes", bytes_before},
           {"size_after_bytes", bytes_after},
           {"bias_overflow_clamped", overflow}};
  if (o.method == CalibMethod::kPercentile) rep["percentile"] = o.percentile;
  return rep;
}

// ---------------------------------------------------------------------------
// Static flow

Result<CalibrationResult> calibrate_static(const Model& prepared, const StaticPlan& plan, const QuantizeOptions& o,
                                           const BatchSource& next, const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  SessionOptions so;
  so.optimize = false;  // every planned tensor must exist under its own name
  // ... but the activations between oneDNN kernels are stored nhwc as in inference (plain NCHW
  // made every convolution reorder its output through a fresh buffer and ran oneDNN's reference
  // nchw pooling: a 240x240 single-channel model calibrated at 34 img/s; the observer reads
  // nhwc values as they are).
  so.assign_layouts = true;
  so.layout = "nhwc";
  so.num_threads = o.num_threads;
  ASSIGN_OR_RETURN(auto session, Session::create(prepared, so));
  Calibrator cal(plan.tensors, o.method != CalibMethod::kMinMax, o.num_bins, o.bias_correction);
  RunStats rs;
  rs.observer = [&cal](const Value& v, const Tensor& t, Layout l) { cal.observe(v, t, l); };
  CalibrationResult r;
  for (;;) {
    std::vector<Tensor> inputs;
    ASSIGN_OR_RETURN(bool more, next(inputs));
    if (!more) break;
    auto out = session->run(inputs, &rs);
    if (!out.is_ok()) return out.status().with_context("calibration batch " + std::to_string(cal.batches() + 1));
    cal.count_batch();
    r.samples += inputs.empty() || inputs[0].rank() == 0 ? 1 : inputs[0].dim(0);
    if (progress) progress(r.samples);
  }
  if (r.samples == 0) return invalid_argument("no calibration samples");
  if (cal.channel_layout_error()) return internal_error("calibration observed a blocked-channel activation layout");
  r.batches = cal.batches();
  r.stats = cal.stats();
  for (const auto& [name, h] : r.stats) r.histogram_bytes += static_cast<int64_t>(h.bins().size() * sizeof(int64_t));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void set_quantization_metadata(Model& m, const QuantizeOptions& o, const StaticPlan& plan, int64_t samples,
                               const std::vector<std::string>& fp32_fallback) {
  json meta{{"tool", "medq"},
            {"mode", "static"},
            {"method", calib_method_name(o.method)},
            {"samples", samples},
            {"activations", dtype_name(o.activation_dtype)},
            {"symmetric_activations", o.symmetric_activations},
            {"weights", o.per_channel ? "int8 per-channel" : "int8 per-tensor"},
            {"excluded", plan.excluded}};
  if (!fp32_fallback.empty()) meta["fp32_fallback"] = fp32_fallback;
  if (o.method == CalibMethod::kPercentile) meta["percentile"] = o.percentile;
  m.set_meta("medq.quantization", meta.dump());
}

Result<json> quantize_static(Model& m, const QuantizeOptions& o, const BatchSource& next, const ProgressFn& progress) {
  RETURN_IF_ERROR(prepare_for_quantization(m));
  ASSIGN_OR_RETURN(StaticPlan plan, plan_static(m, o));
  ASSIGN_OR_RETURN(CalibrationResult cal, calibrate_static(m, plan, o, next, progress));
  ASSIGN_OR_RETURN(json rep, write_qdq(m, plan, cal.stats, o));
  rep["samples"] = cal.samples;
  rep["batches"] = cal.batches;
  rep["histogram_bytes"] = cal.histogram_bytes;
  rep["calibration_seconds"] = cal.seconds;
  set_quantization_metadata(m, o, plan, cal.samples);
  return rep;
}

// ---------------------------------------------------------------------------
// Dynamic

Result<json> quantize_dynamic(Model& m, const QuantizeOptions& o) {
  RETURN_IF_ERROR(prepare_for_quantization(m));
  Graph& g = m.graph;
  for (const auto& e : o.exclude) {
    bool hit = false;
    for (const auto& n : g.nodes) hit |= !n.dead && (n.name == e || n.op_type == e);
    if (!hit) return invalid_argument("--exclude: '" + e + "' matches no node name or op type of the model");
  }
  std::vector<std::string> convs;
  for (const auto& n : g.nodes)
    if (is_default_domain(n) && (n.op_type == "Conv" || n.op_type == "ConvTranspose") && !matches_exclude(n, o.exclude))
      convs.push_back(n.label());
  if (!convs.empty())
    return invalid_argument(
        "--mode dynamic: dynamic quantization of Conv is an accuracy trap: the activation range of every "
        "feature map is recomputed per image at run time from a single per-tensor min/max, so outlier pixels "
        "crush the resolution of the rest and the int8 conv is slower than fp32 in ONNX Runtime "
        "(ConvInteger); use --mode static with calibration data (--calib), or --exclude Conv. " +
        std::to_string(convs.size()) + " Conv node(s), first " + convs[0]);
  const int64_t bytes_before = initializer_bytes(g);
  Writer w(m);
  std::map<uint32_t, uint32_t> dq_of;
  std::vector<std::string> excluded;
  json weights = json::array();
  const size_t n_nodes = g.nodes.size();
  for (uint32_t ni = 0; ni < n_nodes; ++ni) {
    if (g.nodes[ni].dead || !is_default_domain(g.nodes[ni])) continue;
    const std::string op = g.nodes[ni].op_type;
    if (op != "MatMul" && op != "Gemm") continue;
    if (matches_exclude(g.nodes[ni], o.exclude)) {
      excluded.push_back(g.nodes[ni].label());
      continue;
    }
    int axis = weight_axis(g, g.nodes[ni], o.per_channel);
    if (axis == -2 || !is_float_activation(g, g.nodes[ni].inputs[0])) continue;
    uint32_t x = g.nodes[ni].inputs[0];
    if (!dq_of.count(x)) {
      const std::string name = g.value(x).name;
      Value like = g.value(x);
      uint32_t xq = w.add_act(name + "_quantized", DataType::kUInt8, like);
      Value sc;
      sc.dtype = DataType::kFloat32;
      sc.has_shape = true;
      uint32_t xs = w.add_act(name + "_scale", DataType::kFloat32, sc);
      sc.dtype = DataType::kUInt8;
      uint32_t xz = w.add_act(name + "_zero_point", DataType::kUInt8, sc);
      uint32_t xdq = w.add_act(name + "_DequantizeLinear_Output", DataType::kFloat32, like);
      w.add_node("DynamicQuantizeLinear", name + "_DynamicQuantizeLinear", {x}, {xq, xs, xz});
      w.add_node("DequantizeLinear", name + "_DequantizeLinear", {xq, xs, xz}, {xdq});
      dq_of[x] = xdq;
    }
    uint32_t wv = g.nodes[ni].inputs[1];
    WeightQ wq = w.quantize_weight(wv, axis);
    g.nodes[ni].inputs[0] = dq_of[x];
    g.nodes[ni].inputs[1] = wq.dq_out;
    weights.push_back(json{{"node", g.nodes[ni].label()}, {"weight", g.value(wv).name},
                           {"axis", axis >= 0 ? json(axis) : json(nullptr)}, {"channels", wq.scales.size()}});
  }
  if (weights.empty()) return invalid_argument("--mode dynamic: the model has no MatMul/Gemm with a constant 2-D weight");
  RETURN_IF_ERROR(g.finalize().with_context("quantized graph"));
  RETURN_IF_ERROR(g.verify().with_context("quantized graph"));
  json meta{{"tool", "medq"}, {"mode", "dynamic"}, {"activations", "uint8 (DynamicQuantizeLinear)"},
            {"weights", o.per_channel ? "int8 per-channel" : "int8 per-tensor"}, {"excluded", excluded}};
  m.set_meta("medq.quantization", meta.dump());
  return json{{"mode", "dynamic"},
              {"weights", {{"dtype", "int8"}, {"symmetric", true}, {"per_channel", o.per_channel}}},
              {"weight_layers", weights},
              {"excluded", excluded},
              {"size_before_bytes", bytes_before},
              {"size_after_bytes", initializer_bytes(g)}};
}

}  // namespace medq
