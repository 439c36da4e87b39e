// Reference MatMul (numpy batched broadcast, 1-D operands), MatMulInteger,
// Gemm, Einsum and the medq fused FusedGemm / FusedMatMul (ops/fused.h).
//
// float32 products go through oneDNN's dnnl_sgemm (row-major, OpenMP
// threaded); a batch whose B operand is shared is folded into one tall GEMM,
// and many small batched products (attention heads) run one batch per
// thread. Other dtypes use a plain row-wise loop accumulating in double /
// int64. float16/bfloat16 run through float32 (RefKernel).
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "kernels/ref/activation.h"
#include "kernels/ref/broadcast.h"
#include "ops/fused.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

class MmKernel : public NodeRefKernel {
 protected:
  // Parses the fused activation attributes (FusedGemm / FusedMatMul).
  Status init_activation(const Node& n) {
    auto k = parse_activation(n.attr_s("activation", ""));
    if (!k.is_ok()) return invalid_argument(label_ + ": " + k.status().message());
    act_ = k.value();
    act_params_ = complete_activation_params(act_, n.attr_floats("activation_params"));
    return Status::ok();
  }
  const float* act_params() const { return act_params_.empty() ? nullptr : act_params_.data(); }

  ActKind act_ = ActKind::kNone;
  std::vector<float> act_params_;
};

inline const Tensor* opt_in(const TensorList& in, size_t i) {
  return i < in.size() && in[i] != nullptr && in[i]->defined() ? in[i] : nullptr;
}

// C[M,N] = alpha * op(A) * op(B) + beta * C, row-major; beta == 0 ignores C's contents.
void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <class T>
using AccOf = std::conditional_t<std::is_floating_point_v<T>, double,
                                 std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;

// Generic row-wise GEMM for non-float32 types; same contract as sgemm().
template <class T>
void gemm_generic(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const T* A, int64_t lda,
                  const T* B, int64_t ldb, double beta, T* C, int64_t ldc, int nt) {
  using Acc = AccOf<T>;
  const bool plain = alpha == 1.0 && beta == 0.0;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < M; ++i) {
    std::vector<Acc> row(N, Acc(0));
    for (int64_t k = 0; k < K; ++k) {
      const Acc a = static_cast<Acc>(ta ? A[k * lda + i] : A[i * lda + k]);
      if (tb)
        for (int64_t j = 0; j < N; ++j) row[j] += a * static_cast<Acc>(B[j * ldb + k]);
      else
        for (int64_t j = 0; j < N; ++j) row[j] += a * static_cast<Acc>(B[k * ldb + j]);
    }
    T* c = C + i * ldc;
    if (plain) {
      for (int64_t j = 0; j < N; ++j) c[j] = static_cast<T>(row[j]);
    } else {
      for (int64_t j = 0; j < N; ++j)
        c[j] = static_cast<T>(alpha * static_cast<double>(row[j]) + (beta == 0.0 ? 0.0 : beta * static_cast<double>(c[j])));
    }
  }
}

// ---------------------------------------------------------------- MatMul geometry

struct MatMulGeom {
  int64_t M = 1, N = 1, K = 1;
  Shape out_shape;
  int64_t batch = 1;                 // output batch elements
  std::vector<int64_t> a_idx, b_idx;  // per output batch element: batch index into A / B
  int64_t a_batch = 1, b_batch = 1;   // batch elements of A / B
};

Status matmul_geom(const std::string& label, const Shape& as, const Shape& bs, MatMulGeom& g, bool with_index) {
  if (as.empty() || bs.empty())
    return invalid_argument(label + ": MatMul operands must have rank >= 1, got A " + shape_str(as) + " and B " +
                            shape_str(bs));
  Shape a = as, b = bs;
  const bool a1 = a.size() == 1, b1 = b.size() == 1;
  if (a1) a.insert(a.begin(), 1);
  if (b1) b.push_back(1);
  g.M = a[a.size() - 2];
  g.K = a.back();
  g.N = b.back();
  if (b[b.size() - 2] != g.K)
    return invalid_argument(label + ": inner dimensions do not match: A " + shape_str(as) + " has K=" +
                            std::to_string(g.K) + " but B " + shape_str(bs) + " has K=" +
                            std::to_string(b[b.size() - 2]));
  const Shape ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  auto ob = broadcast_shapes(ab, bb);
  if (!ob.is_ok())
    return invalid_argument(label + ": batch dimensions of A " + shape_str(as) + " and B " + shape_str(bs) +
                            " cannot be broadcast");
  const Shape& obs = ob.value();
  g.out_shape = obs;
  if (!a1) g.out_shape.push_back(g.M);
  if (!b1) g.out_shape.push_back(g.N);
  g.batch = shape_numel(obs);
  g.a_batch = shape_numel(ab);
  g.b_batch = shape_numel(bb);
  if (!with_index) return Status::ok();
  const int r = static_cast<int>(obs.size());
  auto strides = [&](const Shape& s) {
    std::vector<int64_t> st(r, 0);
    int64_t m = 1;
    for (int d = r - 1, sd = static_cast<int>(s.size()) - 1; d >= 0; --d, --sd) {
      if (sd < 0) break;
      st[d] = s[sd] == 1 ? 0 : m;
      m *= s[sd];
    }
    return st;
  };
  const std::vector<int64_t> sa = strides(ab), sb = strides(bb);
  g.a_idx.assign(g.batch, 0);
  g.b_idx.assign(g.batch, 0);
  std::vector<int64_t> idx(r, 0);
  for (int64_t i = 0; i < g.batch; ++i) {
    int64_t oa = 0, ob2 = 0;
    for (int d = 0; d < r; ++d) {
      oa += idx[d] * sa[d];
      ob2 += idx[d] * sb[d];
    }
    g.a_idx[i] = oa;
    g.b_idx[i] = ob2;
    for (int d = r - 1; d >= 0; --d) {
      if (++idx[d] < obs[d]) break;
      idx[d] = 0;
    }
  }
  return Status::ok();
}

// ---------------------------------------------------------------- MatMul / FusedMatMul

class MatMulKernel : public MmKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    fused_ = info.node.domain == kMedqDomain;
    if (fused_) RETURN_IF_ERROR(init_activation(info.node));
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 2, fused_ ? 3 : 2));
    const DataType dt = in[0]->dtype();
    RETURN_IF_ERROR(check_dtype(label_, "A", dt, kClassNumeric));
    if (dt == DataType::kInt8 || dt == DataType::kUInt8 || dt == DataType::kInt16 || dt == DataType::kUInt16)
      return error(std::string("A has dtype ") + dtype_name(dt) + " (use MatMulInteger for 8-bit inputs)");
    if (in[1]->dtype() != dt)
      return error(std::string("A and B dtypes differ: ") + dtype_name(dt) + " vs " + dtype_name(in[1]->dtype()));
    MatMulGeom g;
    RETURN_IF_ERROR(matmul_geom(label_, in[0]->shape(), in[1]->shape(), g, false));
    if (const Tensor* bias = opt_in(in, 2)) {
      if (bias->dtype() != dt) return error("bias dtype differs from A");
      if (bias->numel() != g.N && bias->numel() != 1)
        return error("bias shape " + shape_str(bias->shape()) + " does not match N=" + std::to_string(g.N));
    }
    if (fused_ && act_ != ActKind::kNone && dtype_class(dt) != kClassFloat)
      return error("a fused activation needs a float dtype, got " + std::string(dtype_name(dt)));
    out.resize(num_outputs_);
    out[0] = {dt, g.out_shape};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    Tensor& y = *out[0];
    MatMulGeom g;
    RETURN_IF_ERROR(matmul_geom(label_, a.shape(), b.shape(), g, true));
    const int64_t M = g.M, N = g.N, K = g.K;
    if (y.numel() == 0) return Status::ok();
    Status st = dispatch_class<kClassNumeric>(a.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        return error("bool is not supported");
      } else {
        const T* pa = a.data<T>();
        const T* pb = b.data<T>();
        T* py = y.data<T>();
        const bool fold = g.b_batch == 1 && g.a_batch == g.batch;
        const int64_t flops = M * N * K;
        const int nt = ctx.num_threads;
        if constexpr (std::is_same_v<T, float>) {
          if (fold) {
            sgemm(false, false, g.batch * M, N, K, 1.f, pa, K, pb, N, 0.f, py, N);
          } else if (g.batch >= 2 && nt > 1 && flops < (1 << 22)) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t i = 0; i < g.batch; ++i)
              sgemm(false, false, M, N, K, 1.f, pa + g.a_idx[i] * M * K, K, pb + g.b_idx[i] * K * N, N, 0.f,
                    py + i * M * N, N);
          } else {
            for (int64_t i = 0; i < g.batch; ++i)
              sgemm(false, false, M, N, K, 1.f, pa + g.a_idx[i] * M * K, K, pb + g.b_idx[i] * K * N, N, 0.f,
                    py + i * M * N, N);
          }
        } else {
          const int t = flops * g.batch >= kParallelThreshold ? nt : 1;
          for (int64_t i = 0; i < g.batch; ++i)
            gemm_generic<T>(false, false, M, N, K, 1.0, pa + g.a_idx[i] * M * K, K, pb + g.b_idx[i] * K * N, N, 0.0,
                            py + i * M * N, N, t);
        }
        return Status::ok();
      }
    });
    RETURN_IF_ERROR(st);
    return epilogue(opt_in(in, 2), y, N, ctx);
  }

  // Fused bias (broadcast over rows) and activation.
  Status epilogue(const Tensor* bias, Tensor& y, int64_t N, RunContext& ctx) const {
    if (!fused_ || (!bias && act_ == ActKind::kNone)) return Status::ok();
    return dispatch_class<kClassNumeric>(y.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        return Status::ok();
      } else {
        T* py = y.data<T>();
        const int64_t rows = N ? y.numel() / N : 0;
        const T* pbias = bias ? bias->data<T>() : nullptr;
        const bool bscalar = bias && bias->numel() == 1;
        const float* prm = act_params();
        const int nt = y.numel() >= kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          T* row = py + r * N;
          if (pbias)
            for (int64_t j = 0; j < N; ++j) row[j] += pbias[bscalar ? 0 : j];
          if constexpr (std::is_same_v<T, float>) {
            apply_activation_inplace(act_, row, N, prm);
          } else if constexpr (std::is_floating_point_v<T>) {
            if (act_ != ActKind::kNone)
              for (int64_t j = 0; j < N; ++j) row[j] = apply_activation(act_, static_cast<float>(row[j]), prm);
          }
        }
        return Status::ok();
      }
    });
  }

 private:
  bool fused_ = false;
};

// ---------------------------------------------------------------- Gemm / FusedGemm

class GemmKernel : public MmKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    fused_ = n.domain == kMedqDomain;
    if (fused_) RETURN_IF_ERROR(init_activation(n));
    ta_ = n.attr_i("transA", 0) != 0;
    tb_ = n.attr_i("transB", 0) != 0;
    alpha_ = n.attr_f("alpha", 1.0f);
    beta_ = n.attr_f("beta", 1.0f);
    return Status::ok();
  }

  Status geom(const TensorList& in, int64_t& M, int64_t& N, int64_t& K) const {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    if (a.rank() != 2 || b.rank() != 2)
      return error("A and B must be 2-D, got A " + shape_str(a.shape()) + " and B " + shape_str(b.shape()));
    M = ta_ ? a.dim(1) : a.dim(0);
    K = ta_ ? a.dim(0) : a.dim(1);
    const int64_t kb = tb_ ? b.dim(1) : b.dim(0);
    N = tb_ ? b.dim(0) : b.dim(1);
    if (kb != K)
      return error("inner dimensions do not match: op(A) is " + std::to_string(M) + "x" + std::to_string(K) +
                   " (A " + shape_str(a.shape()) + (ta_ ? ", transA" : "") + ") but op(B) is " +
                   std::to_string(kb) + "x" + std::to_string(N) + " (B " + shape_str(b.shape()) +
                   (tb_ ? ", transB" : "") + ")");
    if (const Tensor* c = opt_in(in, 2)) {
      const int64_t cm = c->rank() == 2 ? c->dim(0) : 1;
      const int64_t cn = c->rank() >= 1 ? c->dim(-1) : 1;
      if (c->rank() > 2 || (cm != 1 && cm != M) || (cn != 1 && cn != N))
        return error("C shape " + shape_str(c->shape()) + " cannot be broadcast to (" + std::to_string(M) + ", " +
                     std::to_string(N) + ")");
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 2, 3));
    const DataType dt = in[0]->dtype();
    RETURN_IF_ERROR(check_dtype(label_, "A", dt, kClassNumeric));
    if (dtype_size(dt) < 4 && !is_half(dt)) return error(std::string("A has unsupported dtype ") + dtype_name(dt));
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i] && in[i]->dtype() != dt)
        return error("input " + std::to_string(i) + " has dtype " + dtype_name(in[i]->dtype()) + ", expected " +
                     dtype_name(dt));
    if (fused_ && act_ != ActKind::kNone && dtype_class(dt) != kClassFloat)
      return error("a fused activation needs a float dtype, got " + std::string(dtype_name(dt)));
    int64_t M, N, K;
    RETURN_IF_ERROR(geom(in, M, N, K));
    out.resize(num_outputs_);
    out[0] = {dt, Shape{M, N}};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    int64_t M, N, K;
    RETURN_IF_ERROR(geom(in, M, N, K));
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    const Tensor* c = opt_in(in, 2);
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    const bool use_c = c && beta_ != 0.f && c->numel() > 0;
    return dispatch_class<kClassNumeric>(a.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        return error("bool is not supported");
      } else {
        T* py = y.data<T>();
        if (use_c) {
          // Y = beta * broadcast(C), then Y += alpha * op(A) op(B).
          const T* pc = c->data<T>();
          const int64_t cm = c->rank() == 2 ? c->dim(0) : 1;
          const int64_t cn = c->rank() >= 1 ? c->dim(-1) : 1;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              const T v = pc[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
              py[i * N + j] = static_cast<T>(static_cast<double>(beta_) * static_cast<double>(v));
            }
        }
        const int64_t lda = a.dim(1), ldb = b.dim(1);
        if constexpr (std::is_same_v<T, float>) {
          sgemm(ta_, tb_, M, N, K, alpha_, a.data<float>(), lda, b.data<float>(), ldb, use_c ? 1.f : 0.f, py, N);
        } else {
          const int t = M * N * K >= kParallelThreshold ? ctx.num_threads : 1;
          gemm_generic<T>(ta_, tb_, M, N, K, alpha_, a.data<T>(), lda, b.data<T>(), ldb, use_c ? 1.0 : 0.0, py, N, t);
        }
        if (fused_ && act_ != ActKind::kNone) {
          if constexpr (std::is_floating_point_v<T>) {
            const float* prm = act_params();
            const int nt = y.numel() >= kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t i = 0; i < M; ++i) {
              if constexpr (std::is_same_v<T, float>) {
                apply_activation_inplace(act_, py + i * N, N, prm);
              } else {
                for (int64_t j = 0; j < N; ++j)
                  py[i * N + j] = apply_activation(act_, static_cast<float>(py[i * N + j]), prm);
              }
            }
          }
        }
        return Status::ok();
      }
    });
  }

 private:
  bool fused_ = false;
  bool ta_ = false, tb_ = false;
  float alpha_ = 1.f, beta_ = 1.f;
};

// ---------------------------------------------------------------- MatMulInteger

class MatMulIntegerKernel : public MmKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }

  Status check(const TensorList& in, MatMulGeom& g, bool with_index) const {
    RETURN_IF_ERROR(check_count(in, 2, 4));
    for (int i = 0; i < 2; ++i) {
      const DataType dt = in[i]->dtype();
      if (dt != DataType::kUInt8 && dt != DataType::kInt8)
        return error(std::string(i == 0 ? "A" : "B") + " has dtype " + dtype_name(dt) + ", expected uint8/int8");
    }
    RETURN_IF_ERROR(matmul_geom(label_, in[0]->shape(), in[1]->shape(), g, with_index));
    for (int i = 2; i < 4; ++i) {
      const Tensor* z = opt_in(in, i);
      if (!z) continue;
      const char* what = i == 2 ? "a_zero_point" : "b_zero_point";
      if (z->dtype() != in[i - 2]->dtype())
        return error(std::string(what) + " has dtype " + dtype_name(z->dtype()) + ", expected " +
                     dtype_name(in[i - 2]->dtype()));
      const int64_t want = i == 2 ? g.M : g.N;
      if (z->numel() != 1 && z->numel() != want)
        return error(std::string(what) + " shape " + shape_str(z->shape()) + " must be a scalar or have " +
                     std::to_string(want) + " elements");
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    MatMulGeom g;
    RETURN_IF_ERROR(check(in, g, false));
    out.resize(num_outputs_);
    out[0] = {DataType::kInt32, g.out_shape};
    return Status::ok();
  }

 protected:
  static int32_t elem(const Tensor& t, int64_t i) {
    return t.dtype() == DataType::kUInt8 ? static_cast<int32_t>(t.data<uint8_t>()[i])
                                         : static_cast<int32_t>(t.data<int8_t>()[i]);
  }

  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    MatMulGeom g;
    RETURN_IF_ERROR(check(in, g, true));
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    const int64_t M = g.M, N = g.N, K = g.K;
    std::vector<int32_t> za(M, 0), zb(N, 0);
    if (const Tensor* z = opt_in(in, 2))
      for (int64_t i = 0; i < M; ++i) za[i] = elem(*z, z->numel() == 1 ? 0 : i);
    if (const Tensor* z = opt_in(in, 3))
      for (int64_t j = 0; j < N; ++j) zb[j] = elem(*z, z->numel() == 1 ? 0 : j);
    // B - zero point, as int32.
    std::vector<int32_t> bz(static_cast<size_t>(g.b_batch * K * N));
    for (int64_t i = 0; i < g.b_batch * K * N; ++i) bz[i] = elem(b, i) - zb[i % N];
    int32_t* py = out[0]->data<int32_t>();
    const int nt = g.batch * M * N * K >= kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < g.batch * M; ++r) {
      const int64_t bi = r / M, i = r % M;
      const int64_t abase = (g.a_idx[bi] * M + i) * K;
      const int32_t* pb = bz.data() + g.b_idx[bi] * K * N;
      int32_t* row = py + r * N;
      for (int64_t j = 0; j < N; ++j) row[j] = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t av = elem(a, abase + k) - za[i];
        const int32_t* brow = pb + k * N;
        for (int64_t j = 0; j < N; ++j) row[j] += av * brow[j];
      }
    }
    return Status::ok();
  }
};

// ---------------------------------------------------------------- Einsum

// Parsed equation: per operand the label of each dim (letters as their char,
// ellipsis dims as 256 + position in the broadcast ellipsis), and the output labels.
struct EinsumPlan {
  std::vector<std::vector<int>> in_labels;
  std::vector<int> out_labels;
  std::map<int, int64_t> sizes;
};

Status parse_einsum(const std::string& label, const std::string& eq_raw, const TensorList& in, EinsumPlan& p) {
  std::string eq;
  for (char ch : eq_raw)
    if (ch != ' ') eq += ch;
  const size_t arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> terms;
  size_t start = 0;
  while (true) {
    const size_t c = lhs.find(',', start);
    terms.push_back(lhs.substr(start, c == std::string::npos ? std::string::npos : c - start));
    if (c == std::string::npos) break;
    start = c + 1;
  }
  if (terms.size() != in.size())
    return invalid_argument(label + ": equation '" + eq_raw + "' has " + std::to_string(terms.size()) +
                            " operands but " + std::to_string(in.size()) + " inputs were given");
  auto bad = [&](const std::string& why) { return invalid_argument(label + ": equation '" + eq_raw + "': " + why); };
  // Ellipsis rank per operand.
  int ell = 0;
  std::vector<int> ell_n(terms.size(), 0);
  for (size_t t = 0; t < terms.size(); ++t) {
    const std::string& s = terms[t];
    const size_t e = s.find("...");
    int letters = 0;
    for (char ch : s)
      if (std::isalpha(static_cast<unsigned char>(ch))) ++letters;
      else if (ch != '.') return bad(std::string("invalid character '") + ch + "'");
    const int rank = in[t]->rank();
    if (e == std::string::npos) {
      if (letters != rank)
        return bad("operand " + std::to_string(t) + " has " + std::to_string(letters) + " labels but rank " +
                   std::to_string(rank));
    } else {
      if (letters > rank) return bad("operand " + std::to_string(t) + " has more labels than dims");
      ell_n[t] = rank - letters;
      ell = std::max(ell, ell_n[t]);
    }
  }
  p.in_labels.assign(terms.size(), {});
  std::map<int, int> count;
  for (size_t t = 0; t < terms.size(); ++t) {
    const std::string& s = terms[t];
    std::vector<int>& lab = p.in_labels[t];
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '.') {
        if (s.compare(i, 3, "...") != 0) return bad("malformed ellipsis");
        for (int j = 0; j < ell_n[t]; ++j) lab.push_back(256 + ell - ell_n[t] + j);
        i += 2;
      } else {
        lab.push_back(static_cast<unsigned char>(s[i]));
      }
    }
    for (size_t d = 0; d < lab.size(); ++d) {
      const int64_t sz = in[t]->dim(static_cast<int>(d));
      // Ellipsis dims broadcast numpy-style; letter labels must match exactly.
      auto it = p.sizes.find(lab[d]);
      const bool ell_dim = lab[d] >= 256;
      if (it == p.sizes.end() || (ell_dim && it->second == 1)) {
        p.sizes[lab[d]] = sz;
      } else if (sz != it->second && !(ell_dim && sz == 1)) {
        return bad((ell_dim ? std::string("ellipsis dim") : std::string("label '") + static_cast<char>(lab[d]) + "'") +
                   " has size " + std::to_string(sz) + " in operand " + std::to_string(t) + " but " +
                   std::to_string(it->second) + " elsewhere");
      }
    }
    for (int l : lab) count[l] += 1;
  }
  p.out_labels.clear();
  if (arrow == std::string::npos) {
    for (int j = 0; j < ell; ++j) p.out_labels.push_back(256 + j);
    for (const auto& [l, c] : count)
      if (l < 256 && c == 1) p.out_labels.push_back(l);
  } else {
    const std::string rhs = eq.substr(arrow + 2);
    for (size_t i = 0; i < rhs.size(); ++i) {
      if (rhs[i] == '.') {
        if (rhs.compare(i, 3, "...") != 0) return bad("malformed ellipsis in output");
        for (int j = 0; j < ell; ++j) p.out_labels.push_back(256 + j);
        i += 2;
      } else {
        const int l = static_cast<unsigned char>(rhs[i]);
        if (!p.sizes.count(l)) return bad(std::string("output label '") + rhs[i] + "' does not appear in the inputs");
        if (std::find(p.out_labels.begin(), p.out_labels.end(), l) != p.out_labels.end())
          return bad(std::string("output label '") + rhs[i] + "' is repeated");
        p.out_labels.push_back(l);
      }
    }
  }
  return Status::ok();
}

// dst = src (shape `shape`) transposed so that dst dim i is src dim perm[i].
void permute_f32(const float* src, const Shape& shape, const std::vector<int>& perm, float* dst) {
  const int r = static_cast<int>(shape.size());
  std::vector<int64_t> st(r, 1);
  for (int d = r - 2; d >= 0; --d) st[d] = st[d + 1] * shape[d + 1];
  Shape ds(r);
  std::vector<int64_t> dst_st(r);
  for (int i = 0; i < r; ++i) {
    ds[i] = shape[perm[i]];
    dst_st[i] = st[perm[i]];
  }
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = src[off];
    for (int d = r - 1; d >= 0; --d) {
      off += dst_st[d];
      if (++idx[d] < ds[d]) break;
      off -= dst_st[d] * ds[d];
      idx[d] = 0;
    }
  }
}

// Two-operand float32 Einsum without repeated or broadcast labels as a
// batched GEMM: A -> [batch, m, k], B -> [batch, k, n], C -> output order.
// Returns false (nothing written) when the equation does not fit.
bool einsum_as_gemm(const EinsumPlan& p, const Tensor& a, const Tensor& b, Tensor& y) {
  const std::vector<int>&la = p.in_labels[0], &lb = p.in_labels[1], &lo = p.out_labels;
  auto has = [](const std::vector<int>& v, int l) { return std::find(v.begin(), v.end(), l) != v.end(); };
  auto uniq = [](std::vector<int> v) {
    std::sort(v.begin(), v.end());
    return std::adjacent_find(v.begin(), v.end()) == v.end();
  };
  if (!uniq(la) || !uniq(lb)) return false;
  for (size_t d = 0; d < la.size(); ++d)
    if (a.dim(static_cast<int>(d)) != p.sizes.at(la[d])) return false;
  for (size_t d = 0; d < lb.size(); ++d)
    if (b.dim(static_cast<int>(d)) != p.sizes.at(lb[d])) return false;
  std::vector<int> bat, ml, nl, kl;
  for (int l : la) {
    const bool inb = has(lb, l), ino = has(lo, l);
    if (inb && ino) bat.push_back(l);
    else if (ino) ml.push_back(l);
    else if (inb) kl.push_back(l);
    else return false;  // summed over A alone
  }
  for (int l : lb)
    if (!has(la, l)) {
      if (!has(lo, l)) return false;
      nl.push_back(l);
    }
  auto prod = [&](const std::vector<int>& v) {
    int64_t r = 1;
    for (int l : v) r *= p.sizes.at(l);
    return r;
  };
  const int64_t NB = prod(bat), M = prod(ml), N = prod(nl), K = prod(kl);
  auto perm_of = [](const std::vector<int>& labels, std::vector<std::vector<int>> groups) {
    std::vector<int> perm;
    for (const auto& g : groups)
      for (int l : g) perm.push_back(static_cast<int>(std::find(labels.begin(), labels.end(), l) - labels.begin()));
    return perm;
  };
  std::vector<float> pa(a.numel()), pb(b.numel()), pc(NB * M * N);
  permute_f32(a.data<float>(), a.shape(), perm_of(la, {bat, ml, kl}), pa.data());
  permute_f32(b.data<float>(), b.shape(), perm_of(lb, {bat, kl, nl}), pb.data());
  for (int64_t i = 0; i < NB; ++i)
    sgemm(false, false, M, N, K, 1.f, pa.data() + i * M * K, K, pb.data() + i * K * N, N, 0.f, pc.data() + i * M * N, N);
  std::vector<int> cl = bat;
  cl.insert(cl.end(), ml.begin(), ml.end());
  cl.insert(cl.end(), nl.begin(), nl.end());
  Shape cs;
  for (int l : cl) cs.push_back(p.sizes.at(l));
  permute_f32(pc.data(), cs, perm_of(cl, {lo}), y.data<float>());
  return true;
}

class EinsumKernel : public MmKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    eq_ = info.node.attr_s("equation", "");
    if (eq_.empty()) return invalid_argument(label_ + ": missing 'equation' attribute");
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    if (in.empty()) return error("expected at least one input");
    RETURN_IF_ERROR(check_count(in, in.size(), in.size()));
    for (size_t i = 0; i < in.size(); ++i) {
      RETURN_IF_ERROR(check_dtype(label_, "input", in[i]->dtype(), kClassNumeric));
      if (in[i]->dtype() != in[0]->dtype()) return error("inputs must share one dtype");
    }
    EinsumPlan p;
    RETURN_IF_ERROR(parse_einsum(label_, eq_, in, p));
    Shape s;
    for (int l : p.out_labels) s.push_back(p.sizes.at(l));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), s};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    EinsumPlan p;
    RETURN_IF_ERROR(parse_einsum(label_, eq_, in, p));
    if (in.size() == 2 && in[0]->dtype() == DataType::kFloat32 && out[0]->numel() > 0 &&
        einsum_as_gemm(p, *in[0], *in[1], *out[0]))
      return Status::ok();
    // General case: loop labels: output labels first, then the summed ones.
    std::vector<int> loop = p.out_labels;
    for (const auto& [l, sz] : p.sizes)
      if (std::find(loop.begin(), loop.end(), l) == loop.end()) loop.push_back(l);
    const size_t nl = loop.size(), no = p.out_labels.size(), ni = in.size();
    std::vector<int64_t> size(nl);
    for (size_t i = 0; i < nl; ++i) size[i] = p.sizes.at(loop[i]);
    // stride[t][i]: element stride of input t along loop label i (0 where broadcast/absent).
    std::vector<std::vector<int64_t>> stride(ni, std::vector<int64_t>(nl, 0));
    for (size_t t = 0; t < ni; ++t) {
      const Tensor& x = *in[t];
      int64_t s = 1;
      for (int d = x.rank() - 1; d >= 0; --d) {
        const size_t li = std::find(loop.begin(), loop.end(), p.in_labels[t][d]) - loop.begin();
        if (x.dim(d) != 1) stride[t][li] += s;
        s *= x.dim(d);
      }
    }
    int64_t n_out = 1, n_sum = 1;
    for (size_t i = 0; i < nl; ++i) (i < no ? n_out : n_sum) *= size[i];
    return dispatch_class<kClassNumeric>(in[0]->dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        return error("bool is not supported");
      } else {
        using Acc = AccOf<T>;
        std::vector<const T*> src(ni);
        for (size_t t = 0; t < ni; ++t) src[t] = in[t]->data<T>();
        T* dst = out[0]->data<T>();
        const int nt = n_out * n_sum >= kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t o = 0; o < n_out; ++o) {
          std::vector<int64_t> base(ni, 0), off(ni);
          int64_t r = o;
          for (int i = static_cast<int>(no) - 1; i >= 0; --i) {
            const int64_t v = r % size[i];
            r /= size[i];
            for (size_t t = 0; t < ni; ++t) base[t] += v * stride[t][i];
          }
          Acc acc = 0;
          std::vector<int64_t> idx(nl - no, 0);
          for (int64_t s = 0; s < n_sum; ++s) {
            for (size_t t = 0; t < ni; ++t) off[t] = base[t];
            for (size_t i = no; i < nl; ++i)
              for (size_t t = 0; t < ni; ++t) off[t] += idx[i - no] * stride[t][i];
            Acc prod = 1;
            for (size_t t = 0; t < ni; ++t) prod *= static_cast<Acc>(src[t][off[t]]);
            acc += prod;
            for (int i = static_cast<int>(nl - no) - 1; i >= 0; --i) {
              if (++idx[i] < size[no + i]) break;
              idx[i] = 0;
            }
          }
          dst[o] = static_cast<T>(acc);
        }
        return Status::ok();
      }
    });
  }

 private:
  std::string eq_;
};

}  // namespace
}  // namespace ref

void register_ref_matmul(KernelRegistry& r) {
  using namespace ref;  // NOLINT
  r.add("", "MatMul", "ref", 0, make_factory<MatMulKernel>());
  r.add(kMedqDomain, "FusedMatMul", "ref", 0, make_factory<MatMulKernel>());
  r.add("", "Gemm", "ref", 0, make_factory<GemmKernel>());
  r.add(kMedqDomain, "FusedGemm", "ref", 0, make_factory<GemmKernel>());
  r.add("", "MatMulInteger", "ref", 0, make_factory<MatMulIntegerKernel>());
  r.add("", "Einsum", "ref", 0, make_factory<EinsumKernel>());
}

}  // namespace medq
