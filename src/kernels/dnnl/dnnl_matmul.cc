// oneDNN Gemm / medq FusedGemm and MatMul / medq FusedMatMul (fp32) on the
// matmul primitive.
//
// Gemm: Y = act(alpha * A' B' + beta * C). A constant B is pre-packed per cache
// entry (alpha folded in, transB applied) into the matmul's preferred layout;
// a non-constant B is read in place through strides (alpha must then be 1).
// C is the matmul bias (broadcast to (M, N)); a constant C is pre-scaled by
// beta, a non-constant C needs beta == 1. transA is expressed by strides.
//
// MatMul: numpy semantics (1-D promotion, batch broadcasting). When B is 1-D or
// 2-D the batch dims of A are folded into M (one 2-D matmul). A constant B is
// pre-packed; FusedMatMul's bias (input 2, length N) and activation are a
// matmul bias and eltwise post-ops. On CPUs without AVX-512, a constant 2-D B with N % 16 == 0
// runs on medq's 6x16 AVX2 GEMM instead (igemm_conv.h as a 1x1 convolution; bias and activation
// in its epilogue): oneDNN 2.6's AVX2 matmul is its gemm:jit at about 40% of the FMA peak on the
// transformer shapes (vit_b_16's 197x768x3072), medq's kernel about 80%. MEDQ_IGEMM=off keeps
// oneDNN, =on uses it on any CPU.
#include <algorithm>
#include <string>
#include <vector>

#include "kernels/dnnl/avx2_gemm.h"  // OwnKernelMode
#include "kernels/dnnl/dnnl_common.h"
#include "kernels/dnnl/igemm_conv.h"
#include "kernels/ref/activation.h"
#include "ops/fused.h"

namespace medq {
namespace dnnl_k {
namespace {

struct MatMulEntry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  dnnl::memory::desc src_md, wei_md, bias_md, dst_md;
  dnnl::memory weights;  // packed constant weights (empty when B is read per call)
  bool packed = false;
};

// Shared matmul machinery: `src/wei/dst` dims and strides per problem.
struct Problem {
  dnnl::memory::desc src_md, wei_plain_md, bias_md, dst_md;
};

// Constant weights are packed once per layout in `packed` (shared by every M / batch size).
Result<std::shared_ptr<MatMulEntry>> build_entry(const Problem& p, const float* const_weights, ActKind act,
                                                  const std::vector<float>& act_params,
                                                  const PackedWeightStore& packed) {
  auto e = std::make_shared<MatMulEntry>();
  e->src_md = p.src_md;
  e->dst_md = p.dst_md;
  e->bias_md = p.bias_md;
  dnnl::memory::desc wei = const_weights ? any_md(p.wei_plain_md.dims()) : p.wei_plain_md;
  dnnl::primitive_attr attr = user_scratchpad_attr();
  dnnl::post_ops po;
  append_activation(po, act, act_params);
  attr.set_post_ops(po);
  dnnl::matmul::desc d(p.src_md, wei, p.bias_md, p.dst_md);
  e->pd = dnnl::matmul::primitive_desc(d, attr, cpu_engine());
  e->prim = dnnl::matmul(e->pd);
  e->wei_md = e->pd.weights_desc();
  if (const_weights) {
    e->weights = packed.get(e->wei_md, [&] { return pack_memory(const_weights, p.wei_plain_md, e->wei_md); });
    e->packed = true;
  }
  return e;
}

// Executes the cached matmul with per-call memory objects.
void execute_entry(const MatMulEntry& e, const void* a, const void* b, const void* bias, void* y) {
  dnnl::engine& eng = cpu_engine();
  dnnl::stream& s = thread_stream();
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, dnnl::memory(e.src_md, eng, const_cast<void*>(a))},
      {DNNL_ARG_WEIGHTS, e.packed ? e.weights : dnnl::memory(e.wei_md, eng, const_cast<void*>(b))},
      {DNNL_ARG_DST, dnnl::memory(e.dst_md, eng, y)},
      {DNNL_ARG_SCRATCHPAD, scratchpad_memory(e.pd)}};
  if (bias) args[DNNL_ARG_BIAS] = dnnl::memory(e.bias_md, eng, const_cast<void*>(bias));
  e.prim.execute(s, args);
  s.wait();
}

// ---------------------------------------------------------------- Gemm

// Y[m, n] = sum_k A[m, k] Bt[n, k] for few outputs (N <= kSkinnyN) and a constant B stored as
// Bt [N, K]: each A row is read once for all N columns. oneDNN's matmul packs such a B into
// 64-column blocks (a classifier head Dense(2) over a flattened 58x58x64 map: 215296 x 2 floats
// padded to 215296 x 64, 55 MB, 2.2 ms at batch 8; this 0.6 ms). K is cut into fixed chunks
// whose partial sums are added in chunk order, so the result does not depend on the threads.
constexpr int64_t kSkinnyN = 8;
constexpr int64_t kSkinnyChunk = 4096;

void skinny_gemm(const float* a, const float* bt, float* y, int64_t M, int64_t K, int64_t N, int threads) {
  const int64_t chunks = (K + kSkinnyChunk - 1) / kSkinnyChunk;
  std::vector<float> part(static_cast<size_t>(M * chunks * N));
#pragma omp parallel for num_threads(threads) schedule(static) if (M * K * N > (1 << 15))
  for (int64_t t = 0; t < M * chunks; ++t) {
    const int64_t m = t / chunks, c = t % chunks, k0 = c * kSkinnyChunk, k1 = std::min(K, k0 + kSkinnyChunk);
    const float* ar = a + m * K;
    for (int64_t n = 0; n < N; ++n) {
      const float* br = bt + n * K;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t k = k0; k < k1; ++k) s += ar[k] * br[k];
      part[static_cast<size_t>((m * chunks + c) * N + n)] = s;
    }
  }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.f;
      for (int64_t c = 0; c < chunks; ++c) s += part[static_cast<size_t>((m * chunks + c) * N + n)];
      y[m * N + n] = s;
    }
}

class DnnlGemmKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    fused_ = n.domain == kMedqDomain;
    if (fused_) RETURN_IF_ERROR(parse_fused_activation(n, &act_, &act_params_));
    alpha_ = n.attr_f("alpha", 1.f);
    beta_ = n.attr_f("beta", 1.f);
    trans_a_ = n.attr_i("transA", 0) != 0;
    trans_b_ = n.attr_i("transB", 0) != 0;
    if (n.inputs.size() < 2 || n.inputs.size() > 3) return error("expects 2 or 3 inputs");
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const DataType dt = graph_dtype(info, i);
      if (dt != DataType::kUndefined && dt != DataType::kFloat32) return unsupported_error("non-float32 input");
    }
    if (const Tensor* b = info.constant_input(1)) {
      if (b->dtype() != DataType::kFloat32 || b->rank() != 2) return unsupported_error("B must be float32 2-D");
      // B' = alpha * op(B), plain [K, N].
      const int64_t K = trans_b_ ? b->dim(1) : b->dim(0), N = trans_b_ ? b->dim(0) : b->dim(1);
      b_packed_src_ = Tensor(DataType::kFloat32, {K, N});
      const float* src = b->data<float>();
      float* dst = b_packed_src_.data<float>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < N; ++j) dst[k * N + j] = alpha_ * (trans_b_ ? src[j * K + k] : src[k * N + j]);
      // Few outputs over a long reduction, weights >= 256 KiB (smaller ones stay with oneDNN, whose
      // call is cheaper than the chunked reduction: skin mobilenet's 1280 x 7 head 0.008 vs 0.02 ms).
      if (N <= kSkinnyN && !trans_a_ && K * N >= 65536) {
        bt_ = Tensor(DataType::kFloat32, {N, K});
        float* bt = bt_.data<float>();
        for (int64_t j = 0; j < N; ++j)
          for (int64_t k = 0; k < K; ++k) bt[j * K + k] = dst[k * N + j];
        b_packed_src_ = Tensor();  // not needed: oneDNN never runs this node's product
      }
    } else if (alpha_ != 1.f) {
      return unsupported_error("alpha != 1 with a non-constant B");
    }
    if (n.has_input(2)) {
      if (const Tensor* c = info.constant_input(2)) {
        if (c->dtype() != DataType::kFloat32 || c->rank() > 2) return unsupported_error("C must be float32, rank <= 2");
        c_scaled_ = c->clone();
        for (int64_t i = 0; i < c_scaled_.numel(); ++i) c_scaled_.data<float>()[i] *= beta_;
      } else if (beta_ != 1.f) {
        return unsupported_error("beta != 1 with a non-constant C");
      }
      if (beta_ == 0.f) c_scaled_ = Tensor();  // ignored; treated as absent below
      use_c_ = beta_ != 0.f;
    }
    return Status::ok();
  }

  Status dims(const TensorList& in, int64_t* M, int64_t* K, int64_t* N) const {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    if (a.dtype() != DataType::kFloat32 || b.dtype() != DataType::kFloat32)
      return unsupported_error("only float32 is supported");
    if (a.rank() != 2 || b.rank() != 2)
      return error("A and B must be 2-D, got " + shape_str(a.shape()) + " and " + shape_str(b.shape()));
    *M = trans_a_ ? a.dim(1) : a.dim(0);
    *K = trans_a_ ? a.dim(0) : a.dim(1);
    const int64_t kb = trans_b_ ? b.dim(1) : b.dim(0);
    *N = trans_b_ ? b.dim(0) : b.dim(1);
    if (kb != *K)
      return error("inner dimensions differ: A " + shape_str(a.shape()) + (trans_a_ ? " (transposed)" : "") + ", B " +
                   shape_str(b.shape()) + (trans_b_ ? " (transposed)" : ""));
    if (const Tensor* c = opt_in(in, 2)) {
      if (c->dtype() != DataType::kFloat32) return unsupported_error("C must be float32");
      if (c->rank() > 2) return error("C must have rank <= 2, got " + shape_str(c->shape()));
      Shape cs = c2d(c->shape());
      if ((cs[0] != 1 && cs[0] != *M) || (cs[1] != 1 && cs[1] != *N))
        return error("C " + shape_str(c->shape()) + " is not broadcastable to (" + std::to_string(*M) + ", " +
                     std::to_string(*N) + ")");
    }
    return Status::ok();
  }

  static Shape c2d(const Shape& s) {
    Shape r = s;
    while (r.size() < 2) r.insert(r.begin(), 1);
    return r;
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    int64_t M, K, N;
    RETURN_IF_ERROR(dims(in, &M, &K, &N));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, {M, N}};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    int64_t M, K, N;
    RETURN_IF_ERROR(dims(in, &M, &K, &N));
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    const Tensor* c = use_c_ ? (c_scaled_.defined() ? &c_scaled_ : opt_in(in, 2)) : nullptr;
    if (K == 0) {  // empty reduction: Y = act(C)
      return unsupported_error("K == 0");
    }
    if (bt_.defined()) {
      float* yd = y.data<float>();
      skinny_gemm(in[0]->data<float>(), bt_.data<float>(), yd, M, K, N, ctx.num_threads > 0 ? ctx.num_threads : 1);
      if (c) {
        const Shape cs = c2d(c->shape());
        const float* cd = c->data<float>();
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) yd[m * N + n] += cd[(cs[0] == 1 ? 0 : m) * cs[1] + (cs[1] == 1 ? 0 : n)];
      }
      if (act_ != ActKind::kNone) {
        const std::vector<float> p = complete_activation_params(act_, act_params_);
        apply_activation_inplace(act_, yd, M * N, p.data());
      }
      return Status::ok();
    }
    set_threads(ctx);
    try {
      PrimitiveCache<MatMulEntry>::Key key = {M, K, N, ctx.num_threads};
      if (c) {
        Shape cs = c2d(c->shape());
        key.insert(key.end(), cs.begin(), cs.end());
      }
      const bool const_b = b_packed_src_.defined();
      auto build = [&]() {
        Problem p;
        p.src_md = dnnl::memory::desc({M, K}, dnnl::memory::data_type::f32,
                                      trans_a_ ? dnnl::memory::dims{1, M} : dnnl::memory::dims{K, 1});
        p.wei_plain_md = const_b ? plain_md({K, N})
                                 : dnnl::memory::desc({K, N}, dnnl::memory::data_type::f32,
                                                      trans_b_ ? dnnl::memory::dims{1, K} : dnnl::memory::dims{N, 1});
        p.dst_md = plain_md({M, N});
        if (c) p.bias_md = plain_md(to_dims(c2d(c->shape())));
        return build_entry(p, const_b ? b_packed_src_.data<float>() : nullptr, act_, act_params_, packed_);
      };
      ASSIGN_OR_RETURN(std::shared_ptr<const MatMulEntry> e, cache_.get(key, build));
      execute_entry(*e, in[0]->raw(), in[1]->raw(), c ? c->raw() : nullptr, y.raw());
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  bool fused_ = false;
  ActKind act_ = ActKind::kNone;
  std::vector<float> act_params_;
  float alpha_ = 1.f, beta_ = 1.f;
  bool trans_a_ = false, trans_b_ = false;
  Tensor b_packed_src_;  // alpha * op(B) as plain [K, N] when B is constant
  Tensor bt_;            // alpha * op(B) as [N, K] for skinny_gemm (constant B, N <= kSkinnyN)
  Tensor c_scaled_;      // beta * C when C is constant
  bool use_c_ = false;
  PrimitiveCache<MatMulEntry> cache_;
  PackedWeightStore packed_;
};

// ---------------------------------------------------------------- MatMul

class DnnlMatMulKernel : public DnnlKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    fused_ = n.domain == kMedqDomain;
    if (fused_) RETURN_IF_ERROR(parse_fused_activation(n, &act_, &act_params_));
    if (n.inputs.size() < 2 || n.inputs.size() > (fused_ ? 3u : 2u)) return error("wrong number of inputs");
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const DataType dt = graph_dtype(info, i);
      if (dt != DataType::kUndefined && dt != DataType::kFloat32) return unsupported_error("non-float32 input");
    }
    if (const Tensor* b = info.constant_input(1)) {
      if (b->dtype() != DataType::kFloat32) return unsupported_error("B must be float32");
      b_const_ = *b;
      const OwnKernelMode mode = own_kernel_mode("MEDQ_IGEMM");
      const bool want =
          mode == OwnKernelMode::kOn || (mode == OwnKernelMode::kAuto && !__builtin_cpu_supports("avx512f"));
      if (want && b->rank() == 2 && IgemmConv::gemm_eligible(b->dim(0), b->dim(1), act_)) {
        const int64_t K = b->dim(0), N = b->dim(1);
        std::vector<float> bt(static_cast<size_t>(K * N));
        const float* src = b->data<float>();
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < N; ++j) bt[j * K + k] = src[k * N + j];
        own_ = std::make_shared<IgemmConv>(bt.data(), N, K, 1, 1, act_, act_params_);
      }
    }
    return Status::ok();
  }

  // The matmul problem for A and B shapes; `ys` gets the ONNX output shape.
  Status shapes(const Shape& as, const Shape& bs, Shape* ys, dnnl::memory::dims* src, dnnl::memory::dims* wei,
                dnnl::memory::dims* dst) const {
    if (as.empty() || bs.empty()) return error("MatMul inputs must have rank >= 1");
    Shape a = as, b = bs;
    const bool a1 = a.size() == 1, b1 = b.size() == 1;
    if (a1) a.insert(a.begin(), 1);
    if (b1) b.push_back(1);
    const int64_t M = a[a.size() - 2], K = a.back(), N = b.back();
    if (b[b.size() - 2] != K)
      return error("inner dimensions differ: A " + shape_str(as) + ", B " + shape_str(bs));
    if (b.size() == 2) {
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < a.size(); ++i) rows *= a[i];
      *src = {rows, K};
      *wei = {K, N};
      *dst = {rows, N};
      ys->assign(a.begin(), a.end() - 1);
      ys->push_back(N);
    } else {
      const size_t r = std::max(a.size(), b.size());
      if (r > 12) return unsupported_error("rank > 12");
      while (a.size() < r) a.insert(a.begin(), 1);
      while (b.size() < r) b.insert(b.begin(), 1);
      Shape batch;
      for (size_t i = 0; i + 2 < r; ++i) {
        if (a[i] != b[i] && a[i] != 1 && b[i] != 1)
          return error("batch dims are not broadcastable: A " + shape_str(as) + ", B " + shape_str(bs));
        batch.push_back(a[i] == 1 ? b[i] : a[i]);
      }
      *src = to_dims(a);
      *wei = to_dims(b);
      *dst = to_dims(batch);
      dst->push_back(M);
      dst->push_back(N);
      *ys = batch;
      ys->push_back(M);
      ys->push_back(N);
    }
    if (a1) ys->erase(ys->end() - 2);
    if (b1) ys->pop_back();
    return Status::ok();
  }

  Status check(const TensorList& in) const {
    if (in[0]->dtype() != DataType::kFloat32 || in[1]->dtype() != DataType::kFloat32)
      return unsupported_error("only float32 is supported");
    if (b_const_.defined() && in[1]->shape() != b_const_.shape()) return error("B shape changed since create");
    if (const Tensor* bias = opt_in(in, 2)) {
      const int64_t N = in[1]->rank() == 1 ? 1 : in[1]->dim(-1);
      if (bias->dtype() != DataType::kFloat32 || bias->numel() != N)
        return error("bias must be float32 with " + std::to_string(N) + " elements, got " + bias->desc());
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, fused_ ? 3 : 2));
    RETURN_IF_ERROR(check(in));
    Shape ys;
    dnnl::memory::dims s, w, d;
    RETURN_IF_ERROR(shapes(in[0]->shape(), in[1]->shape(), &ys, &s, &w, &d));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    RETURN_IF_ERROR(check(in));
    Shape ys;
    dnnl::memory::dims sd, wd, dd;
    RETURN_IF_ERROR(shapes(in[0]->shape(), in[1]->shape(), &ys, &sd, &wd, &dd));
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    const Tensor* bias = opt_in(in, 2);
    if (in[0]->numel() == 0 || in[1]->numel() == 0) return unsupported_error("K == 0");
    if (own_ && wd.size() == 2) {
      own_->run(in[0]->data<float>(), y.data<float>(), bias ? bias->data<float>() : nullptr, nullptr,
                IgemmConv::gemm_geometry(sd[0]), ctx.num_threads);
      return Status::ok();
    }
    set_threads(ctx);
    try {
      PrimitiveCache<MatMulEntry>::Key key = in[0]->shape();
      key.push_back(-1);
      key.insert(key.end(), in[1]->shape().begin(), in[1]->shape().end());
      key.push_back(ctx.num_threads);
      key.push_back(bias ? 1 : 0);
      const bool const_b = b_const_.defined();
      auto build = [&]() {
        Problem p;
        p.src_md = plain_md(sd);
        p.wei_plain_md = plain_md(wd);
        p.dst_md = plain_md(dd);
        if (bias) {
          dnnl::memory::dims bd(dd.size(), 1);
          bd.back() = dd.back();
          p.bias_md = plain_md(bd);
        }
        return build_entry(p, const_b ? b_const_.data<float>() : nullptr, act_, act_params_, packed_);
      };
      ASSIGN_OR_RETURN(std::shared_ptr<const MatMulEntry> e, cache_.get(key, build));
      execute_entry(*e, in[0]->raw(), in[1]->raw(), bias ? bias->raw() : nullptr, y.raw());
    } catch (const dnnl::error& err) {
      return dnnl_error(err);
    }
    return Status::ok();
  }

 private:
  bool fused_ = false;
  ActKind act_ = ActKind::kNone;
  std::vector<float> act_params_;
  Tensor b_const_;
  std::shared_ptr<const IgemmConv> own_;  // medq's GEMM for the constant B (see the file comment)
  PrimitiveCache<MatMulEntry> cache_;
  PackedWeightStore packed_;
};

}  // namespace

void register_dnnl_matmul(KernelRegistry& r, int priority) {
  r.add("", "Gemm", "dnnl", priority, make_factory<DnnlGemmKernel>());
  r.add(kMedqDomain, "FusedGemm", "dnnl", priority, make_factory<DnnlGemmKernel>());
  r.add("", "MatMul", "dnnl", priority, make_factory<DnnlMatMulKernel>());
  r.add(kMedqDomain, "FusedMatMul", "dnnl", priority, make_factory<DnnlMatMulKernel>());
}

}  // namespace dnnl_k
}  // namespace medq
