// Winograd F(2x2, 3x3) convolution for nhwc fp32 activations (medq's own kernel).
//
// oneDNN 2.6 has Winograd convolutions only for AVX-512; on AVX2 every 3x3 convolution runs
// as a direct convolution (9 multiply-adds per output per input channel). F(2x2, 3x3) computes
// each 2x2 output tile from a 4x4 input patch with 16 multiply-adds per input channel instead
// of 36 (2.25x fewer), at the price of three cheap transforms:
//   V = B^T d B      (input patch, per channel)       U = G g G^T  (weights, once at create)
//   M = sum_c V U    (16 independent GEMMs: tiles x C times C x K)
//   Y = A^T M A      (2x2 output tile) + bias (+ residual Sum), activation
// The three stages run fused per chunk of tiles on each thread, so the transformed tiles
// (16 x tiles x C) and the GEMM results stay in L2 and only X, W and Y touch memory: a
// 6x16 AVX2/FMA register-blocked microkernel (12 accumulators) multiplies 6 tiles' rows of V
// by a 16-output-channel panel of U (which stays in L1 across the tiles of the chunk).
// Work items are (chunk, 16 output channels), split across threads in contiguous blocks (a
// thread transforms a chunk's input once for all the channel blocks it owns).
//
// Numerics: F(2x2, 3x3) is the most accurate Winograd variant (its transforms are +-1 and
// 0.5); outputs differ from a direct convolution by a few float32 ulps times the reduction
// length (tested against the reference kernel at 1e-4 relative).
//
// Restrictions (checked by eligible()): 2-D, group 1, 3x3 kernel, stride 1, dilation 1,
// C % 8 == 0, K % 16 == 0, any fused activation but Tanh and Gelu. The dnnl Conv kernel runs it
// for nhwc X and Y (and Sum): by default on CPUs without AVX-512; when the session tunes
// kernels, only where it times faster than oneDNN's implementations of the same shape;
// MEDQ_WINOGRAD=on|off forces it on or off.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/ref/activation.h"

namespace medq {
namespace dnnl_k {

class Winograd3x3 {
 public:
  // Whether the convolution can run here (shape-independent part; spatial sizes are free).
  static bool eligible(int64_t C, int64_t K, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
                       int64_t dil_h, int64_t dil_w, int64_t group, ActKind act);

  // w: K x C x 3 x 3 (OIHW) float32. act_params: complete_activation_params() of the node.
  Winograd3x3(const float* w, int64_t K, int64_t C, ActKind act, const std::vector<float>& act_params);

  // src: nhwc [N, H, W, C]; dst: nhwc [N, OH, OW, K] with OH = H + pt + pb - 2 (pb implied by OH);
  // bias: [K] or null; sum: nhwc like dst or null (may be dst itself: read before written).
  void run(const float* src, float* dst, const float* bias, const float* sum, int64_t N, int64_t H, int64_t W,
           int64_t OH, int64_t OW, int64_t pad_t, int64_t pad_l, int num_threads) const;

  int64_t in_channels() const { return C_; }
  int64_t out_channels() const { return K_; }

 private:
  int64_t K_, C_;
  ActKind act_;
  std::vector<float> act_params_;
  std::shared_ptr<float> u_;  // [K/16][16 positions][C][16 lanes], 64-byte aligned
};

}  // namespace dnnl_k
}  // namespace medq
