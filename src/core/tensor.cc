#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace medq {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ",";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

std::shared_ptr<void> aligned_alloc_shared(size_t bytes) {
  size_t n = (bytes + 63) / 64 * 64;
  if (n == 0) n = 64;
  void* p = std::aligned_alloc(64, n);
  if (p == nullptr) throw std::bad_alloc();
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

Tensor::Tensor(DataType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  storage_ = aligned_alloc_shared(nbytes());
  data_ = storage_.get();
}

Tensor Tensor::zeros(DataType dtype, Shape shape) {
  Tensor t(dtype, std::move(shape));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(DataType dtype, Shape shape, void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  return t;
}

Tensor Tensor::wrap_shared(DataType dtype, Shape shape, void* data, std::shared_ptr<void> keepalive) {
  Tensor t = wrap(dtype, std::move(shape), data);
  t.storage_ = std::move(keepalive);
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  CHECK(shape_numel(shape) == numel());
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

template <class F>
static auto visit_numeric(DataType dt, const void* p, int64_t i, F f) {
  switch (dt) {
    case DataType::kFloat32: return f(static_cast<const float*>(p)[i]);
    case DataType::kFloat64: return f(static_cast<const double*>(p)[i]);
    case DataType::kFloat16: return f(half_to_float(static_cast<const uint16_t*>(p)[i]));
    case DataType::kBFloat16: return f(bf16_to_float(static_cast<const uint16_t*>(p)[i]));
    case DataType::kUInt8: return f(static_cast<const uint8_t*>(p)[i]);
    case DataType::kInt8: return f(static_cast<const int8_t*>(p)[i]);
    case DataType::kUInt16: return f(static_cast<const uint16_t*>(p)[i]);
    case DataType::kInt16: return f(static_cast<const int16_t*>(p)[i]);
    case DataType::kInt32: return f(static_cast<const int32_t*>(p)[i]);
    case DataType::kInt64: return f(static_cast<const int64_t*>(p)[i]);
    case DataType::kUInt32: return f(static_cast<const uint32_t*>(p)[i]);
    case DataType::kUInt64: return f(static_cast<const uint64_t*>(p)[i]);
    case DataType::kBool: return f(static_cast<const uint8_t*>(p)[i] ? 1 : 0);
    default: return f(0);
  }
}

double Tensor::get_f64(int64_t i) const {
  return visit_numeric(dtype_, data_, i, [](auto v) { return static_cast<double>(v); });
}

int64_t Tensor::get_i64(int64_t i) const {
  return visit_numeric(dtype_, data_, i, [](auto v) { return static_cast<int64_t>(v); });
}

std::vector<int64_t> Tensor::to_i64_vector() const {
  std::vector<int64_t> r(numel());
  for (int64_t i = 0; i < numel(); ++i) r[i] = get_i64(i);
  return r;
}

std::vector<float> Tensor::to_f32_vector() const {
  std::vector<float> r(numel());
  for (int64_t i = 0; i < numel(); ++i) r[i] = static_cast<float>(get_f64(i));
  return r;
}

template <class T>
static void cast_into(const Tensor& src, T* dst) {
  int64_t n = src.numel();
  if (src.dtype() == DataType::kInt64 || src.dtype() == DataType::kUInt64) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src.get_i64(i));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src.get_f64(i));
  }
}

Tensor Tensor::cast(DataType to) const {
  Tensor r(to, shape_);
  int64_t n = numel();
  switch (to) {
    case DataType::kFloat32: cast_into(*this, r.data<float>()); break;
    case DataType::kFloat64: cast_into(*this, r.data<double>()); break;
    case DataType::kUInt8: cast_into(*this, r.data<uint8_t>()); break;
    case DataType::kInt8: cast_into(*this, r.data<int8_t>()); break;
    case DataType::kUInt16: cast_into(*this, r.data<uint16_t>()); break;
    case DataType::kInt16: cast_into(*this, r.data<int16_t>()); break;
    case DataType::kInt32: cast_into(*this, r.data<int32_t>()); break;
    case DataType::kInt64: cast_into(*this, r.data<int64_t>()); break;
    case DataType::kUInt32: cast_into(*this, r.data<uint32_t>()); break;
    case DataType::kUInt64: cast_into(*this, r.data<uint64_t>()); break;
    case DataType::kBool:
      for (int64_t i = 0; i < n; ++i) r.data<uint8_t>()[i] = get_f64(i) != 0.0;
      break;
    case DataType::kFloat16:
      for (int64_t i = 0; i < n; ++i) r.data<uint16_t>()[i] = float_to_half(static_cast<float>(get_f64(i)));
      break;
    case DataType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) r.data<uint16_t>()[i] = float_to_bf16(static_cast<float>(get_f64(i)));
      break;
    default: CHECK(false && "cast to unsupported dtype");
  }
  return r;
}

}  // namespace medq
