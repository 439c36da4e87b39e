// Fused activations on 8 floats (AVX2/FMA) for medq's own convolution kernel (winograd.cc):
// the ref/activation.h functions, vectorized. exp is the Cephes single-precision
// polynomial (about 2 ulp), so Sigmoid and SiLU agree with the reference to ~1e-7 relative.
#pragma once

#include <immintrin.h>

#include <vector>

#include "kernels/ref/activation.h"

namespace medq {
namespace dnnl_k {

inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f)), _mm256_set1_ps(88.3762626647949f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

struct Avx2Act {
  ActKind kind = ActKind::kNone;
  float p0 = 0.f, p1 = 0.f;  // Clip (lo, hi), LeakyRelu (alpha), HardSigmoid (alpha, beta)

  static bool supported(ActKind k) { return k != ActKind::kTanh && k != ActKind::kGelu; }

  Avx2Act() = default;
  // params: complete_activation_params() of the node.
  Avx2Act(ActKind k, const std::vector<float>& params) : kind(k) {
    if (params.size() > 0) p0 = params[0];
    if (params.size() > 1) p1 = params[1];
  }

  __m256 operator()(__m256 x) const {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
    switch (kind) {
      case ActKind::kNone: return x;
      case ActKind::kRelu: return _mm256_max_ps(x, zero);
      case ActKind::kClip: return _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(p0)), _mm256_set1_ps(p1));
      case ActKind::kLeakyRelu:
        return _mm256_blendv_ps(_mm256_mul_ps(x, _mm256_set1_ps(p0)), x, _mm256_cmp_ps(x, zero, _CMP_GE_OQ));
      case ActKind::kSigmoid: return _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(zero, x))));
      case ActKind::kSiLU: return _mm256_div_ps(x, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(zero, x))));
      case ActKind::kHardSigmoid:
        return _mm256_max_ps(zero, _mm256_min_ps(one, _mm256_fmadd_ps(x, _mm256_set1_ps(p0), _mm256_set1_ps(p1))));
      case ActKind::kHardSwish:
        return _mm256_mul_ps(
            x, _mm256_max_ps(zero, _mm256_min_ps(one, _mm256_fmadd_ps(x, _mm256_set1_ps(1.f / 6.f), _mm256_set1_ps(0.5f)))));
      case ActKind::kTanh:
      case ActKind::kGelu: break;  // not supported(): callers decline these
    }
    return x;
  }
};

}  // namespace dnnl_k
}  // namespace medq
