// Activation math shared by the fused kernels (FusedConv, FusedGemm,
// FusedMatMul; ref and dnnl backends). Names and parameter layouts follow
// ops/fused.h:
//   activation        "" | "Relu" | "Clip" | "LeakyRelu" | "Sigmoid" | "HardSigmoid" |
//                     "HardSwish" | "SiLU" | "Tanh" | "Gelu"
//   activation_params Clip {min, max}; LeakyRelu {alpha}; HardSigmoid {alpha, beta}; others {}
// Missing parameters take the ONNX defaults (complete_activation_params()).
// Gelu is the exact erf form (ONNX Gelu approximate="none").
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/status.h"

namespace medq {

enum class ActKind { kNone, kRelu, kClip, kLeakyRelu, kSigmoid, kHardSigmoid, kHardSwish, kSiLU, kTanh, kGelu };

// "" -> kNone; unknown names -> kInvalidArgument.
inline Result<ActKind> parse_activation(const std::string& name) {
  if (name.empty() || name == "None" || name == "none") return ActKind::kNone;
  if (name == "Relu") return ActKind::kRelu;
  if (name == "Clip") return ActKind::kClip;
  if (name == "LeakyRelu") return ActKind::kLeakyRelu;
  if (name == "Sigmoid") return ActKind::kSigmoid;
  if (name == "HardSigmoid") return ActKind::kHardSigmoid;
  if (name == "HardSwish") return ActKind::kHardSwish;
  if (name == "SiLU") return ActKind::kSiLU;
  if (name == "Tanh") return ActKind::kTanh;
  if (name == "Gelu") return ActKind::kGelu;
  return invalid_argument("unknown fused activation '" + name + "'");
}

inline const char* activation_name(ActKind k) {
  switch (k) {
    case ActKind::kNone: return "";
    case ActKind::kRelu: return "Relu";
    case ActKind::kClip: return "Clip";
    case ActKind::kLeakyRelu: return "LeakyRelu";
    case ActKind::kSigmoid: return "Sigmoid";
    case ActKind::kHardSigmoid: return "HardSigmoid";
    case ActKind::kHardSwish: return "HardSwish";
    case ActKind::kSiLU: return "SiLU";
    case ActKind::kTanh: return "Tanh";
    case ActKind::kGelu: return "Gelu";
  }
  return "";
}

// Number of activation_params the kind uses.
inline size_t activation_num_params(ActKind k) {
  switch (k) {
    case ActKind::kClip: return 2;
    case ActKind::kLeakyRelu: return 1;
    case ActKind::kHardSigmoid: return 2;
    default: return 0;
  }
}

// `given` padded with the ONNX defaults: Clip {-inf, +inf} (a missing bound is
// no bound), LeakyRelu {0.01}, HardSigmoid {0.2, 0.5}. Extra entries are kept.
inline std::vector<float> complete_activation_params(ActKind k, std::vector<float> given) {
  std::vector<float> def;
  switch (k) {
    case ActKind::kClip:
      def = {-std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()};
      break;
    case ActKind::kLeakyRelu: def = {0.01f}; break;
    case ActKind::kHardSigmoid: def = {0.2f, 0.5f}; break;
    default: break;
  }
  for (size_t i = given.size(); i < def.size(); ++i) given.push_back(def[i]);
  return given;
}

// y = act(x). `params` points at activation_params (may be nullptr: ONNX defaults).
inline float apply_activation(ActKind kind, float x, const float* params) {
  switch (kind) {
    case ActKind::kNone: return x;
    case ActKind::kRelu: return x > 0.f ? x : 0.f;
    case ActKind::kClip: {
      float lo = params ? params[0] : -std::numeric_limits<float>::infinity();
      float hi = params ? params[1] : std::numeric_limits<float>::infinity();
      return x < lo ? lo : (x > hi ? hi : x);
    }
    case ActKind::kLeakyRelu: {
      float a = params ? params[0] : 0.01f;
      return x >= 0.f ? x : a * x;
    }
    case ActKind::kSigmoid: return 1.f / (1.f + std::exp(-x));
    case ActKind::kHardSigmoid: {
      float a = params ? params[0] : 0.2f, b = params ? params[1] : 0.5f;
      return std::fmax(0.f, std::fmin(1.f, a * x + b));
    }
    case ActKind::kHardSwish: return x * std::fmax(0.f, std::fmin(1.f, x * (1.f / 6.f) + 0.5f));
    case ActKind::kSiLU: return x / (1.f + std::exp(-x));
    case ActKind::kTanh: return std::tanh(x);
    case ActKind::kGelu: return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
  }
  return x;
}

// In-place over n values; the switch is hoisted out of the loop.
inline void apply_activation_inplace(ActKind kind, float* data, int64_t n, const float* params) {
  switch (kind) {
    case ActKind::kNone: return;
    case ActKind::kRelu:
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] > 0.f ? data[i] : 0.f;
      return;
    case ActKind::kClip: {
      const float lo = params ? params[0] : -std::numeric_limits<float>::infinity();
      const float hi = params ? params[1] : std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] < lo ? lo : (data[i] > hi ? hi : data[i]);
      return;
    }
    case ActKind::kLeakyRelu: {
      const float a = params ? params[0] : 0.01f;
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] >= 0.f ? data[i] : a * data[i];
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) data[i] = apply_activation(kind, data[i], params);
      return;
  }
}

}  // namespace medq
