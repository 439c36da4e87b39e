#include "kernels/dnnl/dnnl_layout.h"

#include <cstdlib>

#include "ops/fused.h"

namespace medq {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kPlain: return "plain";
    case Layout::kNChw16c: return "nChw16c";
    case Layout::kNhwc: return "nhwc";
  }
  return "?";
}

Layout preferred_blocked_layout() {
  static const Layout l = [] {
    const char* e = std::getenv("MEDQ_DNNL_BLOCKED");
    if (!e) return Layout::kNhwc;
    const std::string s(e);
    if (s == "nChw16c") return Layout::kNChw16c;
    if (s == "off" || s == "plain") return Layout::kPlain;
    return Layout::kNhwc;
  }();
  return l;
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
  return n.op_type == "BatchNormalization" || n.op_type == "Concat" || is_eltwise(n.op_type) || is_binary(n.op_type);
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
  if (op == "QuantizeLinear" || op == "DequantizeLinear") return i == 0;  // per tensor (dnnl_int8.cc)
  return false;
}

}  // namespace dnnl_k
}  // namespace medq
