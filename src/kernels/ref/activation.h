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
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/status.h"

namespace medq {

// Branch-free float helpers that GCC vectorizes inside `#pragma omp simd` loops
// at -O2 (no libm calls, no conditionally evaluated FP arithmetic, which
// -ftrapping-math would keep as control flow). Accuracy: a few ulp.

// c ? a : b as a bit blend (both operands are always evaluated).
inline float select_f(bool c, float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof(ia));
  std::memcpy(&ib, &b, sizeof(ib));
  const int32_t m = -static_cast<int32_t>(c);
  const int32_t r = (ia & m) | (ib & ~m);
  float f;
  std::memcpy(&f, &r, sizeof(f));
  return f;
}
inline double select_f(bool c, double a, double b) {
  int64_t ia, ib;
  std::memcpy(&ia, &a, sizeof(ia));
  std::memcpy(&ib, &b, sizeof(ib));
  const int64_t m = -static_cast<int64_t>(c);
  const int64_t r = (ia & m) | (ib & ~m);
  double f;
  std::memcpy(&f, &r, sizeof(f));
  return f;
}

// min(max(x, lo), hi) without branches (NaN stays NaN).
inline float clamp_f(float x, float lo, float hi) {
  const float t = select_f(x < lo, lo, x);
  return select_f(t > hi, hi, t);
}

// e^x for x <= 88 (Cephes expf polynomial); results below FLT_MIN flush to 0.
inline float fast_expf(float x) {
  const float xc = clamp_f(x, -87.33654f, 88.3762626f);
  // n = round(x / ln2) via the 1.5 * 2^23 trick.
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return select_f(x < -87.33654f, 0.f, p * scale);
}

// 1 / (1 + e^-x), accurate in relative terms on both tails.
inline float fast_sigmoidf(float x) {
  const float ax = std::fabs(x);
  const float e = fast_expf(-ax);  // e^-|x|
  const float s = 1.f / (1.f + e);
  return select_f(x >= 0.f, s, e * s);
}

// erf(x): rational minimax approximation on [-4, 4] (as in Eigen / XLA).
inline float fast_erff(float x) {
  const float xc = clamp_f(x, -4.f, 4.f);
  const float x2 = xc * xc;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * xc;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

// tanh(x): rational approximation on [-7.99, 7.99] (as in Eigen), x for tiny |x|.
inline float fast_tanhf(float x) {
  const float xc = clamp_f(x, -7.99881172180175781f, 7.99881172180175781f);
  const float x2 = xc * xc;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * xc;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return select_f(std::fabs(x) < 0.0004f, x, p / q);
}

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
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] > 0.f ? data[i] : 0.f;
      return;
    case ActKind::kClip: {
      const float lo = params ? params[0] : -std::numeric_limits<float>::infinity();
      const float hi = params ? params[1] : std::numeric_limits<float>::infinity();
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = clamp_f(data[i], lo, hi);
      return;
    }
    case ActKind::kLeakyRelu: {
      const float a = params ? params[0] : 0.01f;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = select_f(data[i] >= 0.f, data[i], a * data[i]);
      return;
    }
    // The vectorizable forms below agree with apply_activation() to a few ulp.
    case ActKind::kSigmoid:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = fast_sigmoidf(data[i]);
      return;
    case ActKind::kSiLU:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] * fast_sigmoidf(data[i]);
      return;
    case ActKind::kTanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = fast_tanhf(data[i]);
      return;
    case ActKind::kHardSwish:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] * clamp_f(data[i] * (1.f / 6.f) + 0.5f, 0.f, 1.f);
      return;
    default:
      for (int64_t i = 0; i < n; ++i) data[i] = apply_activation(kind, data[i], params);
      return;
  }
}

}  // namespace medq
