// Reference Conv, medq FusedConv and ConvTranspose (float32), 1-D to 3-D.
//
// Problems are lifted to 3 spatial dims. The general path is im2col into
// packed 16-column panels + a 6x16 register-blocked GEMM micro-kernel against
// weights pre-packed into 6-row panels at create time (when W is constant);
// bias, the residual Sum input and the activation are applied when the tile
// is stored. Depthwise convs (one input and one output channel per group) use
// a direct loop instead. Work is split over (batch, group, column block) with
// OpenMP.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "kernels/ref/activation.h"
#include "kernels/ref/conv_common.h"
#include "kernels/ref/tensor_common.h"
#include "ops/fused.h"
#include "ops/kernel.h"

namespace medq {

void register_ref_pool(KernelRegistry& r);  // pool.cc

namespace ref {
namespace {

constexpr int64_t kMR = 6;   // GEMM rows per micro-tile (output channels)
constexpr int64_t kNR = 16;  // GEMM columns per micro-tile (output pixels)
constexpr int64_t kNB = 64;  // columns per im2col block (a multiple of kNR)

// c[kMR x kNR] = a_panel (K x kMR, interleaved) * b_panel (K x kNR).
inline void micro_kernel(int64_t K, const float* a, const float* b, float* c) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 av = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10);
    c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20);
    c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30);
    c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40);
    c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50);
    c51 = _mm256_fmadd_ps(av, b1, c51);
    a += kMR;
    b += kNR;
  }
  _mm256_storeu_ps(c + 0 * kNR, c00);
  _mm256_storeu_ps(c + 0 * kNR + 8, c01);
  _mm256_storeu_ps(c + 1 * kNR, c10);
  _mm256_storeu_ps(c + 1 * kNR + 8, c11);
  _mm256_storeu_ps(c + 2 * kNR, c20);
  _mm256_storeu_ps(c + 2 * kNR + 8, c21);
  _mm256_storeu_ps(c + 3 * kNR, c30);
  _mm256_storeu_ps(c + 3 * kNR + 8, c31);
  _mm256_storeu_ps(c + 4 * kNR, c40);
  _mm256_storeu_ps(c + 4 * kNR + 8, c41);
  _mm256_storeu_ps(c + 5 * kNR, c50);
  _mm256_storeu_ps(c + 5 * kNR + 8, c51);
#else
  for (int64_t i = 0; i < kMR * kNR; ++i) c[i] = 0;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t r = 0; r < kMR; ++r) {
      const float av = a[r];
#pragma omp simd
      for (int64_t j = 0; j < kNR; ++j) c[r * kNR + j] += av * b[j];
    }
    a += kMR;
    b += kNR;
  }
#endif
}

class ConvKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    fused_ = n.domain == kMedqDomain;
    RETURN_IF_ERROR(attrs_.parse(n));
    group_ = n.attr_i("group", 1);
    if (group_ < 1) return error("group must be >= 1");
    if (fused_) {
      auto act = parse_activation(n.attr_s("activation", ""));
      if (!act.is_ok()) return error(act.status().message());
      act_ = act.value();
      act_params_ = complete_activation_params(act_, n.attr_floats("activation_params"));
    }
    if (n.inputs.size() < 2) return error("needs inputs X and W");
    if (const Tensor* w = info.constant_input(1)) {
      if (w->dtype() != DataType::kFloat32)
        return unsupported_error(std::string("W dtype ") + dtype_name(w->dtype()) + " is not supported (float32 only)");
      RETURN_IF_ERROR(check_weight(w->shape()));
      packed_w_ = pack_weights(*w);
      has_packed_ = true;
    }
    return Status::ok();
  }

  Status check_weight(const Shape& ws) const {
    if (ws.size() < 3) return error("W must have rank >= 3, got " + shape_str(ws));
    if (ws[0] % group_ != 0)
      return error("W has " + std::to_string(ws[0]) + " output channels, not divisible by group " + std::to_string(group_));
    if (!attrs_.kernel.empty()) {
      Shape wk(ws.begin() + 2, ws.end());
      if (attrs_.kernel != wk)
        return error("kernel_shape " + shape_str(attrs_.kernel) + " does not match W dims " + shape_str(wk));
    }
    return Status::ok();
  }

  // Per group, ceil(Mg / kMR) panels of K x kMR (rows beyond Mg are zero).
  std::vector<float> pack_weights(const Tensor& w) const {
    const int64_t M = w.dim(0), Mg = M / group_, K = w.numel() / M;
    const int64_t panels = (Mg + kMR - 1) / kMR;
    std::vector<float> p(group_ * panels * K * kMR, 0.0f);
    const float* src = w.data<float>();
    for (int64_t g = 0; g < group_; ++g)
      for (int64_t pi = 0; pi < panels; ++pi) {
        float* dst = p.data() + (g * panels + pi) * K * kMR;
        for (int64_t r = 0; r < kMR; ++r) {
          const int64_t m = pi * kMR + r;
          if (m >= Mg) break;
          const float* row = src + (g * Mg + m) * K;
          for (int64_t k = 0; k < K; ++k) dst[k * kMR + r] = row[k];
        }
      }
    return p;
  }

  Status geometry(const TensorList& in, Window3& w) const {
    const Tensor& x = *in[0];
    const Tensor& wt = *in[1];
    if (x.dtype() != DataType::kFloat32 || wt.dtype() != DataType::kFloat32)
      return unsupported_error(std::string("only float32 is supported, got X ") + dtype_name(x.dtype()) + " and W " +
                               dtype_name(wt.dtype()));
    if (x.rank() < 3) return error("X must have rank >= 3 (N, C, spatial...), got " + shape_str(x.shape()));
    if (wt.rank() != x.rank())
      return error("W " + shape_str(wt.shape()) + " and X " + shape_str(x.shape()) + " have different ranks");
    RETURN_IF_ERROR(check_weight(wt.shape()));
    const int64_t C = x.dim(1);
    if (C != wt.dim(1) * group_)
      return error("X has " + std::to_string(C) + " channels but W " + shape_str(wt.shape()) + " with group " +
                   std::to_string(group_) + " expects " + std::to_string(wt.dim(1) * group_));
    if (const Tensor* b = opt_input(in, 2)) {
      if (b->dtype() != DataType::kFloat32 || b->rank() != 1 || b->dim(0) != wt.dim(0))
        return error("B must be float32 [" + std::to_string(wt.dim(0)) + "], got " + b->desc());
    }
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    std::vector<int64_t> k_sp(wt.shape().begin() + 2, wt.shape().end());
    return compute_window(label_, attrs_, in_sp, k_sp, false, w);
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, fused_ ? 4 : 3));
    Window3 w;
    RETURN_IF_ERROR(geometry(in, w));
    Shape ys = {in[0]->dim(0), in[1]->dim(0)};
    for (int i = kMaxSpatial - w.spatial; i < kMaxSpatial; ++i) ys.push_back(w.out[i]);
    if (const Tensor* s = opt_input(in, 3)) {
      if (s->dtype() != DataType::kFloat32 || s->shape() != ys)
        return error("Sum input " + s->desc() + " must be float32 " + shape_str(ys));
    }
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    RETURN_IF_ERROR(geometry(in, w));
    const Tensor& x = *in[0];
    const Tensor& wt = *in[1];
    Tensor& y = *out[0];
    const float* bias = opt_input(in, 2) ? in[2]->data<float>() : nullptr;
    const float* sum = opt_input(in, 3) ? in[3]->data<float>() : nullptr;
    const float* params = act_params_.empty() ? nullptr : act_params_.data();
    const int64_t N = x.dim(0), C = x.dim(1), M = wt.dim(0), G = group_;
    const int64_t Cg = C / G, Mg = M / G;
    if (y.numel() == 0) return Status::ok();
    if (Cg == 1 && Mg == 1) {
      run_depthwise(x.data<float>(), wt.data<float>(), bias, sum, y.data<float>(), N, C, w, params, ctx);
      return Status::ok();
    }
    std::vector<float> local;
    const float* packed = packed_w_.data();
    if (!has_packed_) {
      local = pack_weights(wt);
      packed = local.data();
    }
    run_gemm(x.data<float>(), packed, bias, sum, y.data<float>(), N, C, M, w, params, ctx);
    return Status::ok();
  }

  // Stores a kMR x kNR tile with bias, residual and activation.
  void store_tile(const float* tile, float* y, const float* bias, const float* sum, int64_t m0, int64_t rows,
                  int64_t col0, int64_t cols, int64_t P, const float* params) const {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      float* dst = y + m * P + col0;
      const float* t = tile + r * kNR;
      const float b = bias ? bias[m] : 0.0f;
      if (sum) {
        const float* s = sum + m * P + col0;
        for (int64_t j = 0; j < cols; ++j) dst[j] = t[j] + b + s[j];
      } else {
        for (int64_t j = 0; j < cols; ++j) dst[j] = t[j] + b;
      }
      if (act_ != ActKind::kNone) apply_activation_inplace(act_, dst, cols, params);
    }
  }

  void run_gemm(const float* x, const float* packed, const float* bias, const float* sum, float* y, int64_t N,
                int64_t C, int64_t M, const Window3& w, const float* params, RunContext& ctx) const {
    const int64_t G = group_, Cg = C / G, Mg = M / G;
    const int64_t KS = w.k_size(), K = Cg * KS;
    const int64_t P = w.out_size(), HWin = w.in_size();
    const int64_t panels = (Mg + kMR - 1) / kMR;
    const int64_t nblocks = (P + kNB - 1) / kNB;
    const int64_t tasks = N * G * nblocks;
    // Kernel offsets per k index within one channel.
    std::vector<int64_t> kofs_d(KS), kofs_h(KS), kofs_w(KS);
    for (int64_t a = 0, i = 0; a < w.k[0]; ++a)
      for (int64_t b = 0; b < w.k[1]; ++b)
        for (int64_t c = 0; c < w.k[2]; ++c, ++i) {
          kofs_d[i] = a * w.d[0];
          kofs_h[i] = b * w.d[1];
          kofs_w[i] = c * w.d[2];
        }
    const double flops = 2.0 * N * M * P * K;
    const int nt = flops > 4e6 ? ctx.num_threads : 1;
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> bbuf(K * kNB);
      alignas(64) float tile[kMR * kNR];
      int64_t base_d[kNB], base_h[kNB], base_w[kNB];
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t blk = t % nblocks, g = (t / nblocks) % G, n = t / (nblocks * G);
        const int64_t col0 = blk * kNB, ncols = std::min(kNB, P - col0);
        const int64_t npan = (ncols + kNR - 1) / kNR;
        for (int64_t j = 0; j < npan * kNR; ++j) {
          int64_t p = col0 + std::min(j, ncols - 1);
          const int64_t ow = p % w.out[2], oh = (p / w.out[2]) % w.out[1], od = p / (w.out[2] * w.out[1]);
          base_d[j] = od * w.s[0] - w.pb[0];
          base_h[j] = oh * w.s[1] - w.pb[1];
          base_w[j] = ow * w.s[2] - w.pb[2];
        }
        // im2col into panels: bbuf[panel][k][kNR].
        const float* xg = x + (n * C + g * Cg) * HWin;
        for (int64_t c = 0; c < Cg; ++c) {
          const float* xc = xg + c * HWin;
          for (int64_t ki = 0; ki < KS; ++ki) {
            const int64_t k = c * KS + ki;
            for (int64_t pn = 0; pn < npan; ++pn) {
              float* dst = bbuf.data() + (pn * K + k) * kNR;
              for (int64_t jj = 0; jj < kNR; ++jj) {
                const int64_t j = pn * kNR + jj;
                const int64_t id = base_d[j] + kofs_d[ki], ih = base_h[j] + kofs_h[ki], iw = base_w[j] + kofs_w[ki];
                const bool ok = id >= 0 && id < w.in[0] && ih >= 0 && ih < w.in[1] && iw >= 0 && iw < w.in[2];
                dst[jj] = ok ? xc[(id * w.in[1] + ih) * w.in[2] + iw] : 0.0f;
              }
            }
          }
        }
        float* yg = y + (n * M + g * Mg) * P;
        const float* bg = bias ? bias + g * Mg : nullptr;
        const float* sg = sum ? sum + (n * M + g * Mg) * P : nullptr;
        for (int64_t pi = 0; pi < panels; ++pi) {
          const float* a = packed + (g * panels + pi) * K * kMR;
          const int64_t rows = std::min(kMR, Mg - pi * kMR);
          for (int64_t pn = 0; pn < npan; ++pn) {
            micro_kernel(K, a, bbuf.data() + pn * K * kNR, tile);
            const int64_t c0 = pn * kNR;
            store_tile(tile, yg, bg, sg, pi * kMR, rows, col0 + c0, std::min(kNR, ncols - c0), P, params);
          }
        }
      }
    }
  }

  void run_depthwise(const float* x, const float* wt, const float* bias, const float* sum, float* y, int64_t N,
                     int64_t C, const Window3& w, const float* params, RunContext& ctx) const {
    const int64_t P = w.out_size(), HWin = w.in_size(), KS = w.k_size();
    const int64_t OW = w.out[2];
    const int nt = N * C * P * KS > 4 * kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> acc(OW);
#pragma omp for schedule(static)
      for (int64_t nc = 0; nc < N * C; ++nc) {
        const int64_t c = nc % C;
        const float* xc = x + nc * HWin;
        const float* wc = wt + c * KS;
        float* yc = y + nc * P;
        for (int64_t od = 0; od < w.out[0]; ++od)
          for (int64_t oh = 0; oh < w.out[1]; ++oh) {
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t kd = 0; kd < w.k[0]; ++kd) {
              const int64_t id = od * w.s[0] - w.pb[0] + kd * w.d[0];
              if (id < 0 || id >= w.in[0]) continue;
              for (int64_t kh = 0; kh < w.k[1]; ++kh) {
                const int64_t ih = oh * w.s[1] - w.pb[1] + kh * w.d[1];
                if (ih < 0 || ih >= w.in[1]) continue;
                const float* xrow = xc + (id * w.in[1] + ih) * w.in[2];
                for (int64_t kw = 0; kw < w.k[2]; ++kw) {
                  const float wv = wc[(kd * w.k[1] + kh) * w.k[2] + kw];
                  const int64_t shift = kw * w.d[2] - w.pb[2];  // iw = ow * s + shift
                  // valid ow: 0 <= ow*s + shift < in
                  int64_t lo = shift >= 0 ? 0 : (-shift + w.s[2] - 1) / w.s[2];
                  int64_t hi = w.in[2] - shift <= 0 ? 0 : (w.in[2] - shift + w.s[2] - 1) / w.s[2];
                  hi = std::min(hi, OW);
                  const int64_t s = w.s[2];
                  if (s == 1) {
                    const float* xs = xrow + shift;
#pragma omp simd
                    for (int64_t ow = lo; ow < hi; ++ow) acc[ow] += wv * xs[ow];
                  } else {
                    for (int64_t ow = lo; ow < hi; ++ow) acc[ow] += wv * xrow[ow * s + shift];
                  }
                }
              }
            }
            const int64_t p0 = (od * w.out[1] + oh) * OW;
            float* dst = yc + p0;
            const float b = bias ? bias[c] : 0.0f;
            const float* s = sum ? sum + nc * P + p0 : nullptr;
            for (int64_t ow = 0; ow < OW; ++ow) dst[ow] = acc[ow] + b + (s ? s[ow] : 0.0f);
            if (act_ != ActKind::kNone) apply_activation_inplace(act_, dst, OW, params);
          }
      }
    }
  }

 private:
  bool fused_ = false;
  WindowAttrs attrs_;
  int64_t group_ = 1;
  ActKind act_ = ActKind::kNone;
  std::vector<float> act_params_;
  bool has_packed_ = false;
  std::vector<float> packed_w_;
};

// ConvTranspose (float32, 1-D to 3-D): X [N, C, in...], W [C, M/group, k...],
// B [M]. Each input pixel scatters its kernel-weighted value into the output;
// work is split over (batch, output channel) so threads never write the same
// element. Output size: output_shape if given (pads derived from it), else
// stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - pads; auto_pad
// SAME_* gives in * stride with the odd pad at the end (UPPER) or start (LOWER).
class ConvTransposeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    RETURN_IF_ERROR(attrs_.parse(n));
    group_ = n.attr_i("group", 1);
    if (group_ < 1) return error("group must be >= 1");
    output_padding_ = n.attr_ints("output_padding");
    output_shape_ = n.attr_ints("output_shape");
    return Status::ok();
  }

  Status geometry(const TensorList& in, Window3& w) const {
    const Tensor& x = *in[0];
    const Tensor& wt = *in[1];
    if (x.dtype() != DataType::kFloat32 || wt.dtype() != DataType::kFloat32)
      return unsupported_error(std::string("only float32 is supported, got X ") + dtype_name(x.dtype()) + " and W " +
                               dtype_name(wt.dtype()));
    if (x.rank() < 3) return error("X must have rank >= 3 (N, C, spatial...), got " + shape_str(x.shape()));
    if (wt.rank() != x.rank())
      return error("W " + shape_str(wt.shape()) + " and X " + shape_str(x.shape()) + " have different ranks");
    if (x.dim(1) != wt.dim(0))
      return error("X has " + std::to_string(x.dim(1)) + " channels but W " + shape_str(wt.shape()) + " expects " +
                   std::to_string(wt.dim(0)));
    if (wt.dim(0) % group_ != 0)
      return error("W has " + std::to_string(wt.dim(0)) + " input channels, not divisible by group " +
                   std::to_string(group_));
    const int ns = x.rank() - 2;
    if (ns > kMaxSpatial) return unsupported_error(std::to_string(ns) + " spatial dims are not supported (1 to 3)");
    Shape k_sp(wt.shape().begin() + 2, wt.shape().end());
    if (!attrs_.kernel.empty() && attrs_.kernel != k_sp)
      return error("kernel_shape " + shape_str(attrs_.kernel) + " does not match W dims " + shape_str(k_sp));
    auto check_len = [&](const std::vector<int64_t>& v, size_t want, const char* what) -> Status {
      if (!v.empty() && v.size() != want)
        return error(std::string(what) + " has " + std::to_string(v.size()) + " entries, expected " + std::to_string(want));
      return Status::ok();
    };
    RETURN_IF_ERROR(check_len(attrs_.strides, ns, "strides"));
    RETURN_IF_ERROR(check_len(attrs_.dilations, ns, "dilations"));
    RETURN_IF_ERROR(check_len(output_padding_, ns, "output_padding"));
    if (attrs_.auto_pad == "NOTSET") RETURN_IF_ERROR(check_len(attrs_.pads, 2 * ns, "pads"));
    std::vector<int64_t> oshape = output_shape_;
    if (oshape.size() == static_cast<size_t>(ns + 2)) oshape.erase(oshape.begin(), oshape.begin() + 2);
    RETURN_IF_ERROR(check_len(oshape, ns, "output_shape"));
    if (const Tensor* b = opt_input(in, 2)) {
      const int64_t M = wt.dim(1) * group_;
      if (b->dtype() != DataType::kFloat32 || b->rank() != 1 || b->dim(0) != M)
        return error("B must be float32 [" + std::to_string(M) + "], got " + b->desc());
    }
    w = Window3();
    w.spatial = ns;
    const int off = kMaxSpatial - ns;
    for (int i = 0; i < ns; ++i) {
      const int j = off + i;
      const int64_t in_sz = x.dim(2 + i), k = k_sp[i];
      const int64_t s = attrs_.strides.empty() ? 1 : attrs_.strides[i];
      const int64_t d = attrs_.dilations.empty() ? 1 : attrs_.dilations[i];
      const int64_t op = output_padding_.empty() ? 0 : output_padding_[i];
      if (k < 1 || s < 1 || d < 1) return error("kernel_shape, strides and dilations must be positive");
      if (op < 0) return error("output_padding must be >= 0");
      const int64_t dk = (k - 1) * d + 1;
      const int64_t full = s * (in_sz - 1) + op + dk;
      int64_t pb = 0, pe = 0, out = 0;
      if (!oshape.empty() || attrs_.auto_pad == "SAME_UPPER" || attrs_.auto_pad == "SAME_LOWER") {
        out = !oshape.empty() ? oshape[i] : in_sz * s;
        // A negative total (output_shape beyond the full output) gives
        // negative pads: the extra border only gets the bias. Floor division
        // as in the ONNX reference.
        const int64_t t = full - out;
        const int64_t half = t >= 0 ? t / 2 : -((-t + 1) / 2);
        if (attrs_.auto_pad == "SAME_UPPER") {
          pb = half;
          pe = t - pb;
        } else {
          pe = half;
          pb = t - pe;
        }
        if (out < 1) return error("output size " + std::to_string(out) + " < 1 in spatial dim " + std::to_string(i));
      } else {
        if (attrs_.auto_pad == "NOTSET" && !attrs_.pads.empty()) {
          pb = attrs_.pads[i];
          pe = attrs_.pads[i + ns];
          if (pb < 0 || pe < 0) return error("negative pads are not supported");
        }
        out = full - pb - pe;
        if (out < 1) return error("output size " + std::to_string(out) + " < 1 in spatial dim " + std::to_string(i));
      }
      w.in[j] = in_sz;
      w.out[j] = out;
      w.k[j] = k;
      w.s[j] = s;
      w.d[j] = d;
      w.pb[j] = pb;
      w.pe[j] = pe;
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    Window3 w;
    RETURN_IF_ERROR(geometry(in, w));
    Shape ys = {in[0]->dim(0), in[1]->dim(1) * group_};
    for (int i = kMaxSpatial - w.spatial; i < kMaxSpatial; ++i) ys.push_back(w.out[i]);
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, ys};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    RETURN_IF_ERROR(geometry(in, w));
    const Tensor& xt = *in[0];
    const Tensor& wt = *in[1];
    Tensor& yt = *out[0];
    if (yt.numel() == 0) return Status::ok();
    const float* x = xt.data<float>();
    const float* wd = wt.data<float>();
    const float* bias = opt_input(in, 2) ? in[2]->data<float>() : nullptr;
    float* y = yt.data<float>();
    const int64_t N = xt.dim(0), C = xt.dim(1), G = group_, Cg = C / G, Mg = wt.dim(1), M = Mg * G;
    const int64_t P = w.out_size(), HWin = w.in_size(), KS = w.k_size();
    const double work = static_cast<double>(N) * C * Mg * HWin * KS;
    const int nt = work > 4 * kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t nm = 0; nm < N * M; ++nm) {
      const int64_t n = nm / M, m = nm % M, g = m / Mg, mg = m % Mg;
      float* yc = y + nm * P;
      std::fill(yc, yc + P, bias ? bias[m] : 0.0f);
      for (int64_t cg = 0; cg < Cg; ++cg) {
        const int64_t c = g * Cg + cg;
        const float* xc = x + (n * C + c) * HWin;
        const float* wc = wd + (c * Mg + mg) * KS;
        for (int64_t id = 0; id < w.in[0]; ++id)
          for (int64_t ih = 0; ih < w.in[1]; ++ih)
            for (int64_t iw = 0; iw < w.in[2]; ++iw) {
              const float xv = xc[(id * w.in[1] + ih) * w.in[2] + iw];
              if (xv == 0.0f) continue;
              for (int64_t kd = 0; kd < w.k[0]; ++kd) {
                const int64_t od = id * w.s[0] - w.pb[0] + kd * w.d[0];
                if (od < 0 || od >= w.out[0]) continue;
                for (int64_t kh = 0; kh < w.k[1]; ++kh) {
                  const int64_t oh = ih * w.s[1] - w.pb[1] + kh * w.d[1];
                  if (oh < 0 || oh >= w.out[1]) continue;
                  float* yrow = yc + (od * w.out[1] + oh) * w.out[2];
                  const float* wrow = wc + (kd * w.k[1] + kh) * w.k[2];
                  for (int64_t kw = 0; kw < w.k[2]; ++kw) {
                    const int64_t ow = iw * w.s[2] - w.pb[2] + kw * w.d[2];
                    if (ow < 0 || ow >= w.out[2]) continue;
                    yrow[ow] += xv * wrow[kw];
                  }
                }
              }
            }
      }
    }
    return Status::ok();
  }

 private:
  WindowAttrs attrs_;
  int64_t group_ = 1;
  std::vector<int64_t> output_padding_, output_shape_;
};

}  // namespace
}  // namespace ref

void register_ref_nn(KernelRegistry& r) {
  r.add("", "Conv", "ref", 0, make_factory<ref::ConvKernel>());
  r.add("", "ConvTranspose", "ref", 0, make_factory<ref::ConvTransposeKernel>());
  r.add(kMedqDomain, "FusedConv", "ref", 0, make_factory<ref::ConvKernel>());
  register_ref_pool(r);
}

}  // namespace medq
