#include "kernels/dnnl/dnnl_layout.h"

#include <algorithm>
#include <cstdlib>

#include "kernels/dnnl/winograd.h"
#include "ops/fused.h"

namespace medq {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kPlain: return "plain";
    case Layout::kNChw16c: return "nChw16c";
    case Layout::kNhwc: return "nhwc";
    case Layout::kNChw8c: return "nChw8c";
  }
  return "?";
}

bool parse_layout_name(const std::string& s, Layout* out) {
  if (s == "nhwc") *out = Layout::kNhwc;
  else if (s == "nChw16c") *out = Layout::kNChw16c;
  else if (s == "nChw8c") *out = Layout::kNChw8c;
  else if (s == "off" || s == "plain") *out = Layout::kPlain;
  else return false;
  return true;
}

Layout preferred_blocked_layout() {
  static const Layout l = [] {
    const char* e = std::getenv("MEDQ_DNNL_BLOCKED");
    Layout r = Layout::kNhwc;
    if (e) parse_layout_name(e, &r);
    return r;
  }();
  return l;
}

Layout blocked_layout_for(const Graph& g, const std::string& request) {
  Layout forced;
  if (!request.empty() && request != "auto" && parse_layout_name(request, &forced)) return forced;
  if (std::getenv("MEDQ_DNNL_BLOCKED")) return preferred_blocked_layout();
  if (__builtin_cpu_supports("avx512f")) return Layout::kNhwc;
  double all = 0, wino = 0;
  for (const Node& n : g.nodes) {
    if (n.dead) continue;
    for (uint32_t v : n.inputs)
      if (v != kNoValue && (g.value(v).dtype == DataType::kUInt8 || g.value(v).dtype == DataType::kInt8))
        return Layout::kNhwc;
    const bool conv = (n.domain.empty() && n.op_type == "Conv") || (n.domain == kMedqDomain && n.op_type == "FusedConv");
    if (!conv || n.inputs.size() < 2 || n.outputs.empty() || n.inputs[1] == kNoValue) continue;
    const Value& w = g.value(n.inputs[1]);
    const Value& y = g.value(n.outputs[0]);
    if (!w.has_shape || w.shape.size() != 4 || !y.has_shape || y.shape.size() != 4) continue;
    double macs = 1;
    for (size_t d = 0; d < 4; ++d) macs *= static_cast<double>(std::max<int64_t>(w.shape[d], 1));
    macs *= static_cast<double>(std::max<int64_t>(y.shape[2], 1)) * static_cast<double>(std::max<int64_t>(y.shape[3], 1));
    all += macs;
    const std::vector<int64_t> s = n.attr_ints("strides", {1, 1}), d = n.attr_ints("dilations", {1, 1});
    const int64_t group = n.attr_i("group", 1);
    if (s.size() == 2 && d.size() == 2 &&
        dnnl_k::Winograd3x3::eligible(w.shape[1] * group, w.shape[0], w.shape[2], w.shape[3], s[0], s[1], d[0], d[1],
                                      group, ActKind::kNone))
      wino += macs;
  }
  return all > 0 && wino < 0.1 * all ? Layout::kNChw8c : Layout::kNhwc;
}

namespace dnnl_k {

namespace {
bool is_eltwise(const std::string& op) {
  return op == "Relu" || op == "Clip" || op == "LeakyRelu" || op == "Sigmoid" || op == "HardSwish" || op == "Tanh";
}
bool is_binary(const std::string& op) { return op == "Add" || op == "Mul" || op == "Sub" || op == "Div"; }
}  // namespace

bool needs_layout_marker(const Node& n) {
  if (!n.domain.empty()) return false;
  return n.op_type == "BatchNormalization" || n.op_type == "Concat" || n.op_type == "Transpose" ||
         is_eltwise(n.op_type) || is_binary(n.op_type);
}

bool supports_blocked_io(const Node& n, bool input, size_t i) {
  const std::string& op = n.op_type;
  if (n.domain == kMedqDomain) {
    if (op == "FusedConv") return input ? (i == 0 || i == 3) : i == 0;
    if (op == "FusedBatchNorm") return i == 0;
    if (op == "ConcatBatchNorm") return input ? i >= 4 : i == 0;
    if (op == "QConv") return input ? (i == 0 || i == 3) : i == 0;  // int8: nhwc only (see may_be_blocked)
    if (op == "QAdd") return input ? i < 2 : i == 0;  // all sides one layout
    return false;
  }
  if (!n.domain.empty()) return false;
  if (op == "Conv") return i == 0;
  if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" || op == "GlobalMaxPool") return i == 0;
  if (op == "BatchNormalization") return i == 0;
  if (is_eltwise(op)) return i == 0;
  if (is_binary(op)) return input ? i < 2 : i == 0;
  if (op == "Concat") return true;
  if (op == "Transpose") {  // NCHW <-> NHWC only (dnnl_layout_ops.cc); the other side stays plain
    const std::vector<int64_t> p = n.attr_ints("perm");
    const std::vector<int64_t> to_nhwc{0, 2, 3, 1}, to_nchw{0, 3, 1, 2};
    return i == 0 && p == (input ? to_nhwc : to_nchw);
  }
  if (op == "QuantizeLinear" || op == "DequantizeLinear") return i == 0;  // per tensor (dnnl_int8.cc)
  return false;
}

}  // namespace dnnl_k
}  // namespace medq
