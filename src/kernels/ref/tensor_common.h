// Helpers shared by the reference shape / data-movement kernels
// (tensor_*.cc, conv.cc, pool.cc). Private to src/kernels/ref.
//
// Data-movement kernels are dtype-agnostic: they move elements by size with
// dispatch_by_size(), so one implementation serves every dtype.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {

// Work above this many elements is split across OpenMP threads.
constexpr int64_t kParallelThreshold = 1 << 16;

// Common state of a reference kernel: the node label for error messages, the
// opset and the number of node outputs (omitted optional outputs included).
class TensorKernel : public Kernel {
 protected:
  void init_base(const KernelCreateInfo& info) {
    label_ = info.node.label();
    opset_ = info.opset;
    num_outputs_ = info.node.outputs.size();
  }
  Status error(const std::string& msg) const { return invalid_argument(label_ + ": " + msg); }
  Status unsupported_error(const std::string& msg) const { return unsupported(label_ + ": " + msg); }
  // Checks that inputs [0, required) are present and at most `max_inputs` are given.
  Status check_inputs(const TensorList& in, size_t required, size_t max_inputs) const {
    if (in.size() < required || in.size() > max_inputs)
      return error("expected " + std::to_string(required) +
                   (max_inputs != required ? " to " + std::to_string(max_inputs) : std::string()) +
                   " inputs, got " + std::to_string(in.size()));
    for (size_t i = 0; i < required; ++i)
      if (in[i] == nullptr || !in[i]->defined()) return error("input " + std::to_string(i) + " is missing");
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i] && in[i]->defined() && !dtype_supported(in[i]->dtype()))
        return unsupported_error("input " + std::to_string(i) + " has unsupported dtype " +
                                 dtype_name(in[i]->dtype()));
    return Status::ok();
  }
  // Output slot i if the node has it and the caller asked for it, else nullptr.
  static Tensor* out_at(std::vector<Tensor*>& out, size_t i) { return i < out.size() ? out[i] : nullptr; }

  std::string label_;
  int64_t opset_ = 0;
  size_t num_outputs_ = 1;
};

// Input i, or nullptr when absent/omitted/empty-named.
inline const Tensor* opt_input(const TensorList& in, size_t i) {
  return i < in.size() && in[i] != nullptr && in[i]->defined() ? in[i] : nullptr;
}

// Reads an int32/int64 tensor of rank 0 or 1 as a list of int64.
inline Result<std::vector<int64_t>> read_ints(const std::string& label, const char* what, const Tensor& t) {
  if (t.dtype() != DataType::kInt64 && t.dtype() != DataType::kInt32)
    return invalid_argument(label + ": " + what + " must be int64 or int32, got " + dtype_name(t.dtype()));
  if (t.rank() > 1) return invalid_argument(label + ": " + what + " must be 1-D, got shape " + shape_str(t.shape()));
  return t.to_i64_vector();
}

// Calls f(T{}) with an unsigned integer type T of `esize` bytes (1, 2, 4, 8).
template <class F>
Status dispatch_by_size(size_t esize, F&& f) {
  switch (esize) {
    case 1: f(uint8_t{}); return Status::ok();
    case 2: f(uint16_t{}); return Status::ok();
    case 4: f(uint32_t{}); return Status::ok();
    case 8: f(uint64_t{}); return Status::ok();
    default: return unsupported("element size " + std::to_string(esize) + " is not supported");
  }
}

// Row-major strides (in elements) of a shape.
inline std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int i = static_cast<int>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

// Copies src's bytes into dst unless they already share storage.
inline void copy_if_distinct(const Tensor& src, Tensor& dst) {
  if (dst.raw() != src.raw() && src.nbytes()) std::memcpy(dst.raw(), src.raw(), src.nbytes());
}

// Strided gather: dst (contiguous, shape `shape`) [i] = src[sum(idx_d * src_strides_d)] with
// src_offset added. Elements of size sizeof(T). Parallel over the outer dims for big copies.
template <class T>
void strided_copy(T* dst, const T* src, const Shape& shape, const std::vector<int64_t>& src_strides,
                  int64_t src_offset, int num_threads) {
  const int r = static_cast<int>(shape.size());
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  if (r == 0) {
    dst[0] = src[src_offset];
    return;
  }
  const int64_t inner = shape[r - 1];
  const int64_t inner_stride = src_strides[r - 1];
  const int64_t rows = n / inner;
  auto do_row = [&](int64_t row) {
    int64_t off = src_offset, rem = row;
    for (int d = r - 2; d >= 0; --d) {
      off += (rem % shape[d]) * src_strides[d];
      rem /= shape[d];
    }
    T* o = dst + row * inner;
    const T* s = src + off;
    if (inner_stride == 1) {
      std::memcpy(o, s, inner * sizeof(T));
    } else {
      for (int64_t j = 0; j < inner; ++j) o[j] = s[j * inner_stride];
    }
  };
  if (n > kParallelThreshold && rows > 1) {
#pragma omp parallel for num_threads(num_threads)
    for (int64_t row = 0; row < rows; ++row) do_row(row);
  } else {
    for (int64_t row = 0; row < rows; ++row) do_row(row);
  }
}

}  // namespace ref
}  // namespace medq
