// Winograd F(2x2, 3x3), nhwc fp32: see winograd.h.
#include "kernels/dnnl/winograd.h"

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

constexpr int kPos = 16;   // 4x4 transformed positions
constexpr int kKb = kGemmCols;   // output channels per GEMM panel (two ymm)
constexpr int kRows = kGemmRows;  // tiles per microkernel call
// Budget for one thread's transformed input chunk (16 x tiles x C floats): about half of a
// 512 KiB L2, leaving room for the GEMM results and the weight panel streaming through.
constexpr int64_t kChunkBytes = 192 * 1024;
// Every chunk streams all of U (16 x C x K floats) once. When U is larger than L2 it comes from
// L3 or memory each time (resnet50's 7x7x512 layer: 16 MiB), so chunks grow to this budget
// instead: fewer passes over U, the chunk itself read from L3.
constexpr int64_t kLargeWeightBytes = 1 << 20;
constexpr int64_t kLargeChunkBytes = 1 << 20;

std::shared_ptr<float> alloc_floats(size_t n) {
  return std::static_pointer_cast<float>(aligned_alloc_shared(std::max<size_t>(n, 16) * sizeof(float)));
}

// acc[6][16] = sum_c a_i[c] * b[c][0:16]; a rows at a + i*lda, b packed [C][16].
inline void gemm_6x16(const float* a, int64_t lda, const float* b, int64_t C, float* m) {
  const float* rows[kRows] = {a, a + lda, a + 2 * lda, a + 3 * lda, a + 4 * lda, a + 5 * lda};
  Acc6x16 acc;
  acc.fma(rows, b, C);
  for (int i = 0; i < kRows; ++i) {
    _mm256_store_ps(m + i * kKb, acc.lo(i));
    _mm256_store_ps(m + i * kKb + 8, acc.hi(i));
  }
}

struct Geometry {
  int64_t N, H, W, C, K, OH, OW, pt, pl;
  int64_t th, tw;  // tiles per column / row
  int64_t tiles() const { return N * th * tw; }
};

// V[p][t][C] for tiles [t0, t0 + nt) (rows nt..rows6 zeroed). `zeros` holds C zero floats:
// taps outside the image read it, so every tile runs the same branch-free loop. Per row y of
// the patch the row transform (B^T d) needs only two input rows, which are loaded again for
// each y (L1 hits) instead of keeping all 16 taps and 16 partial sums live (32 ymm: spills).
void transform_input(const float* src, const Geometry& g, int64_t t0, int64_t nt, int64_t rows6, const float* zeros,
                     float* v) {
  const int64_t C = g.C, tiles_img = g.th * g.tw;
  const int64_t pstride = rows6 * C;  // floats between positions
  // Input rows combined for row y of B^T d: r_y = d[ia[y]] - d[ib[y]] (+ for y = 1).
  static const int ia[4] = {0, 1, 2, 1}, ib[4] = {2, 2, 1, 3};
  for (int64_t i = 0; i < nt; ++i) {
    const int64_t t = t0 + i;
    const int64_t n = t / tiles_img, r = t % tiles_img;
    const int64_t iy0 = (r / g.tw) * 2 - g.pt, ix0 = (r % g.tw) * 2 - g.pl;
    const float* img = src + n * g.H * g.W * C;
    const float* tap[4][4];
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        const int64_t iy = iy0 + y, ix = ix0 + x;
        tap[y][x] = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W ? img + (iy * g.W + ix) * C : zeros;
      }
    float* vt = v + i * C;
    for (int64_t c = 0; c < C; c += 8) {
      for (int y = 0; y < 4; ++y) {
        __m256 rr[4];
        for (int x = 0; x < 4; ++x) {
          const __m256 a = _mm256_loadu_ps(tap[ia[y]][x] + c), b = _mm256_loadu_ps(tap[ib[y]][x] + c);
          rr[x] = y == 1 ? _mm256_add_ps(a, b) : _mm256_sub_ps(a, b);  // d0-d2, d1+d2, d2-d1, d1-d3
        }
        float* o = vt + (y * 4) * pstride + c;
        _mm256_store_ps(o, _mm256_sub_ps(rr[0], rr[2]));
        _mm256_store_ps(o + pstride, _mm256_add_ps(rr[1], rr[2]));
        _mm256_store_ps(o + 2 * pstride, _mm256_sub_ps(rr[2], rr[1]));
        _mm256_store_ps(o + 3 * pstride, _mm256_sub_ps(rr[1], rr[3]));
      }
    }
  }
  for (int64_t i = nt; i < rows6; ++i)
    for (int p = 0; p < kPos; ++p) std::memset(v + p * pstride + i * C, 0, C * sizeof(float));
}

}  // namespace

bool Winograd3x3::eligible(int64_t C, int64_t K, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                           int64_t dil_h, int64_t dil_w, int64_t group, ActKind act) {
  return Avx2Act::supported(act) && group == 1 && kh == 3 && kw == 3 && stride_h == 1 && stride_w == 1 && dil_h == 1 &&
         dil_w == 1 && C > 0 && C % 8 == 0 && K > 0 && K % kKb == 0 && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma");
}

Winograd3x3::Winograd3x3(const float* w, int64_t K, int64_t C, ActKind act, const std::vector<float>& act_params)
    : K_(K), C_(C), act_(act), act_params_(act_params) {
  u_ = alloc_floats(static_cast<size_t>(K) * C * kPos);
  float* u = u_.get();
  // U = G g G^T with G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], in double.
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      const float* g = w + (k * C + c) * 9;
      double t[4][3];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 3; ++j) t[i][j] = G[i][0] * g[0 * 3 + j] + G[i][1] * g[1 * 3 + j] + G[i][2] * g[2 * 3 + j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const double val = t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2];
          const int64_t kb = k / kKb, lane = k % kKb, p = i * 4 + j;
          u[((kb * kPos + p) * C + c) * kKb + lane] = static_cast<float>(val);
        }
    }
}

void Winograd3x3::run(const float* src, float* dst, const float* bias, const float* sum, int64_t N, int64_t H,
                      int64_t W, int64_t OH, int64_t OW, int64_t pad_t, int64_t pad_l, int num_threads) const {
  Geometry g{N, H, W, C_, K_, OH, OW, pad_t, pad_l, (OH + 1) / 2, (OW + 1) / 2};
  const int64_t T = g.tiles();
  if (T <= 0) return;
  const int64_t u_bytes = kPos * C_ * K_ * 4;
  const int64_t budget = u_bytes > kLargeWeightBytes ? kLargeChunkBytes : kChunkBytes;
  const int64_t max_rows = std::max<int64_t>(kRows, budget / (kPos * C_ * 4) / kRows * kRows);
  // Chunks of (nearly) equal size, a multiple of the microkernel's rows.
  const int64_t nchunks = (T + max_rows - 1) / max_rows;
  const int64_t rows = ((T + nchunks - 1) / nchunks + kRows - 1) / kRows * kRows;
  // Work items (chunk, 16 output channels), split across threads in contiguous blocks.
  const int64_t kblocks = K_ / kKb;
  const int64_t chunks = (T + rows - 1) / rows;
  const int64_t items = chunks * kblocks;
  const int nthr = static_cast<int>(std::min<int64_t>(std::max(1, num_threads), items));
  const float* u = u_.get();
  const Avx2Act act(act_, act_params_);
  const int64_t tiles_img = g.th * g.tw;

  auto body = [&](int ithr) {
    const int64_t i0 = items * ithr / nthr, i1 = items * (ithr + 1) / nthr;
    if (i0 >= i1) return;
    // Per-thread buffers (each OpenMP worker has its own workspace and keeps it between runs).
    float* v = static_cast<float*>(Workspace::get(Workspace::kSrc, sizeof(float) * kPos * rows * C_));
    float* m = static_cast<float*>(Workspace::get(Workspace::kDst, sizeof(float) * kPos * rows * kKb));
    float* zeros = static_cast<float*>(Workspace::get(Workspace::kExtra, sizeof(float) * C_));
    std::memset(zeros, 0, C_ * sizeof(float));
    int64_t have_chunk = -1, nt = 0, rows6 = 0;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t chunk = item / kblocks, kb = item % kblocks;
      const int64_t t0 = chunk * rows;
      if (chunk != have_chunk) {
        nt = std::min(rows, T - t0);
        rows6 = (nt + kRows - 1) / kRows * kRows;
        transform_input(src, g, t0, nt, rows6, zeros, v);
        have_chunk = chunk;
      }
      // 16 GEMMs: M[p][t][16] = V[p][t][:] . U[kb][p][:][16]
      for (int p = 0; p < kPos; ++p) {
        const float* up = u + (kb * kPos + p) * C_ * kKb;
        const float* vp = v + p * rows6 * C_;
        float* mp = m + p * rows6 * kKb;
        for (int64_t s = 0; s < rows6; s += kRows) gemm_6x16(vp + s * C_, C_, up, C_, mp + s * kKb);
      }
      // Y = A^T M A per tile, + bias (+ sum), activation.
      const __m256 zero = _mm256_setzero_ps();
      for (int64_t i = 0; i < nt; ++i) {
        const int64_t t = t0 + i;
        const int64_t n = t / tiles_img, r = t % tiles_img;
        const int64_t oy0 = (r / g.tw) * 2, ox0 = (r % g.tw) * 2;
        for (int h = 0; h < 2; ++h) {
          const int64_t ch = kb * kKb + h * 8;
          // A^T M column by column (4 loads each), so only the 8 partial sums stay live.
          const float* mt = m + i * kKb + h * 8;
          auto mload = [&](int y, int x) { return _mm256_load_ps(mt + (y * 4 + x) * rows6 * kKb); };
          __m256 s[2][4];
          for (int x = 0; x < 4; ++x) {
            const __m256 m0 = mload(0, x), m1 = mload(1, x), m2 = mload(2, x), m3 = mload(3, x);
            s[0][x] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
            s[1][x] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
          }
          const __m256 b = bias ? _mm256_loadu_ps(bias + ch) : zero;
          for (int y = 0; y < 2; ++y) {
            const int64_t oy = oy0 + y;
            if (oy >= OH) break;
            __m256 out[2];
            out[0] = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s[y][0], s[y][1]), s[y][2]), b);
            out[1] = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s[y][1], s[y][2]), s[y][3]), b);
            for (int x = 0; x < 2; ++x) {
              const int64_t ox = ox0 + x;
              if (ox >= OW) break;
              const int64_t off = ((n * OH + oy) * OW + ox) * K_ + ch;
              __m256 o = out[x];
              if (sum) o = _mm256_add_ps(o, _mm256_loadu_ps(sum + off));
              o = act(o);
              _mm256_storeu_ps(dst + off, o);
            }
          }
        }
      }
    }
  };
  run_partitions(nthr, body);
}

}  // namespace dnnl_k
}  // namespace medq
