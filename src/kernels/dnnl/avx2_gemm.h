// The 6x16 AVX2/FMA register block shared by medq's own convolution kernels (Winograd's 16
// GEMMs, the implicit-GEMM convolution): 6 rows x 16 output channels in 12 ymm accumulators;
// their partition loop and their on/off/auto environment switches.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace medq {
namespace dnnl_k {

// MEDQ_WINOGRAD / MEDQ_IGEMM: off | on | auto (unset or anything else) for medq's own kernels.
enum class OwnKernelMode { kOff, kAuto, kOn };
inline OwnKernelMode own_kernel_mode(const char* env) {
  const char* e = std::getenv(env);
  if (!e) return OwnKernelMode::kAuto;
  const std::string v(e);
  if (v == "off" || v == "0") return OwnKernelMode::kOff;
  if (v == "on" || v == "1") return OwnKernelMode::kOn;
  return OwnKernelMode::kAuto;
}

constexpr int kGemmCols = 16;  // output channels per panel (two ymm)
constexpr int kGemmRows = 6;   // rows per block

struct Acc6x16 {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(),
         c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(),
         c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps(),
         c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();

  // acc[i][0:16] += sum_{c < C} a[i][c] * b[c][0:16]; a: 6 row pointers, b: packed [C][16].
  inline void fma(const float* const a[kGemmRows], const float* b, int64_t C) {
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (int64_t c = 0; c < C; ++c, b += kGemmCols) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
      __m256 x = _mm256_broadcast_ss(a0 + c);
      c00 = _mm256_fmadd_ps(x, b0, c00);
      c01 = _mm256_fmadd_ps(x, b1, c01);
      x = _mm256_broadcast_ss(a1 + c);
      c10 = _mm256_fmadd_ps(x, b0, c10);
      c11 = _mm256_fmadd_ps(x, b1, c11);
      x = _mm256_broadcast_ss(a2 + c);
      c20 = _mm256_fmadd_ps(x, b0, c20);
      c21 = _mm256_fmadd_ps(x, b1, c21);
      x = _mm256_broadcast_ss(a3 + c);
      c30 = _mm256_fmadd_ps(x, b0, c30);
      c31 = _mm256_fmadd_ps(x, b1, c31);
      x = _mm256_broadcast_ss(a4 + c);
      c40 = _mm256_fmadd_ps(x, b0, c40);
      c41 = _mm256_fmadd_ps(x, b1, c41);
      x = _mm256_broadcast_ss(a5 + c);
      c50 = _mm256_fmadd_ps(x, b0, c50);
      c51 = _mm256_fmadd_ps(x, b1, c51);
    }
  }

  // Row i's two halves.
  inline __m256 lo(int i) const {
    return i == 0 ? c00 : i == 1 ? c10 : i == 2 ? c20 : i == 3 ? c30 : i == 4 ? c40 : c50;
  }
  inline __m256 hi(int i) const {
    return i == 0 ? c01 : i == 1 ? c11 : i == 2 ? c21 : i == 3 ? c31 : i == 4 ? c41 : c51;
  }
};

// body(0) .. body(nthr - 1) on an OpenMP team of nthr threads (inline when nthr <= 1). The team
// may be smaller than asked (nested regions): each member takes every team-size-th partition,
// so all of them are done whatever its size.
template <typename Body>
void run_partitions(int nthr, const Body& body) {
  if (nthr <= 1) {
    body(0);
    return;
  }
#pragma omp parallel num_threads(nthr)
  for (int ithr = omp_get_thread_num(); ithr < nthr; ithr += omp_get_num_threads()) body(ithr);
}

}  // namespace dnnl_k
}  // namespace medq
