// CPU feature queries (cpuid) that decide which kernels may run.
#pragma once

namespace medq {

// avx512_vnni or avx_vnni: 8-bit dot products accumulate straight into int32. Without it,
// oneDNN's u8s8 kernels (AVX2, AVX-512 without VNNI) sum pairs of u8*s8 products into int16
// with saturation (vpmaddubsw) and give wrong results for large activations and weights.
bool cpu_has_vnni();

}  // namespace medq
