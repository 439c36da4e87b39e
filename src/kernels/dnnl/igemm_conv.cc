// Implicit-GEMM direct convolution, nhwc fp32: see igemm_conv.h.
#include "kernels/dnnl/igemm_conv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/tensor.h"
#include "kernels/dnnl/avx2_act.h"
#include "kernels/dnnl/avx2_gemm.h"
#include "kernels/dnnl/dnnl_common.h"  // Workspace

namespace medq {
namespace dnnl_k {
namespace {

constexpr int kKb = kGemmCols;   // output channels per panel (two ymm)
constexpr int kRows = kGemmRows;  // output pixels per microkernel call
constexpr int64_t kChunkBlocks = 16;  // at most this many 6-pixel blocks per work item

// Y rows out[i][0:16] = act(sum_{t, c} rows[t][i][c] * b[t][c][0:16] + bias (+ sum[i])).
// rows: taps x 6 pointers to C floats; b: the panel [taps][C][16].
inline void igemm_6x16(const float* const* rows, int64_t taps, int64_t C, const float* b, const float* bias,
                       const float* const* sum, float* const* out, const Avx2Act& act) {
  Acc6x16 acc;
  for (int64_t t = 0; t < taps; ++t, b += C * kKb) acc.fma(rows + t * kRows, b, C);
  const __m256 bias0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 bias1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  auto store = [&](int i, __m256 lo, __m256 hi) {
    lo = _mm256_add_ps(lo, bias0);
    hi = _mm256_add_ps(hi, bias1);
    if (sum) {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(sum[i]));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(sum[i] + 8));
    }
    _mm256_storeu_ps(out[i], act(lo));
    _mm256_storeu_ps(out[i] + 8, act(hi));
  };
  for (int i = 0; i < kRows; ++i) store(i, acc.lo(i), acc.hi(i));
}

}  // namespace

bool IgemmConv::eligible(int64_t C, int64_t K, int64_t kh, int64_t kw, int64_t group, ActKind act) {
  return Avx2Act::supported(act) && group == 1 && kh > 0 && kw > 0 && kh * kw > 1 && C > 0 && C % 8 == 0 && K > 0 &&
         K % kKb == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool IgemmConv::gemm_eligible(int64_t K, int64_t N, ActKind act) {
  return Avx2Act::supported(act) && K > 0 && N > 0 && N % kKb == 0 && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma");
}

IgemmConv::IgemmConv(const float* w, int64_t K, int64_t C, int64_t kh, int64_t kw, ActKind act,
                     const std::vector<float>& act_params)
    : K_(K), C_(C), kh_(kh), kw_(kw), act_(act), act_params_(act_params) {
  const int64_t taps = kh * kw;
  w_ = std::static_pointer_cast<float>(aligned_alloc_shared(static_cast<size_t>(K * C * taps) * sizeof(float)));
  float* p = w_.get();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t)
        p[(((k / kKb) * taps + t) * C + c) * kKb + k % kKb] = w[(k * C + c) * taps + t];
}

void IgemmConv::run(const float* src, float* dst, const float* bias, const float* sum, const Geometry& g,
                    int num_threads) const {
  const int64_t M = g.N * g.OH * g.OW;
  if (M <= 0) return;
  const int64_t taps = kh_ * kw_, C = C_, K = K_;
  const int64_t blocks = (M + kRows - 1) / kRows;
  // Chunks of (nearly) equal size, so that equal numbers of work items are equal work.
  const int64_t chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
  const int64_t chunk_blocks = (blocks + chunks - 1) / chunks;
  const int64_t kblocks = K / kKb;
  // Work item order by the smaller memory traffic: panel-major (each panel stays in L2 while
  // all input rows stream past it: W read once, the input once per panel; small images with
  // large weights, e.g. resnet50's 7x7x512 layer at batch 1) or chunk-major (a chunk's input
  // rows stay in L2 while all panels stream past them: the input read once, W once per chunk).
  const int64_t items = kblocks * chunks;
  const double in_bytes = 4.0 * g.N * g.H * g.W * C, w_bytes = 4.0 * taps * C * K;
  const bool panel_major = w_bytes + in_bytes * kblocks <= in_bytes + w_bytes * chunks;
  const int nthr = static_cast<int>(std::min<int64_t>(std::max(1, num_threads), items));
  const Avx2Act act(act_, act_params_);
  const float* wp = w_.get();

  auto body = [&](int ithr) {
    const int64_t i0 = items * ithr / nthr, i1 = items * (ithr + 1) / nthr;
    if (i0 >= i1) return;
    const float** rows = static_cast<const float**>(
        Workspace::get(Workspace::kSrc, sizeof(const float*) * chunk_blocks * kRows * taps));
    // C zeros (taps in the padding and rows past M read them), then 16 floats of sink for the
    // outputs of rows past M.
    float* zeros = static_cast<float*>(Workspace::get(Workspace::kExtra, sizeof(float) * (C + 2 * kKb)));
    std::memset(zeros, 0, sizeof(float) * (C + 2 * kKb));
    float* sink = zeros + C;
    int64_t have_chunk = -1;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t kb = panel_major ? item / chunks : item % kblocks;
      const int64_t chunk = panel_major ? item % chunks : item / kblocks;
      const int64_t b0 = chunk * chunk_blocks, nb = std::min(chunk_blocks, blocks - b0);
      if (chunk != have_chunk) {
        // rows[(block * taps + t) * 6 + i]: tap t of pixel (b0 + block) * 6 + i.
        for (int64_t blk = 0; blk < nb; ++blk)
          for (int i = 0; i < kRows; ++i) {
            const int64_t p = (b0 + blk) * kRows + i;
            const float** r = rows + blk * taps * kRows + i;
            if (p >= M) {
              for (int64_t t = 0; t < taps; ++t) r[t * kRows] = zeros;
              continue;
            }
            const int64_t n = p / (g.OH * g.OW), oy = p / g.OW % g.OH, ox = p % g.OW;
            const float* img = src + n * g.H * g.W * C;
            for (int64_t ky = 0; ky < kh_; ++ky) {
              const int64_t iy = oy * g.stride_h - g.pad_t + ky * g.dil_h;
              for (int64_t kx = 0; kx < kw_; ++kx) {
                const int64_t ix = ox * g.stride_w - g.pad_l + kx * g.dil_w;
                r[(ky * kw_ + kx) * kRows] =
                    iy >= 0 && iy < g.H && ix >= 0 && ix < g.W ? img + (iy * g.W + ix) * C : zeros;
              }
            }
          }
        have_chunk = chunk;
      }
      const float* panel = wp + kb * taps * C * kKb;
      const float* bk = bias ? bias + kb * kKb : nullptr;
      for (int64_t blk = 0; blk < nb; ++blk) {
        float* out[kRows];
        const float* sm[kRows];
        for (int i = 0; i < kRows; ++i) {
          const int64_t p = (b0 + blk) * kRows + i;
          out[i] = p < M ? dst + p * K + kb * kKb : sink;
          sm[i] = sum && p < M ? sum + p * K + kb * kKb : sink;
        }
        igemm_6x16(rows + blk * taps * kRows, taps, C, panel, bk, sum ? sm : nullptr, out, act);
      }
    }
  };
  run_partitions(nthr, body);
}

}  // namespace dnnl_k
}  // namespace medq
