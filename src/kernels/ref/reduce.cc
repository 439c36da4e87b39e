// Reference reductions and axis-wise ops: Reduce* (10 ops), ArgMax/ArgMin,
// Softmax/LogSoftmax/Hardmax, CumSum and TopK. register_ref_reduce_norm()
// also registers the normalisation ops (norm.cc) and MatMul/Gemm/Einsum
// (matmul.cc).
//
// Reductions collapse the input into alternating groups of kept and reduced
// dims (size-1 dims dropped, adjacent dims of the same kind merged). When the
// innermost group is reduced every output element sums a contiguous run; when
// it is kept, whole contiguous rows are accumulated into a vector. Float
// inputs accumulate in double, integers in 64-bit. float16/bfloat16 run
// through float32 (RefKernel).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/ref/broadcast.h"
#include "ops/kernel.h"

namespace medq {

void register_ref_norm(KernelRegistry& r);    // norm.cc
void register_ref_matmul(KernelRegistry& r);  // matmul.cc
void register_ref_quant(KernelRegistry& r);   // quant.cc: Q/DQ, QLinear*, ConvInteger, medq QConv/QMatMul

namespace ref {
namespace {

// Reductions, arg-min/max, softmax and cumsum: node-aware ref kernels (label, axis_of).
using AxisKernel = NodeRefKernel;

inline const Tensor* opt_in(const TensorList& in, size_t i) {
  return i < in.size() && in[i] != nullptr && in[i]->defined() ? in[i] : nullptr;
}

// (outer, axis size, inner) split of a shape at `axis`.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
inline AxisSplit split_at(const Shape& s, int axis) {
  AxisSplit r;
  for (int d = 0; d < static_cast<int>(s.size()); ++d) {
    if (d < axis) r.outer *= s[d];
    else if (d == axis) r.n = s[d];
    else r.inner *= s[d];
  }
  return r;
}

// ---------------------------------------------------------------- Reduce*

enum class RK { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSum, kLogSumExp, kSumSquare };

template <class T>
using WideAcc = std::conditional_t<std::is_floating_point_v<T>, double,
                                   std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;

template <RK K, class T>
struct ReduceOp {
  using A = std::conditional_t<K == RK::kMax || K == RK::kMin, T,
                               std::conditional_t<K == RK::kL2 || K == RK::kLogSum || K == RK::kLogSumExp, double,
                                                  WideAcc<T>>>;
  static A init() {
    if constexpr (K == RK::kMax) {
      if constexpr (std::is_floating_point_v<T>) return -std::numeric_limits<T>::infinity();
      else return std::numeric_limits<T>::lowest();
    } else if constexpr (K == RK::kMin) {
      if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<T>::infinity();
      else return std::numeric_limits<T>::max();
    } else if constexpr (K == RK::kProd) {
      return A(1);
    } else {
      return A(0);
    }
  }
  static A add(A acc, T v) {
    if constexpr (K == RK::kMax) return v > acc ? v : acc;
    else if constexpr (K == RK::kMin) return v < acc ? v : acc;
    else if constexpr (K == RK::kProd) return acc * static_cast<A>(v);
    else if constexpr (K == RK::kL1) {
      if constexpr (std::is_signed_v<T> || std::is_floating_point_v<T>) return acc + static_cast<A>(v < 0 ? -v : v);
      else return acc + static_cast<A>(v);
    } else if constexpr (K == RK::kL2 || K == RK::kSumSquare) return acc + static_cast<A>(v) * static_cast<A>(v);
    else if constexpr (K == RK::kLogSumExp) return acc + static_cast<A>(std::exp(static_cast<double>(v)));
    else return acc + static_cast<A>(v);
  }
  static T fin(A acc, int64_t count) {
    if constexpr (K == RK::kMean) {
      if constexpr (std::is_floating_point_v<T>) return static_cast<T>(acc / static_cast<double>(count));
      else return count ? static_cast<T>(acc / static_cast<A>(count)) : T(0);
    } else if constexpr (K == RK::kL2) {
      return static_cast<T>(std::sqrt(static_cast<double>(acc)));
    } else if constexpr (K == RK::kLogSum || K == RK::kLogSumExp) {
      return static_cast<T>(std::log(static_cast<double>(acc)));
    } else {
      return static_cast<T>(acc);
    }
  }
};

struct Group {
  int64_t size, stride;
};

// Offset of linear index r over groups (row-major over `g`).
inline int64_t group_offset(int64_t r, const std::vector<Group>& g) {
  int64_t off = 0;
  for (int d = static_cast<int>(g.size()) - 1; d >= 0; --d) {
    off += (r % g[d].size) * g[d].stride;
    r /= g[d].size;
  }
  return off;
}

template <class T, class Op>
void reduce_impl(const T* x, T* y, const Shape& xs, const std::vector<bool>& red, int nt) {
  using A = typename Op::A;
  const int64_t n_in = shape_numel(xs);
  int64_t n_out = 1, count = 1;
  for (size_t d = 0; d < xs.size(); ++d) (red[d] ? count : n_out) *= xs[d];
  if (n_out == 0) return;
  if (n_in == 0) {
    for (int64_t o = 0; o < n_out; ++o) y[o] = Op::fin(Op::init(), 0);
    return;
  }
  // Collapse into groups.
  std::vector<int64_t> gsize;
  std::vector<bool> gred;
  for (size_t d = 0; d < xs.size(); ++d) {
    if (xs[d] == 1) continue;
    if (!gsize.empty() && gred.back() == red[d]) {
      gsize.back() *= xs[d];
    } else {
      gsize.push_back(xs[d]);
      gred.push_back(red[d]);
    }
  }
  std::vector<Group> kept, reduced;
  {
    std::vector<int64_t> gstride(gsize.size(), 1);
    for (int g = static_cast<int>(gsize.size()) - 2; g >= 0; --g) gstride[g] = gstride[g + 1] * gsize[g + 1];
    for (size_t g = 0; g < gsize.size(); ++g) (gred[g] ? reduced : kept).push_back({gsize[g], gstride[g]});
  }
  const bool inner_reduced = gsize.empty() || gred.back();
  const int threads = n_in >= kParallelThreshold ? nt : 1;
  if (inner_reduced) {
    const int64_t L = reduced.empty() ? 1 : reduced.back().size;
    if (!reduced.empty()) reduced.pop_back();
    int64_t nr = 1;
    for (const auto& g : reduced) nr *= g.size;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t o = 0; o < n_out; ++o) {
      const T* base = x + group_offset(o, kept);
      A acc = Op::init();
      for (int64_t r = 0; r < nr; ++r) {
        const T* p = base + group_offset(r, reduced);
        for (int64_t j = 0; j < L; ++j) acc = Op::add(acc, p[j]);
      }
      y[o] = Op::fin(acc, count);
    }
  } else {
    const int64_t I = kept.back().size;
    kept.pop_back();
    const int64_t rows = n_out / I;
    int64_t nr = 1;
    for (const auto& g : reduced) nr *= g.size;
    const int64_t chunks = rows >= threads ? 1 : std::min<int64_t>((I + 255) / 256, threads * 4);
    const int64_t per = (I + chunks - 1) / chunks;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t u = 0; u < rows * chunks; ++u) {
      const int64_t row = u / chunks, c = u % chunks;
      const int64_t j0 = c * per, j1 = std::min(I, j0 + per);
      if (j0 >= j1) continue;
      std::vector<A> acc(j1 - j0, Op::init());
      const T* base = x + group_offset(row, kept) + j0;
      for (int64_t r = 0; r < nr; ++r) {
        const T* p = base + group_offset(r, reduced);
        for (int64_t j = 0; j < j1 - j0; ++j) acc[j] = Op::add(acc[j], p[j]);
      }
      T* yo = y + row * I + j0;
      for (int64_t j = 0; j < j1 - j0; ++j) yo[j] = Op::fin(acc[j], count);
    }
  }
}

class ReduceKernel : public AxisKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    static const std::pair<const char*, RK> kinds[] = {
        {"ReduceSum", RK::kSum},       {"ReduceMean", RK::kMean},     {"ReduceMax", RK::kMax},
        {"ReduceMin", RK::kMin},       {"ReduceProd", RK::kProd},     {"ReduceL1", RK::kL1},
        {"ReduceL2", RK::kL2},         {"ReduceLogSum", RK::kLogSum}, {"ReduceLogSumExp", RK::kLogSumExp},
        {"ReduceSumSquare", RK::kSumSquare}};
    bool found = false;
    for (const auto& k : kinds)
      if (n.op_type == k.first) {
        kind_ = k.second;
        found = true;
      }
    if (!found) return unsupported(label_ + ": not a reduction");
    keepdims_ = n.attr_i("keepdims", 1) != 0;
    noop_ = n.attr_i("noop_with_empty_axes", 0) != 0;
    if (n.has_attr("axes")) {
      has_attr_axes_ = true;
      attr_axes_ = n.attr_ints("axes");
    }
    return Status::ok();
  }

  // Which dims are reduced; `noop` when axes is empty and noop_with_empty_axes.
  Status resolve(const TensorList& in, std::vector<bool>& red, bool& noop) const {
    const int rank = in[0]->rank();
    std::vector<int64_t> axes = attr_axes_;
    const Tensor* ax = opt_in(in, 1);
    if (ax) {
      if (ax->dtype() != DataType::kInt64 && ax->dtype() != DataType::kInt32)
        return error("axes must be int64, got " + std::string(dtype_name(ax->dtype())));
      if (ax->rank() > 1) return error("axes must be 1-D, got shape " + shape_str(ax->shape()));
      axes = ax->to_i64_vector();
    }
    noop = false;
    red.assign(rank, false);
    if (axes.empty()) {
      if (noop_) {
        noop = true;
        return Status::ok();
      }
      red.assign(rank, true);
      return Status::ok();
    }
    for (int64_t a : axes) {
      if (a < -rank || a >= rank)
        return error("axis " + std::to_string(a) + " is out of range for input of shape " +
                     shape_str(in[0]->shape()));
      red[a < 0 ? a + rank : a] = true;
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 2));
    RETURN_IF_ERROR(check_dtype(label_, "input", in[0]->dtype(), kClassNumeric));
    std::vector<bool> red;
    bool noop;
    RETURN_IF_ERROR(resolve(in, red, noop));
    out.resize(num_outputs_);
    Shape s;
    for (int d = 0; d < in[0]->rank(); ++d) {
      if (!red[d] || noop) s.push_back(in[0]->dim(d));
      else if (keepdims_) s.push_back(1);
    }
    out[0] = {in[0]->dtype(), s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    std::vector<bool> red;
    bool noop;
    RETURN_IF_ERROR(resolve(in, red, noop));
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (noop) {
      if (y.raw() != x.raw() && x.nbytes()) std::memcpy(y.raw(), x.raw(), x.nbytes());
      return Status::ok();
    }
    return dispatch_class<kClassNumeric>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = y.data<T>();
      const int nt = ctx.num_threads;
      switch (kind_) {
        case RK::kSum: reduce_impl<T, ReduceOp<RK::kSum, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kMean: reduce_impl<T, ReduceOp<RK::kMean, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kMax: reduce_impl<T, ReduceOp<RK::kMax, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kMin: reduce_impl<T, ReduceOp<RK::kMin, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kProd: reduce_impl<T, ReduceOp<RK::kProd, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kL1: reduce_impl<T, ReduceOp<RK::kL1, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kL2: reduce_impl<T, ReduceOp<RK::kL2, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kLogSum: reduce_impl<T, ReduceOp<RK::kLogSum, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kLogSumExp: reduce_impl<T, ReduceOp<RK::kLogSumExp, T>>(src, dst, x.shape(), red, nt); break;
        case RK::kSumSquare: reduce_impl<T, ReduceOp<RK::kSumSquare, T>>(src, dst, x.shape(), red, nt); break;
      }
      return Status::ok();
    });
  }

 private:
  RK kind_ = RK::kSum;
  bool keepdims_ = true;
  bool noop_ = false;
  bool has_attr_axes_ = false;
  std::vector<int64_t> attr_axes_;
};

// ---------------------------------------------------------------- ArgMax / ArgMin

class ArgKernel : public AxisKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    is_max_ = n.op_type == "ArgMax";
    axis_ = n.attr_i("axis", 0);
    keepdims_ = n.attr_i("keepdims", 1) != 0;
    last_ = n.attr_i("select_last_index", 0) != 0;
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 1));
    RETURN_IF_ERROR(check_dtype(label_, "input", in[0]->dtype(), kClassNumeric));
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, in[0]->rank()));
    if (in[0]->rank() > 0 && in[0]->dim(axis) == 0) return error("cannot reduce over an empty axis");
    Shape s;
    for (int d = 0; d < in[0]->rank(); ++d) {
      if (d != axis) s.push_back(in[0]->dim(d));
      else if (keepdims_) s.push_back(1);
    }
    out.resize(num_outputs_);
    out[0] = {DataType::kInt64, s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, x.rank()));
    const AxisSplit sp = split_at(x.shape(), axis);
    int64_t* y = out[0]->data<int64_t>();
    return dispatch_class<kClassNumeric>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      const int nt = x.numel() >= kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t o = 0; o < sp.outer; ++o)
        for (int64_t i = 0; i < sp.inner; ++i) {
          const T* p = src + o * sp.n * sp.inner + i;
          T best = p[0];
          int64_t bi = 0;
          for (int64_t r = 1; r < sp.n; ++r) {
            const T v = p[r * sp.inner];
            const bool better = is_max_ ? (last_ ? v >= best : v > best) : (last_ ? v <= best : v < best);
            if (better) {
              best = v;
              bi = r;
            }
          }
          y[o * sp.inner + i] = bi;
        }
      return Status::ok();
    });
  }

 private:
  bool is_max_ = true;
  int64_t axis_ = 0;
  bool keepdims_ = true;
  bool last_ = false;
};

// ---------------------------------------------------------------- Softmax family

enum class SoftKind { kSoftmax, kLogSoftmax, kHardmax };

class SoftmaxKernel : public AxisKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    kind_ = n.op_type == "Softmax" ? SoftKind::kSoftmax
                                   : (n.op_type == "LogSoftmax" ? SoftKind::kLogSoftmax : SoftKind::kHardmax);
    legacy_ = opset_ < 13;
    axis_ = n.attr_i("axis", legacy_ ? 1 : -1);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 1));
    RETURN_IF_ERROR(check_dtype(label_, "input", in[0]->dtype(), kClassFloat));
    RETURN_IF_ERROR(axis_of(axis_, in[0]->rank()).status());
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    if (x.numel() == 0) return Status::ok();
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, x.rank()));
    AxisSplit sp;
    if (x.rank() == 0) {
      sp = AxisSplit{};
    } else if (legacy_) {
      // Opset < 13: coerce to 2-D [prod(dims[:axis]), prod(dims[axis:])].
      for (int d = 0; d < x.rank(); ++d) (d < axis ? sp.outer : sp.n) *= x.dim(d);
    } else {
      sp = split_at(x.shape(), axis);
    }
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      run_typed<T>(x.data<T>(), out[0]->data<T>(), sp, x.numel() >= kParallelThreshold ? ctx.num_threads : 1);
      return Status::ok();
    });
  }

  template <class T>
  void run_typed(const T* x, T* y, const AxisSplit sp, int nt) const {
    const int64_t R = sp.n, I = sp.inner;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t o = 0; o < sp.outer; ++o) {
      const T* xo = x + o * R * I;
      T* yo = y + o * R * I;
      if (kind_ == SoftKind::kHardmax) {
        for (int64_t i = 0; i < I; ++i) {
          int64_t bi = 0;
          for (int64_t r = 1; r < R; ++r)
            if (xo[r * I + i] > xo[bi * I + i]) bi = r;
          for (int64_t r = 0; r < R; ++r) yo[r * I + i] = r == bi ? T(1) : T(0);
        }
        continue;
      }
      if (I == 1) {  // contiguous rows (the common last-axis case)
        T m = xo[0];
        for (int64_t r = 1; r < R; ++r) m = std::max(m, xo[r]);
        double sum = 0;
        if (kind_ == SoftKind::kSoftmax) {
          for (int64_t r = 0; r < R; ++r) {
            const T e = std::exp(xo[r] - m);
            yo[r] = e;
            sum += e;
          }
          const T inv = static_cast<T>(1.0 / sum);
          for (int64_t r = 0; r < R; ++r) yo[r] *= inv;
        } else {
          for (int64_t r = 0; r < R; ++r) sum += std::exp(xo[r] - m);
          const T ls = static_cast<T>(std::log(sum));
          for (int64_t r = 0; r < R; ++r) yo[r] = (xo[r] - m) - ls;
        }
        continue;
      }
      std::vector<T> mx(xo, xo + I);
      for (int64_t r = 1; r < R; ++r)
        for (int64_t i = 0; i < I; ++i) mx[i] = std::max(mx[i], xo[r * I + i]);
      std::vector<double> sum(I, 0.0);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t i = 0; i < I; ++i) {
          const T e = std::exp(xo[r * I + i] - mx[i]);
          if (kind_ == SoftKind::kSoftmax) yo[r * I + i] = e;
          sum[i] += e;
        }
      if (kind_ == SoftKind::kSoftmax) {
        std::vector<T> inv(I);
        for (int64_t i = 0; i < I; ++i) inv[i] = static_cast<T>(1.0 / sum[i]);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t i = 0; i < I; ++i) yo[r * I + i] *= inv[i];
      } else {
        // (x - max) - log(sum): subtracting the max first keeps large inputs exact.
        std::vector<T> ls(I);
        for (int64_t i = 0; i < I; ++i) ls[i] = static_cast<T>(std::log(sum[i]));
        for (int64_t r = 0; r < R; ++r)
          for (int64_t i = 0; i < I; ++i) yo[r * I + i] = (xo[r * I + i] - mx[i]) - ls[i];
      }
    }
  }

 private:
  SoftKind kind_ = SoftKind::kSoftmax;
  bool legacy_ = false;
  int64_t axis_ = -1;
};

// ---------------------------------------------------------------- CumSum

class CumSumKernel : public AxisKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    exclusive_ = info.node.attr_i("exclusive", 0) != 0;
    reverse_ = info.node.attr_i("reverse", 0) != 0;
    return Status::ok();
  }

  Result<int> axis(const TensorList& in) const {
    const Tensor& a = *in[1];
    if (a.dtype() != DataType::kInt64 && a.dtype() != DataType::kInt32)
      return error("axis must be int32 or int64, got " + std::string(dtype_name(a.dtype())));
    if (a.numel() != 1) return error("axis must be a scalar, got shape " + shape_str(a.shape()));
    return axis_of(a.get_i64(0), in[0]->rank());
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 2, 2));
    RETURN_IF_ERROR(check_dtype(label_, "x", in[0]->dtype(), kClassNumeric));
    if (in[0]->rank() == 0) return error("x must have rank >= 1");
    RETURN_IF_ERROR(axis(in).status());
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    ASSIGN_OR_RETURN(int ax, axis(in));
    const Tensor& x = *in[0];
    const AxisSplit sp = split_at(x.shape(), ax);
    return dispatch_class<kClassNumeric>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = out[0]->data<T>();
      const int nt = x.numel() >= kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t o = 0; o < sp.outer; ++o) {
        std::vector<T> acc(sp.inner, T(0));
        for (int64_t s = 0; s < sp.n; ++s) {
          const int64_t r = reverse_ ? sp.n - 1 - s : s;
          const T* p = src + (o * sp.n + r) * sp.inner;
          T* q = dst + (o * sp.n + r) * sp.inner;
          for (int64_t i = 0; i < sp.inner; ++i) {
            if (exclusive_) {
              q[i] = acc[i];
              acc[i] += p[i];
            } else {
              acc[i] += p[i];
              q[i] = acc[i];
            }
          }
        }
      }
      return Status::ok();
    });
  }

 private:
  bool exclusive_ = false;
  bool reverse_ = false;
};

// ---------------------------------------------------------------- TopK

class TopKKernel : public AxisKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    axis_ = n.attr_i("axis", -1);
    largest_ = n.attr_i("largest", 1) != 0;
    k_attr_ = n.attr_i("k", -1);
    return Status::ok();
  }

  Result<int64_t> get_k(const TensorList& in) const {
    const Tensor* kt = opt_in(in, 1);
    if (!kt) {
      if (k_attr_ < 0) return error("missing K input");
      return k_attr_;
    }
    if (kt->dtype() != DataType::kInt64 && kt->dtype() != DataType::kInt32)
      return error("K must be int64, got " + std::string(dtype_name(kt->dtype())));
    if (kt->numel() != 1) return error("K must have exactly one element, got shape " + shape_str(kt->shape()));
    return kt->get_i64(0);
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 2));
    RETURN_IF_ERROR(check_dtype(label_, "X", in[0]->dtype(), kClassNumeric));
    if (in[0]->rank() == 0) return error("X must have rank >= 1");
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, in[0]->rank()));
    ASSIGN_OR_RETURN(int64_t k, get_k(in));
    if (k < 0 || k > in[0]->dim(axis))
      return error("K = " + std::to_string(k) + " is out of range for axis " + std::to_string(axis) +
                   " of size " + std::to_string(in[0]->dim(axis)));
    Shape s = in[0]->shape();
    s[axis] = k;
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), s};
    if (num_outputs_ > 1) out[1] = {DataType::kInt64, s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, x.rank()));
    ASSIGN_OR_RETURN(int64_t k, get_k(in));
    const AxisSplit sp = split_at(x.shape(), axis);
    Tensor* vals = out.size() > 0 ? out[0] : nullptr;
    Tensor* idxs = out.size() > 1 ? out[1] : nullptr;
    return dispatch_class<kClassNumeric>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* vd = vals ? vals->data<T>() : nullptr;
      int64_t* id = idxs ? idxs->data<int64_t>() : nullptr;
      const int nt = x.numel() >= kParallelThreshold ? ctx.num_threads : 1;
      const bool largest = largest_;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t o = 0; o < sp.outer; ++o) {
        std::vector<int64_t> order(sp.n);
        for (int64_t i = 0; i < sp.inner; ++i) {
          const T* p = src + o * sp.n * sp.inner + i;
          std::iota(order.begin(), order.end(), int64_t{0});
          auto cmp = [&](int64_t a, int64_t b) {
            const T va = p[a * sp.inner], vb = p[b * sp.inner];
            if (va != vb) return largest ? va > vb : va < vb;
            return a < b;
          };
          std::partial_sort(order.begin(), order.begin() + k, order.end(), cmp);
          for (int64_t j = 0; j < k; ++j) {
            const int64_t oi = (o * k + j) * sp.inner + i;
            if (vd) vd[oi] = p[order[j] * sp.inner];
            if (id) id[oi] = order[j];
          }
        }
      }
      return Status::ok();
    });
  }

 private:
  int64_t axis_ = -1;
  bool largest_ = true;
  int64_t k_attr_ = -1;
};

}  // namespace
}  // namespace ref

void register_ref_reduce_norm(KernelRegistry& r) {
  using namespace ref;  // NOLINT
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})
    r.add("", op, "ref", 0, make_factory<ReduceKernel>());
  r.add("", "ArgMax", "ref", 0, make_factory<ArgKernel>());
  r.add("", "ArgMin", "ref", 0, make_factory<ArgKernel>());
  r.add("", "Softmax", "ref", 0, make_factory<SoftmaxKernel>());
  r.add("", "LogSoftmax", "ref", 0, make_factory<SoftmaxKernel>());
  r.add("", "Hardmax", "ref", 0, make_factory<SoftmaxKernel>());
  r.add("", "CumSum", "ref", 0, make_factory<CumSumKernel>());
  r.add("", "TopK", "ref", 0, make_factory<TopKKernel>());
  register_ref_norm(r);
  register_ref_matmul(r);
  register_ref_quant(r);
}

}  // namespace medq
