// Reference elementwise kernels (ONNX default domain, opsets 7..18):
//  * broadcasting binary ops: Add Sub Mul Div Mod BitShift, comparisons, logical
//    And/Or/Xor, variadic Max Min Sum Mean, Pow (mixed base/exponent dtypes),
//    PRelu (slope broadcast to X) and Where (three inputs);
//  * unary math (Abs .. IsInf, Not) and activations (Relu .. Gelu), Clip;
//  * Cast and CastLike between every numeric type, bool, float16 and bfloat16.
// float16/bfloat16 inputs are computed in float32 (RefKernel), except Where and
// Cast which move/convert them directly.
//
// The float32 hot loops are written so that GCC vectorizes them under -O2
// (`#pragma omp simd`; no libm calls inside: float32 Sigmoid, Erf and Tanh use
// the polynomial helpers of activation.h, Sqrt uses AVX intrinsics; bit-blend
// selects instead of branches) and are split across OpenMP threads above
// kParallelThreshold elements. Other math (Exp, Log, trig, Elu, ...) calls libm.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/ref/activation.h"
#include "kernels/ref/broadcast.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

// ---------------------------------------------------------------- loops

template <class TX, class TY, class F>
void unary_loop(const TX* x, TY* y, int64_t n, int num_threads, F f) {
  parallel_range(n, num_threads, kParallelThreshold, [&](int64_t b, int64_t e) {
    const TX* xp = x + b;
    TY* yp = y + b;
    const int64_t len = e - b;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) yp[i] = f(xp[i]);
  });
}

// o[i] = f(a[..], b[..]) over a two-input broadcast plan. `o` may alias `a`
// when a has the output's shape (variadic folds).
template <class TA, class TB, class TO, class F>
void binary_loop(const BroadcastPlan& p, const TA* a, const TB* b, TO* o, int num_threads, F f) {
  const int64_t sa = p.inner_stride(0), sb = p.inner_stride(1);
  broadcast_for_each(p, num_threads, [&](int64_t oo, const int64_t* off, int64_t len) {
    const TA* pa = a + off[0];
    const TB* pb = b + off[1];
    TO* po = o + oo;
    if (sa == 1 && sb == 1) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) po[j] = f(pa[j], pb[j]);
    } else if (sa == 0 && sb == 1) {
      const TA va = pa[0];
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) po[j] = f(va, pb[j]);
    } else if (sa == 1 && sb == 0) {
      const TB vb = pb[0];
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) po[j] = f(pa[j], vb);
    } else {
      for (int64_t j = 0; j < len; ++j) po[j] = f(pa[j * sa], pb[j * sb]);
    }
  });
}

template <class T>
constexpr bool kIsSignedInt = std::is_integral_v<T> && std::is_signed_v<T>;
template <class T>
constexpr bool kIsUnsignedInt = std::is_integral_v<T> && !std::is_signed_v<T> && !std::is_same_v<T, bool>;

// Two's complement wrap-around arithmetic for signed integers (no UB on overflow).
template <class T>
inline T add_wrap(T a, T b) {
  if constexpr (kIsSignedInt<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return static_cast<T>(a + b);
  }
}
template <class T>
inline T sub_wrap(T a, T b) {
  if constexpr (kIsSignedInt<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
  } else {
    return static_cast<T>(a - b);
  }
}
template <class T>
inline T mul_wrap(T a, T b) {
  if constexpr (kIsSignedInt<T>) {
    using U = std::make_unsigned_t<T>;
    // uint16 * uint16 promotes to int and could overflow; go through a wide unsigned type.
    using W = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, U>;
    return static_cast<T>(static_cast<W>(static_cast<U>(a)) * static_cast<W>(static_cast<U>(b)));
  } else if constexpr (kIsUnsignedInt<T>) {
    using W = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, T>;
    return static_cast<T>(static_cast<W>(a) * static_cast<W>(b));
  } else {
    return a * b;
  }
}
template <class T>
inline T neg_wrap(T a) {
  if constexpr (kIsSignedInt<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(U(0) - static_cast<U>(a));
  } else {
    return -a;
  }
}

// Integer division: x / 0 gives 0 and INT_MIN / -1 wraps instead of trapping.
template <class T>
inline T int_div(T a, T b) {
  if (b == 0) return 0;
  if constexpr (kIsSignedInt<T>) {
    if (b == -1) return neg_wrap(a);
  }
  return static_cast<T>(a / b);
}

// fmod semantics (sign of the dividend).
template <class T>
inline T trunc_mod(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::fmod(a, b);
  } else {
    if (b == 0) return 0;
    if constexpr (kIsSignedInt<T>) {
      if (b == -1) return 0;
    }
    return static_cast<T>(a % b);
  }
}

// Python/numpy mod semantics (sign of the divisor).
template <class T>
inline T floor_mod(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    T r = std::fmod(a, b);
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  } else if constexpr (kIsSignedInt<T>) {
    T r = trunc_mod(a, b);
    if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
    return r;
  } else {
    return trunc_mod(a, b);
  }
}

// c ? a : b; for floats a bit blend, so that loops stay vectorizable (see activation.h).
template <class T>
inline T sel(bool c, T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return select_f(c, a, b);
  else return c ? a : b;
}
template <class T>
inline T clamp_t(T v, T lo, T hi) {
  const T t = sel(v < lo, lo, v);
  return sel(t > hi, hi, t);
}

// Max/min that propagate NaN (numpy maximum/minimum).
template <class T>
inline T max_nan(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return sel(a < b || b != b, b, a);
  else return a < b ? b : a;
}
template <class T>
inline T min_nan(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) return sel(b < a || b != b, b, a);
  else return b < a ? b : a;
}

// y = sqrt(x). std::sqrt keeps a libm call for errno, which blocks vectorization.
template <class T>
void sqrt_span(const T* x, T* y, int64_t n) {
  int64_t i = 0;
#ifdef __AVX__
  if constexpr (std::is_same_v<T, float>) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
  } else {
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(y + i, _mm256_sqrt_pd(_mm256_loadu_pd(x + i)));
  }
#endif
  for (; i < n; ++i) y[i] = std::sqrt(x[i]);
}
template <class T>
void sqrt_loop(const T* x, T* y, int64_t n, int num_threads) {
  parallel_range(n, num_threads, kParallelThreshold,
                 [&](int64_t b, int64_t e) { sqrt_span(x + b, y + b, e - b); });
}

// ---------------------------------------------------------------- base

class EwKernel : public RefKernel {
 public:
  Status init_base(const KernelCreateInfo& info) {
    label_ = info.node.label();
    opset_ = info.opset;
    return Status::ok();
  }

 protected:
  Status error(const std::string& msg) const { return invalid_argument(label_ + ": " + msg); }
  // Inputs [0, required) must be present; at most `max_inputs` inputs.
  Status check_count(const TensorList& in, size_t required, size_t max_inputs) const {
    if (in.size() < required || in.size() > max_inputs) {
      std::string range = std::to_string(required);
      if (max_inputs != required)
        range += max_inputs == SIZE_MAX ? " or more" : " to " + std::to_string(max_inputs);
      return error("expected " + range + " inputs, got " + std::to_string(in.size()));
    }
    for (size_t i = 0; i < required; ++i)
      if (in[i] == nullptr || !in[i]->defined()) return error("input " + std::to_string(i) + " is missing");
    return Status::ok();
  }
  Status check_class(const char* what, DataType dt, int classes) const {
    return check_dtype(label_, what, dt, classes);
  }
  Status check_same_dtype(const TensorList& in, size_t first, size_t last) const {
    for (size_t i = first + 1; i < last && i < in.size(); ++i) {
      if (in[i] && in[i]->dtype() != in[first]->dtype())
        return error("input " + std::to_string(i) + " has dtype " + dtype_name(in[i]->dtype()) + ", expected " +
                     dtype_name(in[first]->dtype()) + " (the dtype of input " + std::to_string(first) + ")");
    }
    return Status::ok();
  }
  // Numpy broadcast of all shapes; the error lists them and names the node.
  Result<Shape> broadcast_all(const std::vector<Shape>& shapes) const {
    Shape out = shapes.empty() ? Shape{} : shapes[0];
    for (size_t i = 1; i < shapes.size(); ++i) {
      auto r = broadcast_shapes(out, shapes[i]);
      if (!r.is_ok()) {
        std::string all;
        for (size_t k = 0; k < shapes.size(); ++k) all += (k ? " and " : "") + shape_str(shapes[k]);
        return error("input shapes " + all + " cannot be broadcast");
      }
      out = r.value();
    }
    return out;
  }

  std::string label_;
  int64_t opset_ = 0;
};

// ---------------------------------------------------------------- binary

enum class Bin {
  kAdd, kSub, kMul, kDiv, kMod, kFMod, kMax, kMin, kShl, kShr,
  kEq, kLt, kLe, kGt, kGe, kAnd, kOr, kXor,
};

inline bool bin_is_bool_out(Bin op) {
  switch (op) {
    case Bin::kEq: case Bin::kLt: case Bin::kLe: case Bin::kGt: case Bin::kGe:
    case Bin::kAnd: case Bin::kOr: case Bin::kXor: return true;
    default: return false;
  }
}

// o = a op b for inputs of type T (output T or bool).
template <class T>
Status binary_typed(Bin op, const BroadcastPlan& p, const T* a, const T* b, void* out, int th) {
  T* o = static_cast<T*>(out);
  bool* ob = static_cast<bool*>(out);
  if constexpr (std::is_same_v<T, bool>) {
    switch (op) {
      case Bin::kAnd: binary_loop(p, a, b, ob, th, [](bool x, bool y) { return x && y; }); return Status::ok();
      case Bin::kOr: binary_loop(p, a, b, ob, th, [](bool x, bool y) { return x || y; }); return Status::ok();
      case Bin::kXor: binary_loop(p, a, b, ob, th, [](bool x, bool y) { return x != y; }); return Status::ok();
      case Bin::kEq: binary_loop(p, a, b, ob, th, [](bool x, bool y) { return x == y; }); return Status::ok();
      default: return unsupported("operation not defined for bool");
    }
  } else {
    switch (op) {
      case Bin::kAdd: binary_loop(p, a, b, o, th, [](T x, T y) { return add_wrap(x, y); }); break;
      case Bin::kSub: binary_loop(p, a, b, o, th, [](T x, T y) { return sub_wrap(x, y); }); break;
      case Bin::kMul: binary_loop(p, a, b, o, th, [](T x, T y) { return mul_wrap(x, y); }); break;
      case Bin::kDiv:
        if constexpr (std::is_floating_point_v<T>) binary_loop(p, a, b, o, th, [](T x, T y) { return x / y; });
        else binary_loop(p, a, b, o, th, [](T x, T y) { return int_div(x, y); });
        break;
      case Bin::kMod: binary_loop(p, a, b, o, th, [](T x, T y) { return floor_mod(x, y); }); break;
      case Bin::kFMod: binary_loop(p, a, b, o, th, [](T x, T y) { return trunc_mod(x, y); }); break;
      case Bin::kMax: binary_loop(p, a, b, o, th, [](T x, T y) { return max_nan(x, y); }); break;
      case Bin::kMin: binary_loop(p, a, b, o, th, [](T x, T y) { return min_nan(x, y); }); break;
      case Bin::kShl:
      case Bin::kShr:
        if constexpr (kIsUnsignedInt<T>) {
          constexpr T bits = sizeof(T) * 8;
          if (op == Bin::kShl)
            binary_loop(p, a, b, o, th, [](T x, T y) { return y >= bits ? T(0) : static_cast<T>(x << y); });
          else
            binary_loop(p, a, b, o, th, [](T x, T y) { return y >= bits ? T(0) : static_cast<T>(x >> y); });
          break;
        } else {
          return unsupported("BitShift needs unsigned integers");
        }
      case Bin::kEq: binary_loop(p, a, b, ob, th, [](T x, T y) { return x == y; }); break;
      case Bin::kLt: binary_loop(p, a, b, ob, th, [](T x, T y) { return x < y; }); break;
      case Bin::kLe: binary_loop(p, a, b, ob, th, [](T x, T y) { return x <= y; }); break;
      case Bin::kGt: binary_loop(p, a, b, ob, th, [](T x, T y) { return x > y; }); break;
      case Bin::kGe: binary_loop(p, a, b, ob, th, [](T x, T y) { return x >= y; }); break;
      default: return unsupported("logical operation needs bool inputs");
    }
    return Status::ok();
  }
}

// Add Sub Mul Div Mod BitShift, comparisons, And/Or/Xor (two inputs) and the
// variadic Max Min Sum Mean (one or more inputs, folded pairwise into the output).
class BinaryKernel : public EwKernel {
 public:
  enum Variadic { kTwo, kMany, kMean };
  BinaryKernel(Bin op, int classes, Variadic variadic) : op_(op), classes_(classes), variadic_(variadic) {}

  Status init(const KernelCreateInfo& info) {
    RETURN_IF_ERROR(init_base(info));
    const Node& n = info.node;
    if (op_ == Bin::kMod && n.attr_i("fmod", 0) != 0) op_ = Bin::kFMod;
    if (op_ == Bin::kShl) {  // BitShift
      std::string dir = n.attr_s("direction", "");
      if (dir == "RIGHT") op_ = Bin::kShr;
      else if (dir != "LEFT") return error("direction must be \"LEFT\" or \"RIGHT\", got \"" + dir + "\"");
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    if (variadic_ == kTwo) {
      RETURN_IF_ERROR(check_count(in, 2, 2));
    } else {
      RETURN_IF_ERROR(check_count(in, 1, SIZE_MAX));
      for (size_t i = 0; i < in.size(); ++i)
        if (!in[i]) return error("input " + std::to_string(i) + " is missing");
    }
    RETURN_IF_ERROR(check_class("input 0", in[0]->dtype(), classes_));
    RETURN_IF_ERROR(check_same_dtype(in, 0, in.size()));
    std::vector<Shape> shapes;
    for (const Tensor* t : in) shapes.push_back(t->shape());
    ASSIGN_OR_RETURN(Shape s, broadcast_all(shapes));
    out.resize(1);
    out[0] = {bin_is_bool_out(op_) ? DataType::kBool : in[0]->dtype(), s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Tensor& y = *out[0];
    const int th = ctx.num_threads;
    const DataType dt = in[0]->dtype();
    if (in.size() == 2 || variadic_ == kTwo) {
      ASSIGN_OR_RETURN(BroadcastPlan p, make_broadcast_plan(label_, {in[0]->shape(), in[1]->shape()}));
      RETURN_IF_ERROR(dispatch_dtype(dt, [&](auto tag) -> Status {
        using T = typename decltype(tag)::type;
        return binary_typed<T>(op_, p, in[0]->data<T>(), in[1]->data<T>(), y.raw(), th);
      }).with_context(label_));
    } else {
      // y = broadcast(in0), then y = y op in_k for k >= 1.
      ASSIGN_OR_RETURN(BroadcastPlan p0, make_broadcast_plan(label_, {y.shape(), in[0]->shape()}));
      RETURN_IF_ERROR(dispatch_dtype(dt, [&](auto tag) -> Status {
        using T = typename decltype(tag)::type;
        binary_loop(p0, y.data<T>(), in[0]->data<T>(), y.data<T>(), th, [](T, T v) { return v; });
        return Status::ok();
      }));
      for (size_t k = 1; k < in.size(); ++k) {
        ASSIGN_OR_RETURN(BroadcastPlan p, make_broadcast_plan(label_, {y.shape(), in[k]->shape()}));
        RETURN_IF_ERROR(dispatch_dtype(dt, [&](auto tag) -> Status {
          using T = typename decltype(tag)::type;
          return binary_typed<T>(op_, p, y.data<T>(), in[k]->data<T>(), y.raw(), th);
        }).with_context(label_));
      }
    }
    if (variadic_ == kMean && in.size() > 1) {
      const double inv = 1.0 / static_cast<double>(in.size());
      return dispatch_class<kClassFloat>(dt, [&](auto tag) -> Status {
        using T = typename decltype(tag)::type;
        const T s = static_cast<T>(inv);
        unary_loop(y.data<T>(), y.data<T>(), y.numel(), th, [s](T v) { return v * s; });
        return Status::ok();
      });
    }
    return Status::ok();
  }

 private:
  Bin op_;
  int classes_;
  Variadic variadic_;
};

// ---------------------------------------------------------------- Pow

template <class T>
inline T int_pow(T base, int64_t e) {
  if (e < 0) {
    if (base == 1) return 1;
    if constexpr (kIsSignedInt<T>) {
      if (base == -1) return (e & 1) ? T(-1) : T(1);
    }
    return 0;
  }
  T r = 1;
  while (e) {
    if (e & 1) r = mul_wrap(r, base);
    e >>= 1;
    if (e) base = mul_wrap(base, base);
  }
  return r;
}

// Pow(X: T, Y: T1) -> T. Float base with a scalar exponent of 2, 0.5, 1, 3, -1
// takes a vectorized fast path.
class PowKernel : public EwKernel {
 public:
  Status init(const KernelCreateInfo& info) { return init_base(info); }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 2, 2));
    RETURN_IF_ERROR(check_class("input X", in[0]->dtype(), kClassNumeric));
    RETURN_IF_ERROR(check_class("input Y", in[1]->dtype(), kClassNumeric));
    ASSIGN_OR_RETURN(Shape s, broadcast_all({in[0]->shape(), in[1]->shape()}));
    out.resize(1);
    out[0] = {in[0]->dtype(), s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Tensor& y = *out[0];
    const int th = ctx.num_threads;
    const Tensor& xb = *in[0];
    const Tensor& xe = *in[1];
    // Fast paths: float base, one exponent value.
    if (xe.numel() == 1 && y.numel() == xb.numel() &&
        (xb.dtype() == DataType::kFloat32 || xb.dtype() == DataType::kFloat64)) {
      const double e = xe.get_f64(0);
      Status st = dispatch_class<kClassFloat>(xb.dtype(), [&](auto tag) -> Status {
        using T = typename decltype(tag)::type;
        const T* x = xb.data<T>();
        T* o = y.data<T>();
        const int64_t n = y.numel();
        if (e == 2.0) unary_loop(x, o, n, th, [](T v) { return v * v; });
        else if (e == 0.5) sqrt_loop(x, o, n, th);
        else if (e == 1.0) unary_loop(x, o, n, th, [](T v) { return v; });
        else if (e == 3.0) unary_loop(x, o, n, th, [](T v) { return v * v * v; });
        else if (e == -1.0) unary_loop(x, o, n, th, [](T v) { return T(1) / v; });
        else {
          const T te = static_cast<T>(e);
          unary_loop(x, o, n, th, [te](T v) { return std::pow(v, te); });
        }
        return Status::ok();
      });
      return st;
    }
    ASSIGN_OR_RETURN(BroadcastPlan p, make_broadcast_plan(label_, {xb.shape(), xe.shape()}));
    return dispatch_class<kClassNumeric>(xb.dtype(), [&](auto tb) -> Status {
      using T = typename decltype(tb)::type;
      return dispatch_class<kClassNumeric>(xe.dtype(), [&](auto te) -> Status {
        using U = typename decltype(te)::type;
        const T* a = xb.data<T>();
        const U* b = xe.data<U>();
        T* o = y.data<T>();
        if constexpr (std::is_floating_point_v<T>) {
          using C = std::conditional_t<std::is_same_v<T, double> || std::is_same_v<U, double>, double, T>;
          binary_loop(p, a, b, o, th, [](T v, U w) { return static_cast<T>(std::pow(C(v), C(w))); });
        } else if constexpr (std::is_floating_point_v<U>) {
          binary_loop(p, a, b, o, th, [](T v, U w) { return static_cast<T>(std::pow(double(v), double(w))); });
        } else {
          binary_loop(p, a, b, o, th, [](T v, U w) { return int_pow<T>(v, static_cast<int64_t>(w)); });
        }
        return Status::ok();
      });
    });
  }
};

// ---------------------------------------------------------------- PRelu

class PReluKernel : public EwKernel {
 public:
  Status init(const KernelCreateInfo& info) { return init_base(info); }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 2, 2));
    RETURN_IF_ERROR(check_class("input X", in[0]->dtype(), kClassFloat | kClassSigned | kClassUnsigned));
    RETURN_IF_ERROR(check_same_dtype(in, 0, 2));
    ASSIGN_OR_RETURN(Shape s, broadcast_all({in[0]->shape(), in[1]->shape()}));
    if (s != in[0]->shape())
      return error("slope shape " + shape_str(in[1]->shape()) + " is not unidirectionally broadcastable to X shape " +
                   shape_str(in[0]->shape()));
    out.resize(1);
    out[0] = {in[0]->dtype(), s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    ASSIGN_OR_RETURN(BroadcastPlan p, make_broadcast_plan(label_, {in[0]->shape(), in[1]->shape()}));
    return dispatch_class<kClassNumeric>(in[0]->dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      binary_loop(p, in[0]->data<T>(), in[1]->data<T>(), out[0]->data<T>(), ctx.num_threads,
                  [](T x, T s) { return sel(x < T(0), mul_wrap(x, s), x); });
      return Status::ok();
    });
  }
};

// ---------------------------------------------------------------- Where

class WhereKernel : public EwKernel {
 public:
  Status init(const KernelCreateInfo& info) { return init_base(info); }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 3, 3));
    if (in[0]->dtype() != DataType::kBool)
      return error(std::string("condition has dtype ") + dtype_name(in[0]->dtype()) + ", expected bool");
    RETURN_IF_ERROR(check_same_dtype(in, 1, 3));
    if (!dtype_supported(in[1]->dtype()))
      return unsupported(label_ + ": dtype " + dtype_name(in[1]->dtype()) + " is not supported");
    ASSIGN_OR_RETURN(Shape s, broadcast_all({in[0]->shape(), in[1]->shape(), in[2]->shape()}));
    out.resize(1);
    out[0] = {in[1]->dtype(), s};
    return Status::ok();
  }

 protected:
  bool promote_half() const override { return false; }

  template <class T>
  static void select(const BroadcastPlan& p, const bool* c, const T* x, const T* y, T* o, int th) {
    const int64_t sc = p.inner_stride(0), sx = p.inner_stride(1), sy = p.inner_stride(2);
    broadcast_for_each(p, th, [&](int64_t oo, const int64_t* off, int64_t len) {
      const bool* pc = c + off[0];
      const T* px = x + off[1];
      const T* py = y + off[2];
      T* po = o + oo;
      if (sc == 1 && sx == 1 && sy == 1) {
        const uint8_t* pm = reinterpret_cast<const uint8_t*>(pc);
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const T m = T(0) - static_cast<T>(pm[j] != 0);
          po[j] = (px[j] & m) | (py[j] & ~m);
        }
      } else {
        for (int64_t j = 0; j < len; ++j) po[j] = pc[j * sc] ? px[j * sx] : py[j * sy];
      }
    });
  }

  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    ASSIGN_OR_RETURN(BroadcastPlan p,
                     make_broadcast_plan(label_, {in[0]->shape(), in[1]->shape(), in[2]->shape()}));
    const bool* c = in[0]->data<bool>();
    const int th = ctx.num_threads;
    switch (dtype_size(in[1]->dtype())) {
      case 1: select(p, c, in[1]->data<uint8_t>(), in[2]->data<uint8_t>(), out[0]->data<uint8_t>(), th); break;
      case 2: select(p, c, in[1]->data<uint16_t>(), in[2]->data<uint16_t>(), out[0]->data<uint16_t>(), th); break;
      case 4: select(p, c, in[1]->data<uint32_t>(), in[2]->data<uint32_t>(), out[0]->data<uint32_t>(), th); break;
      case 8: select(p, c, in[1]->data<uint64_t>(), in[2]->data<uint64_t>(), out[0]->data<uint64_t>(), th); break;
      default: return unsupported(label_ + ": unsupported element size");
    }
    return Status::ok();
  }
};

// ---------------------------------------------------------------- unary

enum class Un {
  kAbs, kNeg, kSign, kRelu, kNot, kErf,
  // float only
  kReciprocal, kFloor, kCeil, kRound, kSqrt, kExp, kLog, kSin, kCos, kTan, kAsin, kAcos, kAtan, kSinh, kCosh,
  kAsinh, kAcosh, kAtanh, kIsNaN, kIsInf, kLeakyRelu, kElu, kSelu, kCelu, kSigmoid, kHardSigmoid, kHardSwish,
  kSoftplus, kSoftsign, kTanh, kThresholdedRelu, kMish, kGelu, kGeluTanh,
};

struct UnParams {
  double alpha = 0, beta = 0, gamma = 0;
  bool detect_negative = true, detect_positive = true;
};

template <class T>
inline T softplus(T v) {
  return v > T(0) ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
}

template <class T>
Status unary_float(Un op, const UnParams& prm, const T* x, void* yv, int64_t n, int th) {
  T* y = static_cast<T*>(yv);
  bool* yb = static_cast<bool*>(yv);
  auto go = [&](auto f) {
    unary_loop(x, y, n, th, f);
    return Status::ok();
  };
  const T alpha = static_cast<T>(prm.alpha), beta = static_cast<T>(prm.beta), gamma = static_cast<T>(prm.gamma);
  constexpr bool kF32 = std::is_same_v<T, float>;
  switch (op) {
    case Un::kReciprocal: return go([](T v) { return T(1) / v; });
    case Un::kFloor: return go([](T v) { return std::floor(v); });
    case Un::kCeil: return go([](T v) { return std::ceil(v); });
    case Un::kRound: return go([](T v) { return std::nearbyint(v); });  // half to even
    case Un::kSqrt:
      sqrt_loop(x, y, n, th);
      return Status::ok();
    case Un::kExp: return go([](T v) { return std::exp(v); });
    case Un::kLog: return go([](T v) { return std::log(v); });
    case Un::kSin: return go([](T v) { return std::sin(v); });
    case Un::kCos: return go([](T v) { return std::cos(v); });
    case Un::kTan: return go([](T v) { return std::tan(v); });
    case Un::kAsin: return go([](T v) { return std::asin(v); });
    case Un::kAcos: return go([](T v) { return std::acos(v); });
    case Un::kAtan: return go([](T v) { return std::atan(v); });
    case Un::kSinh: return go([](T v) { return std::sinh(v); });
    case Un::kCosh: return go([](T v) { return std::cosh(v); });
    case Un::kAsinh: return go([](T v) { return std::asinh(v); });
    case Un::kAcosh: return go([](T v) { return std::acosh(v); });
    case Un::kAtanh: return go([](T v) { return std::atanh(v); });
    case Un::kErf:
      if constexpr (kF32) return go([](float v) { return fast_erff(v); });
      else return go([](T v) { return std::erf(v); });
    case Un::kIsNaN:
      unary_loop(x, yb, n, th, [](T v) { return v != v; });
      return Status::ok();
    case Un::kIsInf: {
      const bool neg = prm.detect_negative, pos = prm.detect_positive;
      const T inf = std::numeric_limits<T>::infinity();
      unary_loop(x, yb, n, th, [=](T v) { return (pos && v == inf) || (neg && v == -inf); });
      return Status::ok();
    }
    case Un::kLeakyRelu: return go([alpha](T v) { return sel(v < T(0), alpha * v, v); });
    case Un::kElu: return go([alpha](T v) { return v < T(0) ? alpha * std::expm1(v) : v; });
    case Un::kSelu: {
      const T ga = gamma * alpha;
      return go([gamma, ga](T v) { return v > T(0) ? gamma * v : ga * std::expm1(v); });
    }
    case Un::kCelu:
      return go([alpha](T v) { return v > T(0) ? v : alpha * std::expm1(v / alpha); });
    case Un::kSigmoid:
      if constexpr (kF32) return go([](float v) { return fast_sigmoidf(v); });
      else return go([](T v) { return v >= 0 ? T(1) / (T(1) + std::exp(-v)) : std::exp(v) / (T(1) + std::exp(v)); });
    case Un::kHardSigmoid:
      return go([alpha, beta](T v) { return clamp_t(alpha * v + beta, T(0), T(1)); });
    case Un::kHardSwish:
      return go([](T v) { return v * clamp_t(v * T(1.0 / 6.0) + T(0.5), T(0), T(1)); });
    case Un::kSoftplus: return go([](T v) { return softplus(v); });
    case Un::kSoftsign: return go([](T v) { return v / (T(1) + std::abs(v)); });
    case Un::kTanh:
      if constexpr (kF32) return go([](float v) { return fast_tanhf(v); });
      else return go([](T v) { return std::tanh(v); });
    case Un::kThresholdedRelu: return go([alpha](T v) { return sel(v > alpha, v, T(0)); });
    case Un::kMish: return go([](T v) { return v * std::tanh(softplus(v)); });
    case Un::kGelu:
      return go([](T v) { return T(0.5) * v * std::erfc(-v * T(0.70710678118654752440)); });
    case Un::kGeluTanh:
      return go([](T v) {
        const T k = T(0.79788456080286535588);  // sqrt(2/pi)
        return T(0.5) * v * (T(1) + std::tanh(k * (v + T(0.044715) * v * v * v)));
      });
    default: return unsupported("operation not supported for this dtype");
  }
}

template <class T>
Status unary_typed(Un op, const UnParams& prm, const T* x, void* yv, int64_t n, int th) {
  T* y = static_cast<T*>(yv);
  auto go = [&](auto f) {
    unary_loop(x, y, n, th, f);
    return Status::ok();
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (op == Un::kNot) return go([](bool v) { return !v; });
    return unsupported("operation not supported for bool");
  } else {
    switch (op) {
      case Un::kAbs:
        if constexpr (kIsUnsignedInt<T>) return go([](T v) { return v; });
        else if constexpr (kIsSignedInt<T>) return go([](T v) { return v < 0 ? neg_wrap(v) : v; });
        else return go([](T v) { return std::abs(v); });
      case Un::kNeg: return go([](T v) { return neg_wrap(v); });
      case Un::kSign:
        if constexpr (std::is_floating_point_v<T>)
          return go([](T v) { return sel(v > T(0), T(1), sel(v < T(0), T(-1), v)); });  // keeps 0 and NaN
        else return go([](T v) { return static_cast<T>((v > T(0)) - (v < T(0))); });
      case Un::kRelu: return go([](T v) { return sel(v < T(0), T(0), v); });
      default: break;
    }
    if constexpr (std::is_floating_point_v<T>) {
      return unary_float<T>(op, prm, x, yv, n, th);
    } else {
      if (op == Un::kErf) return go([](T v) { return static_cast<T>(std::erf(static_cast<double>(v))); });
      return unsupported("operation not supported for integer dtypes");
    }
  }
}

class UnaryKernel : public EwKernel {
 public:
  UnaryKernel(Un op, int classes) : op_(op), classes_(classes) {}

  Status init(const KernelCreateInfo& info) {
    RETURN_IF_ERROR(init_base(info));
    const Node& n = info.node;
    switch (op_) {
      case Un::kLeakyRelu: prm_.alpha = n.attr_f("alpha", 0.01f); break;
      case Un::kElu: prm_.alpha = n.attr_f("alpha", 1.0f); break;
      case Un::kCelu:
        prm_.alpha = n.attr_f("alpha", 1.0f);
        if (prm_.alpha == 0) return error("alpha must not be 0");
        break;
      case Un::kThresholdedRelu: prm_.alpha = n.attr_f("alpha", 1.0f); break;
      case Un::kSelu:
        prm_.alpha = n.attr_f("alpha", 1.67326319217681884765625f);
        prm_.gamma = n.attr_f("gamma", 1.05070102214813232421875f);
        break;
      case Un::kHardSigmoid:
        prm_.alpha = n.attr_f("alpha", 0.2f);
        prm_.beta = n.attr_f("beta", 0.5f);
        break;
      case Un::kIsInf:
        prm_.detect_negative = n.attr_i("detect_negative", 1) != 0;
        prm_.detect_positive = n.attr_i("detect_positive", 1) != 0;
        break;
      case Un::kGelu: {
        std::string approx = n.attr_s("approximate", "none");
        if (approx == "tanh") op_ = Un::kGeluTanh;
        else if (approx != "none") return error("approximate must be \"none\" or \"tanh\", got \"" + approx + "\"");
        break;
      }
      default: break;
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 1));
    RETURN_IF_ERROR(check_class("input 0", in[0]->dtype(), classes_));
    out.resize(1);
    const bool bool_out = op_ == Un::kIsNaN || op_ == Un::kIsInf;
    out[0] = {bool_out ? DataType::kBool : in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    return dispatch_dtype(in[0]->dtype(), [&](auto tag) -> Status {
             using T = typename decltype(tag)::type;
             return unary_typed<T>(op_, prm_, in[0]->data<T>(), out[0]->raw(), in[0]->numel(), ctx.num_threads);
           })
        .with_context(label_);
  }

 private:
  Un op_;
  int classes_;
  UnParams prm_;
};

// ---------------------------------------------------------------- Clip

// Clip: bounds from the min/max attributes before opset 11, from the optional
// inputs 1 and 2 since. A missing bound is no bound; min > max gives max.
class ClipKernel : public EwKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    RETURN_IF_ERROR(init_base(info));
    use_attrs_ = info.opset < 11;
    if (use_attrs_) {
      attr_min_ = info.node.attr_f("min", std::numeric_limits<float>::lowest());
      attr_max_ = info.node.attr_f("max", std::numeric_limits<float>::max());
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, use_attrs_ ? 1 : 3));
    RETURN_IF_ERROR(check_class("input 0", in[0]->dtype(), use_attrs_ ? kClassFloat : kClassNumeric));
    for (size_t i = 1; i < in.size(); ++i) {
      if (!in[i]) continue;
      const char* what = i == 1 ? "min" : "max";
      if (in[i]->dtype() != in[0]->dtype())
        return error(std::string(what) + " has dtype " + dtype_name(in[i]->dtype()) + ", expected " +
                     dtype_name(in[0]->dtype()));
      if (in[i]->numel() != 1)
        return error(std::string(what) + " must be a scalar, got shape " + shape_str(in[i]->shape()));
    }
    out.resize(1);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor* tmin = in.size() > 1 ? in[1] : nullptr;
    const Tensor* tmax = in.size() > 2 ? in[2] : nullptr;
    return dispatch_class<kClassNumeric>(in[0]->dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      T lo, hi;
      if constexpr (std::is_floating_point_v<T>) {
        lo = -std::numeric_limits<T>::infinity();
        hi = std::numeric_limits<T>::infinity();
        if (use_attrs_) {
          lo = static_cast<T>(attr_min_);
          hi = static_cast<T>(attr_max_);
        }
      } else {
        lo = std::numeric_limits<T>::lowest();
        hi = std::numeric_limits<T>::max();
      }
      if (tmin) lo = tmin->data<T>()[0];
      if (tmax) hi = tmax->data<T>()[0];
      unary_loop(in[0]->data<T>(), out[0]->data<T>(), in[0]->numel(), ctx.num_threads,
                 [lo, hi](T v) { return clamp_t(v, lo, hi); });
      return Status::ok();
    });
  }

 private:
  bool use_attrs_ = false;
  float attr_min_ = 0, attr_max_ = 0;
};

// ---------------------------------------------------------------- Cast

template <class D, class S>
inline D convert(S v) {
  if constexpr (std::is_same_v<D, bool>) {
    return v != S(0);
  } else if constexpr (std::is_floating_point_v<S> && kIsUnsignedInt<D> && sizeof(D) < 8) {
    return static_cast<D>(static_cast<int64_t>(v));  // numpy-like wrap for negative values
  } else {
    return static_cast<D>(v);
  }
}

// Converts src into dst (same shape, any supported dtypes).
Status cast_tensor(const Tensor& src, Tensor& dst, int th) {
  const DataType sd = src.dtype(), dd = dst.dtype();
  const int64_t n = src.numel();
  if (sd == dd) {
    if (dst.raw() != src.raw() && n) std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return Status::ok();
  }
  if (is_half(sd)) {
    const uint16_t* s = src.data<uint16_t>();
    Tensor tmp;
    float* f;
    if (dd == DataType::kFloat32) {
      f = dst.data<float>();
    } else {
      tmp = Tensor(DataType::kFloat32, src.shape());
      f = tmp.data<float>();
    }
    if (sd == DataType::kFloat16) unary_loop(s, f, n, th, [](uint16_t h) { return half_to_float(h); });
    else unary_loop(s, f, n, th, [](uint16_t h) { return bf16_to_float(h); });
    return tmp.defined() ? cast_tensor(tmp, dst, th) : Status::ok();
  }
  if (is_half(dd)) {
    Tensor tmp;
    const float* f;
    if (sd == DataType::kFloat32) {
      f = src.data<float>();
    } else {
      tmp = Tensor(DataType::kFloat32, src.shape());
      RETURN_IF_ERROR(cast_tensor(src, tmp, th));
      f = tmp.data<float>();
    }
    uint16_t* d = dst.data<uint16_t>();
    if (dd == DataType::kFloat16) unary_loop(f, d, n, th, [](float v) { return float_to_half(v); });
    else unary_loop(f, d, n, th, [](float v) { return float_to_bf16(v); });
    return Status::ok();
  }
  return dispatch_dtype(sd, [&](auto ts) -> Status {
    using S = typename decltype(ts)::type;
    return dispatch_dtype(dd, [&](auto td) -> Status {
      using D = typename decltype(td)::type;
      unary_loop(src.data<S>(), dst.data<D>(), n, th, [](S v) { return convert<D>(v); });
      return Status::ok();
    });
  });
}

// Cast (target dtype from the `to` attribute) and CastLike (from input 1's dtype).
class CastKernel : public EwKernel {
 public:
  explicit CastKernel(bool like) : like_(like) {}

  Status init(const KernelCreateInfo& info) {
    RETURN_IF_ERROR(init_base(info));
    if (!like_) {
      if (!info.node.has_attr("to")) return error("missing 'to' attribute");
      to_ = static_cast<DataType>(info.node.attr_i("to", 0));
      if (!dtype_supported(to_))
        return unsupported(label_ + ": cast to dtype " + std::to_string(static_cast<int>(to_)) + " (" +
                           dtype_name(to_) + ") is not supported");
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, like_ ? 2 : 1, like_ ? 2 : 1));
    for (size_t i = 0; i < in.size(); ++i)
      if (!dtype_supported(in[i]->dtype()))
        return unsupported(label_ + ": input " + std::to_string(i) + " has unsupported dtype " +
                           dtype_name(in[i]->dtype()));
    out.resize(1);
    out[0] = {like_ ? in[1]->dtype() : to_, in[0]->shape()};
    return Status::ok();
  }

 protected:
  bool promote_half() const override { return false; }
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    return cast_tensor(*in[0], *out[0], ctx.num_threads).with_context(label_);
  }

 private:
  bool like_;
  DataType to_ = DataType::kUndefined;
};

// ---------------------------------------------------------------- registration

template <class K, class... Args>
KernelFactory factory(Args... args) {
  return [=](const KernelCreateInfo& info) -> Result<std::unique_ptr<Kernel>> {
    auto k = std::make_unique<K>(args...);
    Status st = k->init(info);
    if (!st.is_ok()) return st;
    return std::unique_ptr<Kernel>(std::move(k));
  };
}

}  // namespace
}  // namespace ref

void register_ref_elementwise(KernelRegistry& r) {
  using ref::Bin;
  using ref::BinaryKernel;
  using ref::Un;
  using ref::UnaryKernel;
  using ref::factory;
  constexpr int kNum = ref::kClassNumeric, kFlt = ref::kClassFloat, kAll = ref::kClassAll;
  constexpr int kSignedNum = ref::kClassFloat | ref::kClassSigned;
  auto bin = [&](const char* op, Bin b, int classes, BinaryKernel::Variadic v = BinaryKernel::kTwo) {
    r.add("", op, "ref", 0, factory<BinaryKernel>(b, classes, v));
  };
  bin("Add", Bin::kAdd, kNum);
  bin("Sub", Bin::kSub, kNum);
  bin("Mul", Bin::kMul, kNum);
  bin("Div", Bin::kDiv, kNum);
  bin("Mod", Bin::kMod, kNum);
  bin("BitShift", Bin::kShl, ref::kClassUnsigned);
  bin("Equal", Bin::kEq, kAll);
  bin("Less", Bin::kLt, kNum);
  bin("LessOrEqual", Bin::kLe, kNum);
  bin("Greater", Bin::kGt, kNum);
  bin("GreaterOrEqual", Bin::kGe, kNum);
  bin("And", Bin::kAnd, ref::kClassBool);
  bin("Or", Bin::kOr, ref::kClassBool);
  bin("Xor", Bin::kXor, ref::kClassBool);
  bin("Max", Bin::kMax, kNum, BinaryKernel::kMany);
  bin("Min", Bin::kMin, kNum, BinaryKernel::kMany);
  bin("Sum", Bin::kAdd, kFlt, BinaryKernel::kMany);
  bin("Mean", Bin::kAdd, kFlt, BinaryKernel::kMean);
  r.add("", "Pow", "ref", 0, factory<ref::PowKernel>());
  r.add("", "PRelu", "ref", 0, factory<ref::PReluKernel>());
  r.add("", "Where", "ref", 0, factory<ref::WhereKernel>());
  r.add("", "Clip", "ref", 0, factory<ref::ClipKernel>());
  r.add("", "Cast", "ref", 0, factory<ref::CastKernel>(false));
  r.add("", "CastLike", "ref", 0, factory<ref::CastKernel>(true));

  auto un = [&](const char* op, Un u, int classes) { r.add("", op, "ref", 0, factory<UnaryKernel>(u, classes)); };
  un("Abs", Un::kAbs, kNum);
  un("Neg", Un::kNeg, kSignedNum);
  un("Sign", Un::kSign, kNum);
  un("Relu", Un::kRelu, kSignedNum);
  un("Not", Un::kNot, ref::kClassBool);
  un("Erf", Un::kErf, kNum);
  un("Reciprocal", Un::kReciprocal, kFlt);
  un("Floor", Un::kFloor, kFlt);
  un("Ceil", Un::kCeil, kFlt);
  un("Round", Un::kRound, kFlt);
  un("Sqrt", Un::kSqrt, kFlt);
  un("Exp", Un::kExp, kFlt);
  un("Log", Un::kLog, kFlt);
  un("Sin", Un::kSin, kFlt);
  un("Cos", Un::kCos, kFlt);
  un("Tan", Un::kTan, kFlt);
  un("Asin", Un::kAsin, kFlt);
  un("Acos", Un::kAcos, kFlt);
  un("Atan", Un::kAtan, kFlt);
  un("Sinh", Un::kSinh, kFlt);
  un("Cosh", Un::kCosh, kFlt);
  un("Asinh", Un::kAsinh, kFlt);
  un("Acosh", Un::kAcosh, kFlt);
  un("Atanh", Un::kAtanh, kFlt);
  un("IsNaN", Un::kIsNaN, kFlt);
  un("IsInf", Un::kIsInf, kFlt);
  un("LeakyRelu", Un::kLeakyRelu, kFlt);
  un("Elu", Un::kElu, kFlt);
  un("Selu", Un::kSelu, kFlt);
  un("Celu", Un::kCelu, kFlt);
  un("Sigmoid", Un::kSigmoid, kFlt);
  un("HardSigmoid", Un::kHardSigmoid, kFlt);
  un("HardSwish", Un::kHardSwish, kFlt);
  un("Softplus", Un::kSoftplus, kFlt);
  un("Softsign", Un::kSoftsign, kFlt);
  un("Tanh", Un::kTanh, kFlt);
  un("ThresholdedRelu", Un::kThresholdedRelu, kFlt);
  un("Mish", Un::kMish, kFlt);
  un("Gelu", Un::kGelu, kFlt);
}

}  // namespace medq
