// medq-private fused ops produced by graph passes (never written to saved
// models). Domain kMedqDomain.
//
// FusedConv: inputs X, W, [B], [Sum]; attributes: all of Conv's, plus
//   activation        string: "" | "Relu" | "Clip" | "LeakyRelu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "SiLU" | "Tanh" | "Gelu"
//   activation_params floats: Clip {min, max}; LeakyRelu {alpha}; HardSigmoid {alpha, beta}; others {}
//   Y = activation(conv(X, W) + B + Sum)   (Sum has Y's shape: the residual branch)
// FusedGemm (domain kMedqDomain): Gemm's inputs and attributes + activation / activation_params.
// FusedMatMul: MatMul's inputs + optional bias input 2 (broadcast on the last axis) + activation.
#pragma once

namespace medq {
constexpr const char* kMedqDomain = "medq";
}  // namespace medq
