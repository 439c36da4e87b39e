// Helpers shared by the reference kernels (kernels/ref/elementwise.cc,
// reduce.cc): dtype dispatch over the numeric types, dtype-class checks with
// node-naming errors, numpy broadcasting plans with a parallel segment loop,
// and RefKernel, a Kernel base that runs float16/bfloat16 inputs through the
// float32 implementation (the reference kernels are the oracle, so computing
// half types in float32 is the simple, accurate choice).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "core/tensor.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {

// Above this many elements a loop is worth an OpenMP team.
constexpr int64_t kParallelThreshold = 1 << 16;

template <class T>
struct TypeTag {
  using type = T;
};

// dtype classes (bit mask) used to say which input dtypes an op accepts.
enum DTypeClass : int {
  kClassFloat = 1,     // float32, float64 (+ float16/bfloat16 via RefKernel promotion)
  kClassSigned = 2,    // int8 .. int64
  kClassUnsigned = 4,  // uint8 .. uint64
  kClassBool = 8,
  kClassInt = kClassSigned | kClassUnsigned,
  kClassNumeric = kClassFloat | kClassInt,
  kClassAll = kClassNumeric | kClassBool,
};

inline int dtype_class(DataType dt) {
  switch (dt) {
    case DataType::kFloat32:
    case DataType::kFloat64:
    case DataType::kFloat16:
    case DataType::kBFloat16: return kClassFloat;
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
    case DataType::kInt64: return kClassSigned;
    case DataType::kUInt8:
    case DataType::kUInt16:
    case DataType::kUInt32:
    case DataType::kUInt64: return kClassUnsigned;
    case DataType::kBool: return kClassBool;
    default: return 0;
  }
}

template <class T>
constexpr int type_class() {
  if constexpr (std::is_same_v<T, bool>) return kClassBool;
  else if constexpr (std::is_floating_point_v<T>) return kClassFloat;
  else if constexpr (std::is_signed_v<T>) return kClassSigned;
  else return kClassUnsigned;
}

inline std::string class_names(int classes) {
  std::string r;
  auto add = [&](const char* s) { r += (r.empty() ? "" : "/") + std::string(s); };
  if (classes & kClassFloat) add("float");
  if (classes & kClassSigned) add("signed int");
  if (classes & kClassUnsigned) add("unsigned int");
  if (classes & kClassBool) add("bool");
  return r;
}

// Error unless `dt` belongs to one of `classes`; `label` is Node::label().
inline Status check_dtype(const std::string& label, const char* what, DataType dt, int classes) {
  if (dtype_class(dt) & classes) return Status::ok();
  return invalid_argument(label + ": " + what + " has dtype " + dtype_name(dt) + ", expected " +
                          class_names(classes));
}

// Calls f(TypeTag<T>{}) for the C++ type of a plain (non-half) dtype; f returns Status.
template <class F>
Status dispatch_dtype(DataType dt, F&& f) {
  switch (dt) {
    case DataType::kFloat32: return f(TypeTag<float>{});
    case DataType::kFloat64: return f(TypeTag<double>{});
    case DataType::kInt8: return f(TypeTag<int8_t>{});
    case DataType::kInt16: return f(TypeTag<int16_t>{});
    case DataType::kInt32: return f(TypeTag<int32_t>{});
    case DataType::kInt64: return f(TypeTag<int64_t>{});
    case DataType::kUInt8: return f(TypeTag<uint8_t>{});
    case DataType::kUInt16: return f(TypeTag<uint16_t>{});
    case DataType::kUInt32: return f(TypeTag<uint32_t>{});
    case DataType::kUInt64: return f(TypeTag<uint64_t>{});
    case DataType::kBool: return f(TypeTag<bool>{});
    default: return unsupported(std::string("dtype ") + dtype_name(dt) + " is not supported by this kernel");
  }
}

// Same as dispatch_dtype but only instantiates f for types in `Classes`.
template <int Classes, class F>
Status dispatch_class(DataType dt, F&& f) {
  return dispatch_dtype(dt, [&](auto tag) -> Status {
    using T = typename decltype(tag)::type;
    if constexpr ((type_class<T>() & Classes) != 0) {
      return f(tag);
    } else {
      return unsupported(std::string("dtype ") + dtype_name(dt) + " is not supported by this kernel");
    }
  });
}

// Runs body(begin, end) over [0, n) split across threads when n is large.
template <class Body>
void parallel_range(int64_t n, int num_threads, int64_t threshold, Body body) {
  if (n <= 0) return;
  if (num_threads <= 1 || n < threshold) {
    body(int64_t{0}, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(n, static_cast<int64_t>(num_threads) * 4);
  const int64_t per = (n + chunks - 1) / chunks;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = c * per, e = std::min(n, b + per);
    if (b < e) body(b, e);
  }
}

// Broadcasting of up to kMaxInputs shapes. Dims of the output that are 1 are
// dropped and adjacent dims with the same broadcast pattern merged, so the
// common cases become one or two dims.
struct BroadcastPlan {
  static constexpr int kMaxInputs = 3;
  Shape out_shape;                                 // full numpy output shape
  int64_t numel = 0;
  std::vector<int64_t> dims;                       // collapsed output dims (>= 1 entry)
  std::vector<int64_t> strides[kMaxInputs];        // per input, element strides per collapsed dim (0: broadcast)
  int num_inputs = 0;
  int64_t inner() const { return dims.back(); }
  int64_t inner_stride(int k) const { return strides[k].back(); }
};

// Builds the plan; the error is prefixed with the node label.
inline Result<BroadcastPlan> make_broadcast_plan(const std::string& label, const std::vector<Shape>& shapes) {
  BroadcastPlan p;
  p.num_inputs = static_cast<int>(shapes.size());
  CHECK(p.num_inputs >= 1 && p.num_inputs <= BroadcastPlan::kMaxInputs);
  Shape out = shapes[0];
  for (size_t i = 1; i < shapes.size(); ++i) {
    auto r = broadcast_shapes(out, shapes[i]);
    if (!r.is_ok()) {
      std::string all;
      for (size_t k = 0; k < shapes.size(); ++k) all += (k ? " and " : "") + shape_str(shapes[k]);
      return invalid_argument(label + ": input shapes " + all + " cannot be broadcast");
    }
    out = r.value();
  }
  p.out_shape = out;
  p.numel = shape_numel(out);
  const int rank = static_cast<int>(out.size());
  // Per output dim: bit k set when input k is broadcast along it.
  std::vector<int64_t> dims;
  std::vector<unsigned> masks;
  for (int d = 0; d < rank; ++d) {
    if (out[d] == 1) continue;
    unsigned mask = 0;
    for (int k = 0; k < p.num_inputs; ++k) {
      const Shape& s = shapes[k];
      int off = rank - static_cast<int>(s.size());
      int64_t sd = d < off ? 1 : s[d - off];
      if (sd == 1) mask |= 1u << k;
    }
    if (!dims.empty() && masks.back() == mask) {
      dims.back() *= out[d];
    } else {
      dims.push_back(out[d]);
      masks.push_back(mask);
    }
  }
  if (dims.empty()) {
    dims.push_back(1);
    masks.push_back(0);
  }
  p.dims = dims;
  for (int k = 0; k < p.num_inputs; ++k) {
    std::vector<int64_t>& st = p.strides[k];
    st.assign(dims.size(), 0);
    int64_t s = 1;
    for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
      if (!(masks[d] & (1u << k))) {
        st[d] = s;
        s *= dims[d];
      }
    }
  }
  return p;
}

// Calls seg(out_offset, in_offsets[num_inputs], len) for contiguous output
// segments of at most inner() elements; along a segment input k advances by
// plan.inner_stride(k) (0 or 1). Parallel for large outputs.
template <class Seg>
void broadcast_for_each(const BroadcastPlan& p, int num_threads, Seg seg) {
  const int64_t inner = p.inner();
  const int nd = static_cast<int>(p.dims.size());
  const int ni = p.num_inputs;
  parallel_range(p.numel, num_threads, kParallelThreshold, [&](int64_t begin, int64_t end) {
    int64_t row = begin / inner, col = begin % inner;
    // Odometer over the outer (collapsed) dims.
    std::vector<int64_t> idx(nd, 0);
    int64_t r = row;
    for (int d = nd - 2; d >= 0; --d) {
      idx[d] = r % p.dims[d];
      r /= p.dims[d];
    }
    int64_t off[BroadcastPlan::kMaxInputs];
    for (int k = 0; k < ni; ++k) {
      off[k] = col * p.strides[k][nd - 1];
      for (int d = 0; d < nd - 1; ++d) off[k] += idx[d] * p.strides[k][d];
    }
    int64_t pos = begin;
    while (pos < end) {
      int64_t len = std::min(inner - col, end - pos);
      seg(pos, static_cast<const int64_t*>(off), len);
      pos += len;
      col = 0;
      if (pos >= end) break;
      // next row
      for (int k = 0; k < ni; ++k) off[k] = 0;
      for (int d = nd - 2; d >= 0; --d) {
        if (++idx[d] < p.dims[d]) break;
        idx[d] = 0;
      }
      for (int k = 0; k < ni; ++k)
        for (int d = 0; d < nd - 1; ++d) off[k] += idx[d] * p.strides[k][d];
    }
  });
}

// Binary map over a broadcast plan of two inputs: o[i] = f(a[..], b[..]).
template <class TA, class TB, class TO, class F>
void broadcast_binary(const BroadcastPlan& p, const TA* a, const TB* b, TO* o, int num_threads, F f) {
  const int64_t sa = p.inner_stride(0), sb = p.inner_stride(1);
  broadcast_for_each(p, num_threads, [&](int64_t oo, const int64_t* off, int64_t len) {
    const TA* pa = a + off[0];
    const TB* pb = b + off[1];
    TO* po = o + oo;
    if (sa == 1 && sb == 1) {
      for (int64_t j = 0; j < len; ++j) po[j] = f(pa[j], pb[j]);
    } else if (sa == 0 && sb == 1) {
      const TA va = pa[0];
      for (int64_t j = 0; j < len; ++j) po[j] = f(va, pb[j]);
    } else if (sa == 1 && sb == 0) {
      const TB vb = pb[0];
      for (int64_t j = 0; j < len; ++j) po[j] = f(pa[j], vb);
    } else {
      for (int64_t j = 0; j < len; ++j) po[j] = f(pa[j * sa], pb[j * sb]);
    }
  });
}

inline bool is_half(DataType dt) { return dt == DataType::kFloat16 || dt == DataType::kBFloat16; }

// Kernel base for reference kernels: run() converts float16/bfloat16 inputs to
// float32, calls compute() with float32 temporaries for half outputs, and
// converts those back. Kernels that handle half types themselves (Cast, Where)
// override promote_half() to return false.
class RefKernel : public Kernel {
 public:
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    bool any = false;
    if (promote_half())
      for (const Tensor* t : in)
        if (t && is_half(t->dtype())) any = true;
    if (!any) return compute(in, out, ctx);
    std::vector<Tensor> conv(in.size());
    TensorList in2(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] && is_half(in[i]->dtype())) {
        conv[i] = in[i]->cast(DataType::kFloat32);
        in2[i] = &conv[i];
      } else {
        in2[i] = in[i];
      }
    }
    std::vector<Tensor> tmp(out.size());
    std::vector<Tensor*> out2(out.size());
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] && is_half(out[i]->dtype())) {
        tmp[i] = Tensor(DataType::kFloat32, out[i]->shape());
        out2[i] = &tmp[i];
      } else {
        out2[i] = out[i];
      }
    }
    RETURN_IF_ERROR(compute(in2, out2, ctx));
    for (size_t i = 0; i < out.size(); ++i) {
      if (!tmp[i].defined()) continue;
      const float* s = tmp[i].data<float>();
      uint16_t* d = out[i]->data<uint16_t>();
      const int64_t n = tmp[i].numel();
      if (out[i]->dtype() == DataType::kFloat16)
        for (int64_t j = 0; j < n; ++j) d[j] = float_to_half(s[j]);
      else
        for (int64_t j = 0; j < n; ++j) d[j] = float_to_bf16(s[j]);
    }
    return Status::ok();
  }

 protected:
  // Computes with float16/bfloat16 already replaced by float32 (when promote_half()).
  virtual Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const = 0;
  virtual bool promote_half() const { return true; }
};

// RefKernel that knows its node: label for error messages, opset, output count,
// the input-count check and axis normalization shared by the norm, reduce and
// matmul kernel families.
class NodeRefKernel : public RefKernel {
 protected:
  void init_base(const KernelCreateInfo& info) {
    label_ = info.node.label();
    opset_ = info.opset;
    num_outputs_ = info.node.outputs.size();
  }
  Status error(const std::string& m) const { return invalid_argument(label_ + ": " + m); }
  // Inputs [0, required) present, at most `max` given.
  Status check_count(const TensorList& in, size_t required, size_t max) const {
    if (in.size() < required || in.size() > max)
      return error("expected " + std::to_string(required) +
                   (max != required ? " to " + std::to_string(max) : std::string()) + " inputs, got " +
                   std::to_string(in.size()));
    for (size_t i = 0; i < required; ++i)
      if (in[i] == nullptr || !in[i]->defined()) return error("input " + std::to_string(i) + " is missing");
    return Status::ok();
  }
  // axis in [-rank, rank) (a scalar accepts 0) -> [0, rank).
  Result<int> axis_of(int64_t axis, int rank) const {
    if (axis < -rank || axis >= std::max(rank, 1))
      return error("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
    return static_cast<int>(axis < 0 ? axis + rank : axis);
  }

  std::string label_;
  int64_t opset_ = 0;
  size_t num_outputs_ = 1;
};

// Input i or an error naming the node when it is missing.
inline Result<const Tensor*> required_input(const std::string& label, const TensorList& in, size_t i) {
  if (i >= in.size() || in[i] == nullptr)
    return invalid_argument(label + ": missing required input " + std::to_string(i));
  return in[i];
}

}  // namespace ref
}  // namespace medq
