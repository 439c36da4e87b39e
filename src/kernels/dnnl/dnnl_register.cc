// Registers the oneDNN kernels (backend "dnnl"). They take priority over the
// reference kernels (priority 0); their factories return kUnsupported for
// nodes they cannot run so the registry falls back to "ref".
#include "ops/kernel.h"

namespace medq {
namespace dnnl_k {
void register_dnnl_conv(KernelRegistry& r, int priority);    // dnnl_conv.cc: Conv, FusedConv
void register_dnnl_pool(KernelRegistry& r, int priority);    // dnnl_pool.cc: Max/Average/Global pools
void register_dnnl_matmul(KernelRegistry& r, int priority);  // dnnl_matmul.cc: Gemm, MatMul (+ fused)
// dnnl_layout_ops.cc: BatchNormalization, eltwise, Add/Mul/Sub/Div, Concat (layout-assigned nodes only)
void register_dnnl_layout_ops(KernelRegistry& r, int priority);
void register_dnnl_int8(KernelRegistry& r, int priority);  // dnnl_int8.cc: medq QConv, QMatMul
void register_dnnl_norm_ops(KernelRegistry& r, int priority);  // dnnl_norm_ops.cc: Softmax, LogSoftmax, LayerNormalization
}  // namespace dnnl_k

void register_dnnl_kernels(KernelRegistry& r) {
  constexpr int kPriority = 10;
  dnnl_k::register_dnnl_conv(r, kPriority);
  dnnl_k::register_dnnl_pool(r, kPriority);
  dnnl_k::register_dnnl_matmul(r, kPriority);
  dnnl_k::register_dnnl_int8(r, kPriority);
  dnnl_k::register_dnnl_layout_ops(r, kPriority);
  dnnl_k::register_dnnl_norm_ops(r, kPriority);
}

}  // namespace medq
