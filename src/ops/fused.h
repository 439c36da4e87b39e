// medq-private fused ops produced by graph passes (never written to saved
// models). Domain kMedqDomain.
//
// FusedConv: inputs X, W, [B], [Sum]; attributes: all of Conv's, plus
//   activation        string: "" | "Relu" | "Clip" | "LeakyRelu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "SiLU" | "Tanh" | "Gelu"
//   activation_params floats: Clip {min, max}; LeakyRelu {alpha}; HardSigmoid {alpha, beta}; others {}
//   Y = activation(conv(X, W) + B + Sum)   (Sum has Y's shape: the residual branch)
// FusedGemm (domain kMedqDomain): Gemm's inputs and attributes + activation / activation_params.
// FusedMatMul: MatMul's inputs + optional bias input 2 (broadcast on the last axis) + activation.
// FusedBatchNorm: BatchNormalization's inputs and attributes (inference only) + activation ("" or "Relu"):
//   Y = activation(BN(X)). Produced by the assign_layouts pass only for the dnnl backend (no ref kernel).
// ConcatBatchNorm: inputs scale, B, mean, var (BatchNormalization's, constant), X0, X1, ... (4-D, concatenated
//   on axis 1); attributes epsilon, activation ("" or "Relu"): Y = activation(BN(Concat(X0, X1, ...))) without
//   materializing the concatenation. From the assign_layouts pass, dnnl backend only (no ref kernel).
// QConv (int8 convolution, from passes/fuse_qdq.cc): inputs X_q (uint8/int8), W_q (int8 constant,
//   Conv's layout), [B] (float32 [O] in real units, or int32 [O] in accumulator units x_scale*w_scale[o]);
//   attributes: Conv's, plus x_scale, x_zero_point, w_scales (1 or O floats; weight zero point 0),
//   y_scale, y_zero_point, output_dtype (1 float32, 2 uint8, 3 int8), activation ("" | Relu | Clip),
//   activation_params (real units).
//   real = x_scale * w_scale[o] * sum((X_q - x_zero_point) * W_q) + B;  Y = act(real) for float32 output,
//   else Y = saturate(round_half_even(act(real) / y_scale) + y_zero_point)
//   Optional 4th input Sum S_q (passes/fuse_qsum.cc, dnnl kernel only; Y's type and shape) with
//   sum_scale, sum_zero_point, pre_sum_clip [lo, hi]:
//   Y = saturate(round_half_even(act(clip(real, lo, hi) + sum_scale * (S_q - sum_zero_point)) / y_scale) + y_zp)
// QMatMul: inputs A_q [..., K] (uint8/int8), B_q [K, N] (int8 constant), [bias [N]]; QConv's
//   quantization attributes with w_scales per column (1 or N). Y [..., N].
// QAdd: inputs A_q, B_q (uint8/int8, same shape); attributes a_scale, a_zero_point, b_scale,
//   b_zero_point, y_scale, y_zero_point, output_dtype (2 | 3), activation ("" | Relu | Clip).
//   Y = quantize(act((A_q - a_zp) * a_scale + (B_q - b_zp) * b_scale)).
#pragma once

namespace medq {
constexpr const char* kMedqDomain = "medq";
}  // namespace medq
