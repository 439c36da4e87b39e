// register_all_ops(): one call per kernel group; each group file registers one
// line per op. Higher priority backends are tried first (dnnl > ref).
#include "ops/kernel.h"

namespace medq {

void register_ref_elementwise(KernelRegistry& r);  // kernels/ref/elementwise.cc, activations, Cast
void register_ref_reduce_norm(KernelRegistry& r);  // kernels/ref/reduce.cc, softmax, norms, matmul/gemm
void register_ref_tensor_ops(KernelRegistry& r);   // kernels/ref/tensor_ops.cc: shape and data movement
void register_ref_nn(KernelRegistry& r);           // kernels/ref/conv.cc, pool.cc: Conv, FusedConv, pooling
void register_dnnl_kernels(KernelRegistry& r);     // kernels/dnnl/*.cc

void register_all_ops(KernelRegistry& r) {
  register_ref_elementwise(r);
  register_ref_reduce_norm(r);
  register_ref_tensor_ops(r);
  register_ref_nn(r);
  register_dnnl_kernels(r);
}

}  // namespace medq
