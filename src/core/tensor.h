// Tensor: dtype + shape + contiguous row-major (NCHW) storage. Copying a Tensor
// is shallow (storage is shared); clone() makes a deep copy. A tensor either
// owns its storage (64-byte aligned) or wraps external memory (arena, user).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace medq {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // Allocates uninitialised owned storage.
  Tensor(DataType dtype, Shape shape);
  // Allocates zero-filled owned storage.
  static Tensor zeros(DataType dtype, Shape shape);
  // Wraps memory owned elsewhere; the caller keeps it alive while the tensor is used.
  static Tensor wrap(DataType dtype, Shape shape, void* data);
  // Wraps memory kept alive by `keepalive`.
  static Tensor wrap_shared(DataType dtype, Shape shape, void* data, std::shared_ptr<void> keepalive);
  template <class T>
  static Tensor from_vector(const std::vector<T>& v, Shape shape);
  template <class T>
  static Tensor scalar(T v) { return from_vector<T>(std::vector<T>{v}, Shape{}); }

  bool defined() const { return dtype_ != DataType::kUndefined; }
  DataType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <class T> T* data() { return static_cast<T*>(data_); }
  template <class T> const T* data() const { return static_cast<const T*>(data_); }

  // Same storage, new shape (numel must match).
  Tensor reshaped(Shape shape) const;
  Tensor clone() const;
  // Element i converted to double / int64 (any numeric dtype); for small shape tensors.
  double get_f64(int64_t i) const;
  int64_t get_i64(int64_t i) const;
  std::vector<int64_t> to_i64_vector() const;
  std::vector<float> to_f32_vector() const;
  // Converts to another dtype (numeric casting, saturating nothing: C++ casts; bool = != 0).
  Tensor cast(DataType to) const;
  std::string desc() const { return std::string(dtype_name(dtype_)) + shape_str(shape_); }
  const std::shared_ptr<void>& storage() const { return storage_; }

 private:
  DataType dtype_ = DataType::kUndefined;
  Shape shape_;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
};

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& v, Shape shape) {
  Tensor t(DataTypeOf<T>::value, std::move(shape));
  CHECK(static_cast<size_t>(t.numel()) == v.size());
  T* d = t.data<T>();
  for (size_t i = 0; i < v.size(); ++i) d[i] = v[i];
  return t;
}

// 64-byte aligned allocation used for tensors and arenas.
std::shared_ptr<void> aligned_alloc_shared(size_t bytes);

}  // namespace medq
