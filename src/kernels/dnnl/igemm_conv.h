// Implicit-GEMM direct convolution for nhwc fp32 activations (medq's own kernel).
//
// oneDNN 2.6's AVX2 direct convolution runs strided KxK convolutions (resnet's stride-2 3x3
// layers) at about half of the FMA peak; ONNX Runtime's MLAS is 1.3-1.6x faster on them. This
// kernel computes Y[p][k] = sum_{tap, c} X[in(p, tap)][c] * W[k][c][tap] as one GEMM whose A rows
// are gathered through pointers (the "indirection" of XNNPACK's igemm): per output pixel p and
// kernel tap, a pointer to the C input channels of the tapped pixel (nhwc: contiguous), or to a
// row of zeros where the tap falls in the padding. No im2col buffer is written.
//
//   W packed once:  [K/16][taps][C][16 lanes]            (a 16-output-channel panel)
//   microkernel:    6 output pixels x 16 output channels, 12 ymm accumulators; over taps and C
//                   it broadcasts one input value per pixel and multiplies two panel vectors
//   epilogue:       + bias (+ residual Sum, which may be Y itself), activation, stored nhwc
//
// Work items (chunk of 6-pixel blocks, panel) are split across threads in contiguous blocks;
// a chunk's pointers are built once per thread and reused for all its panels.
//
// Restrictions (eligible()): 2-D, group 1, more than one tap (1x1 convolutions are oneDNN's
// jit_1x1 at full speed), C % 8 == 0, K % 16 == 0, any stride / dilation / padding, any
// fused activation but Tanh and Gelu, AVX2 + FMA. The dnnl Conv kernel runs it for nhwc X and Y
// (and Sum) when it is not Winograd's: timed against oneDNN when the session tunes kernels,
// by default on CPUs without AVX-512 for strided convolutions (MEDQ_IGEMM=on|off forces it).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/ref/activation.h"

namespace medq {
namespace dnnl_k {

class IgemmConv {
 public:
  static bool eligible(int64_t C, int64_t K, int64_t kh, int64_t kw, int64_t group, ActKind act);
  // As a plain GEMM Y[M, N] = act(A[M, K] B[K, N] + bias) with a constant B (MatMul / Gemm):
  // constructed with w = B^T ([N][K], a 1x1 "convolution" of K channels to N), run with
  // gemm_geometry(M). Needs N % 16 == 0.
  static bool gemm_eligible(int64_t K, int64_t N, ActKind act);

  // w: K x C x kh x kw (OIHW) float32. act_params: complete_activation_params() of the node.
  IgemmConv(const float* w, int64_t K, int64_t C, int64_t kh, int64_t kw, ActKind act,
            const std::vector<float>& act_params);

  struct Geometry {
    int64_t N, H, W, OH, OW;
    int64_t stride_h, stride_w, dil_h, dil_w, pad_t, pad_l;
  };
  // src: nhwc [N, H, W, C]; dst: nhwc [N, OH, OW, K]; bias: [K] or null; sum: nhwc like dst or
  // null (may be dst itself: each element is read before it is written).
  void run(const float* src, float* dst, const float* bias, const float* sum, const Geometry& g,
           int num_threads) const;
  static Geometry gemm_geometry(int64_t M) { return Geometry{1, 1, M, 1, M, 1, 1, 1, 1, 0, 0}; }

 private:
  int64_t K_, C_, kh_, kw_;
  ActKind act_;
  std::vector<float> act_params_;
  std::shared_ptr<float> w_;  // [K/16][taps][C][16], 64-byte aligned
};

}  // namespace dnnl_k
}  // namespace medq
