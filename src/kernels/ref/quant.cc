// Reference quantized ops (ONNX opsets 10..18):
//   QuantizeLinear / DequantizeLinear (uint8/int8, int32 for DequantizeLinear;
//     per tensor, or per axis from opset 13), DynamicQuantizeLinear,
//   ConvInteger, QLinearConv, QLinearMatMul, medq QAdd (int8 residual add),
// and the reference (oracle) implementation of the medq fused int8 ops
// QConv and QMatMul (ops/fused.h): exact int32 accumulation, then
// real = acc * x_scale * w_scale[o] + bias, activation, requantization.
//
// Rounding is half to even and saturating (quant_common.h). Integer
// convolutions treat padding as the zero point (0 after subtracting it), as
// the ONNX reference does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/ref/conv_common.h"
#include "kernels/ref/quant_common.h"
#include "kernels/ref/tensor_common.h"
#include "ops/fused.h"

namespace medq {
namespace ref {
namespace {

using quant::quantize_value;

// Elements per parallel work item of (De)QuantizeLinear.
constexpr int64_t kChunk = 16384;

// Element i of a uint8/int8/int32 tensor as int32.
inline int32_t int_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DataType::kUInt8: return t.data<uint8_t>()[i];
    case DataType::kInt8: return t.data<int8_t>()[i];
    case DataType::kInt32: return t.data<int32_t>()[i];
    default: return 0;
  }
}

// Values of a scale / zero-point input broadcast to `n` entries (per tensor or per axis).
std::vector<float> scales_of(const Tensor& t, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = t.data<float>()[t.numel() == 1 ? 0 : i];
  return v;
}
std::vector<int32_t> zps_of(const Tensor* t, int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n), 0);
  if (t)
    for (int64_t i = 0; i < n; ++i) v[i] = int_at(*t, t->numel() == 1 ? 0 : i);
  return v;
}

// ---------------------------------------------------------------- Quantize / Dequantize

// Shared validation of (x, scale, zero_point, axis): fills the per-axis split
// outer x axis_len x inner (axis_len == 1 for per-tensor quantization).
class QdqKernel : public TensorKernel {
 protected:
  Status init_axis(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", 1);
    return Status::ok();
  }

  Status split(const Tensor& x, const Tensor& scale, const Tensor* zp, int64_t* outer, int64_t* len,
               int64_t* inner) const {
    if (scale.dtype() != DataType::kFloat32)
      return error(std::string("scale must be float32, got ") + dtype_name(scale.dtype()));
    if (scale.rank() > 1) return error("scale must be a scalar or 1-D, got shape " + shape_str(scale.shape()));
    if (zp && zp->shape() != scale.shape() && !(zp->numel() == 1 && scale.numel() == 1))
      return error("zero_point shape " + shape_str(zp->shape()) + " differs from scale shape " +
                   shape_str(scale.shape()));
    *outer = 1;
    *len = 1;
    *inner = x.numel();
    if (scale.numel() == 1) return Status::ok();  // per tensor (scalar or 1-element 1-D)
    if (scale.rank() != 1) return error("scale must have one element, got shape " + shape_str(scale.shape()));
    if (opset_ < 13) return error("per-axis scales need opset 13, the model has opset " + std::to_string(opset_));
    if (axis_ < -x.rank() || axis_ >= x.rank())
      return error("axis " + std::to_string(axis_) + " is out of range for input rank " + std::to_string(x.rank()));
    const int a = static_cast<int>(axis_ < 0 ? axis_ + x.rank() : axis_);
    if (scale.numel() != x.dim(a))
      return error("scale has " + std::to_string(scale.numel()) + " elements but input dim " + std::to_string(a) +
                   " is " + std::to_string(x.dim(a)));
    for (int i = 0; i < a; ++i) *outer *= x.dim(i);
    *len = x.dim(a);
    *inner = 1;
    for (int i = a + 1; i < x.rank(); ++i) *inner *= x.dim(i);
    return Status::ok();
  }

  int64_t axis_ = 1;
};

class QuantizeLinearKernel : public QdqKernel {
 public:
  Status init(const KernelCreateInfo& info) { return init_axis(info); }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    const Tensor& x = *in[0];
    if (x.dtype() != DataType::kFloat32 && x.dtype() != DataType::kInt32)
      return error(std::string("x must be float32 or int32, got ") + dtype_name(x.dtype()));
    const Tensor* zp = opt_input(in, 2);
    if (zp && !quant::is_q8(zp->dtype()))
      return unsupported_error(std::string("y_zero_point dtype ") + dtype_name(zp->dtype()) +
                               " is not supported (uint8, int8)");
    int64_t o, l, i;
    RETURN_IF_ERROR(split(x, *in[1], zp, &o, &l, &i));
    out.resize(num_outputs_);
    out[0] = {zp ? zp->dtype() : DataType::kUInt8, x.shape()};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    const Tensor* zp = opt_input(in, 2);
    int64_t outer, len, inner;
    RETURN_IF_ERROR(split(x, *in[1], zp, &outer, &len, &inner));
    const std::vector<float> s = scales_of(*in[1], len);
    const std::vector<int32_t> z = zps_of(zp, len);
    Tensor& y = *out[0];
    int32_t lo, hi;
    quant::qrange(y.dtype(), &lo, &hi);
    if (y.dtype() == DataType::kUInt8) run_t(x, s, z, lo, hi, outer, len, inner, y.data<uint8_t>(), ctx);
    else run_t(x, s, z, lo, hi, outer, len, inner, y.data<int8_t>(), ctx);
    return Status::ok();
  }

 private:
  template <class T>
  static void run_t(const Tensor& x, const std::vector<float>& s, const std::vector<int32_t>& z, int32_t lo,
                    int32_t hi, int64_t outer, int64_t len, int64_t inner, T* y, RunContext& ctx) {
    const int64_t rows = outer * len;
    const int nt = x.numel() > kParallelThreshold ? ctx.num_threads : 1;
    const bool is_f = x.dtype() == DataType::kFloat32;
    const float* xf = is_f ? x.data<float>() : nullptr;
    const int32_t* xi = is_f ? nullptr : x.data<int32_t>();
    // Work items are (row, chunk of the row): a per-tensor quantization is one row (the
    // model input: 8x3x224x224 values), which must still use every thread.
    const int64_t per_row = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < rows * per_row; ++t) {
      const int64_t r = t / per_row, j0 = (t % per_row) * kChunk, j1 = std::min(inner, j0 + kChunk);
      const float sc = s[r % len];
      const int32_t zz = z[r % len];
      const int64_t base = r * inner;
      const float fz = static_cast<float>(zz), flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
      if (xf) {
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) y[base + j] = static_cast<T>(quant::quantize_fast(xf[base + j], sc, fz, flo, fhi));
      } else {
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j)
          y[base + j] = static_cast<T>(quant::quantize_fast(static_cast<float>(xi[base + j]), sc, fz, flo, fhi));
      }
    }
  }
};

class DequantizeLinearKernel : public QdqKernel {
 public:
  Status init(const KernelCreateInfo& info) { return init_axis(info); }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    const Tensor& x = *in[0];
    if (!quant::is_q8(x.dtype()) && x.dtype() != DataType::kInt32)
      return error(std::string("x must be uint8, int8 or int32, got ") + dtype_name(x.dtype()));
    const Tensor* zp = opt_input(in, 2);
    if (zp && zp->dtype() != x.dtype())
      return error(std::string("x_zero_point dtype ") + dtype_name(zp->dtype()) + " differs from x dtype " +
                   dtype_name(x.dtype()));
    int64_t o, l, i;
    RETURN_IF_ERROR(split(x, *in[1], zp, &o, &l, &i));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, x.shape()};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    const Tensor* zp = opt_input(in, 2);
    int64_t outer, len, inner;
    RETURN_IF_ERROR(split(x, *in[1], zp, &outer, &len, &inner));
    const std::vector<float> s = scales_of(*in[1], len);
    const std::vector<int32_t> z = zps_of(zp, len);
    float* y = out[0]->data<float>();
    switch (x.dtype()) {
      case DataType::kUInt8: run_t(x.data<uint8_t>(), s, z, outer, len, inner, y, ctx); break;
      case DataType::kInt8: run_t(x.data<int8_t>(), s, z, outer, len, inner, y, ctx); break;
      default: run_t(x.data<int32_t>(), s, z, outer, len, inner, y, ctx); break;
    }
    return Status::ok();
  }

 private:
  template <class T>
  static void run_t(const T* x, const std::vector<float>& s, const std::vector<int32_t>& z, int64_t outer,
                    int64_t len, int64_t inner, float* y, RunContext& ctx) {
    const int64_t rows = outer * len;
    const int nt = rows * inner > kParallelThreshold ? ctx.num_threads : 1;
    const int64_t per_row = (inner + kChunk - 1) / kChunk;  // (row, chunk) work items, as in QuantizeLinear
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < rows * per_row; ++t) {
      const int64_t r = t / per_row, j0 = (t % per_row) * kChunk, j1 = std::min(inner, j0 + kChunk);
      const float sc = s[r % len];
      const int32_t zz = z[r % len];
      const int64_t base = r * inner;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) y[base + j] = static_cast<float>(static_cast<int32_t>(x[base + j]) - zz) * sc;
    }
  }
};

class DynamicQuantizeLinearKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    if (in[0]->dtype() != DataType::kFloat32)
      return error(std::string("x must be float32, got ") + dtype_name(in[0]->dtype()));
    out.resize(num_outputs_);
    out[0] = {DataType::kUInt8, in[0]->shape()};
    if (num_outputs_ > 1) out[1] = {DataType::kFloat32, {}};
    if (num_outputs_ > 2) out[2] = {DataType::kUInt8, {}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    const float* px = x.data<float>();
    const int64_t n = x.numel();
    float mn = 0.f, mx = 0.f;  // the range always includes 0
    for (int64_t i = 0; i < n; ++i) {
      mn = std::min(mn, px[i]);
      mx = std::max(mx, px[i]);
    }
    const float scale = (mx - mn) / 255.f;
    int32_t zp = 0;
    if (scale > 0.f) zp = quantize_value(0.f - mn / scale, 1.f, 0, 0, 255);
    uint8_t* y = out[0]->data<uint8_t>();
    const int nt = n > kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i)
      y[i] = scale > 0.f ? static_cast<uint8_t>(quantize_value(px[i], scale, zp, 0, 255)) : 0;
    if (Tensor* s = out_at(out, 1)) s->data<float>()[0] = scale;
    if (Tensor* z = out_at(out, 2)) z->data<uint8_t>()[0] = static_cast<uint8_t>(zp);
    return Status::ok();
  }
};

// ---------------------------------------------------------------- integer convolution

// acc[n, o, p] = sum over (c, k) of (x - x_zp) * wz[o, c, k]  (padding contributes 0)
// wz: [O, C/group * K] int32 (weight minus its zero point).
template <class T>
void int_conv_t(const T* x, int32_t xzp, const int32_t* wz, int64_t N, int64_t C, int64_t O, int64_t G,
                const Window3& w, int32_t* acc, int threads) {
  const int64_t Cg = C / G, Og = O / G, K = w.k_size(), P = w.out_size(), Kc = Cg * K;
  const int64_t IS = w.in_size();
  std::vector<int32_t> col(static_cast<size_t>(Kc * P));
  const int nt = Kc * P * Og > kParallelThreshold ? threads : 1;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const T* xg = x + (n * C + g * Cg) * IS;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t row = 0; row < Kc; ++row) {
        const int64_t c = row / K, kk = row % K;
        const int64_t k0 = kk / (w.k[1] * w.k[2]), k1 = (kk / w.k[2]) % w.k[1], k2 = kk % w.k[2];
        const T* xc = xg + c * IS;
        int32_t* dst = col.data() + row * P;
        for (int64_t o0 = 0; o0 < w.out[0]; ++o0) {
          const int64_t i0 = o0 * w.s[0] - w.pb[0] + k0 * w.d[0];
          const bool in0 = i0 >= 0 && i0 < w.in[0];
          for (int64_t o1 = 0; o1 < w.out[1]; ++o1) {
            const int64_t i1 = o1 * w.s[1] - w.pb[1] + k1 * w.d[1];
            const bool in1 = in0 && i1 >= 0 && i1 < w.in[1];
            int32_t* d = dst + (o0 * w.out[1] + o1) * w.out[2];
            const T* xr = xc + (i0 * w.in[1] + i1) * w.in[2];
            for (int64_t o2 = 0; o2 < w.out[2]; ++o2) {
              const int64_t i2 = o2 * w.s[2] - w.pb[2] + k2 * w.d[2];
              d[o2] = in1 && i2 >= 0 && i2 < w.in[2] ? static_cast<int32_t>(xr[i2]) - xzp : 0;
            }
          }
        }
      }
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t oc = 0; oc < Og; ++oc) {
        const int64_t o = g * Og + oc;
        int32_t* out = acc + (n * O + o) * P;
        std::fill(out, out + P, 0);
        const int32_t* wr = wz + o * Kc;
        for (int64_t k = 0; k < Kc; ++k) {
          const int32_t wv = wr[k];
          if (wv == 0) continue;
          const int32_t* cr = col.data() + k * P;
#pragma omp simd
          for (int64_t p = 0; p < P; ++p) out[p] += wv * cr[p];
        }
      }
    }
  }
}

void int_conv(const Tensor& x, int32_t xzp, const std::vector<int32_t>& wz, int64_t O, int64_t G, const Window3& w,
              int32_t* acc, int threads) {
  if (x.dtype() == DataType::kUInt8)
    int_conv_t(x.data<uint8_t>(), xzp, wz.data(), x.dim(0), x.dim(1), O, G, w, acc, threads);
  else
    int_conv_t(x.data<int8_t>(), xzp, wz.data(), x.dim(0), x.dim(1), O, G, w, acc, threads);
}

// Shared geometry of the integer convolutions (ConvInteger, QLinearConv, QConv).
class IntConvBase : public TensorKernel {
 protected:
  Status init_conv(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(attrs_.parse(info.node));
    group_ = info.node.attr_i("group", 1);
    if (group_ < 1) return error("group must be >= 1");
    return Status::ok();
  }

  // Validates x / w (8-bit, ranks, channels) and computes the window and Y's shape.
  Status geometry(const Tensor& x, const Tensor& wt, Window3& w, Shape& ys) const {
    if (!quant::is_q8(x.dtype())) return error(std::string("X must be uint8 or int8, got ") + dtype_name(x.dtype()));
    if (!quant::is_q8(wt.dtype())) return error(std::string("W must be uint8 or int8, got ") + dtype_name(wt.dtype()));
    if (x.rank() < 3) return error("X must have rank >= 3, got " + shape_str(x.shape()));
    if (wt.rank() != x.rank())
      return error("X " + shape_str(x.shape()) + " and W " + shape_str(wt.shape()) + " have different ranks");
    if (wt.dim(0) % group_ != 0) return error("W output channels not divisible by group");
    if (x.dim(1) != wt.dim(1) * group_)
      return error("X has " + std::to_string(x.dim(1)) + " channels but W " + shape_str(wt.shape()) +
                   " with group " + std::to_string(group_) + " expects " + std::to_string(wt.dim(1) * group_));
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    std::vector<int64_t> k_sp(wt.shape().begin() + 2, wt.shape().end());
    if (!attrs_.kernel.empty() && attrs_.kernel != k_sp)
      return error("kernel_shape " + shape_str(attrs_.kernel) + " does not match W dims " + shape_str(wt.shape()));
    RETURN_IF_ERROR(compute_window(label_, attrs_, in_sp, k_sp, false, w));
    ys = {x.dim(0), wt.dim(0)};
    for (int i = kMaxSpatial - w.spatial; i < kMaxSpatial; ++i) ys.push_back(w.out[i]);
    return Status::ok();
  }

  // W minus its zero point (scalar or per output channel) as int32 [O, rest].
  static std::vector<int32_t> weights_minus_zp(const Tensor& wt, const Tensor* wzp) {
    const int64_t O = wt.dim(0), per = wt.numel() / std::max<int64_t>(O, 1);
    std::vector<int32_t> wz(static_cast<size_t>(wt.numel()));
    const std::vector<int32_t> z = zps_of(wzp, O);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < per; ++i) wz[o * per + i] = int_at(wt, o * per + i) - z[o];
    return wz;
  }

  Status check_zp(const Tensor* zp, const Tensor& of, int64_t per_channel, const char* what) const {
    if (!zp) return Status::ok();
    if (zp->dtype() != of.dtype())
      return error(std::string(what) + " dtype " + dtype_name(zp->dtype()) + " differs from " + dtype_name(of.dtype()));
    if (zp->numel() != 1 && (per_channel == 0 || zp->numel() != per_channel || zp->rank() != 1))
      return error(std::string(what) + " shape " + shape_str(zp->shape()) + " must be a scalar" +
                   (per_channel ? " or [" + std::to_string(per_channel) + "]" : std::string()));
    return Status::ok();
  }

  WindowAttrs attrs_;
  int64_t group_ = 1;
};

class ConvIntegerKernel : public IntConvBase {
 public:
  Status init(const KernelCreateInfo& info) { return init_conv(info); }

  Status check(const TensorList& in, Window3& w, Shape& ys) const {
    RETURN_IF_ERROR(check_inputs(in, 2, 4));
    RETURN_IF_ERROR(geometry(*in[0], *in[1], w, ys));
    RETURN_IF_ERROR(check_zp(opt_input(in, 2), *in[0], 0, "x_zero_point"));
    return check_zp(opt_input(in, 3), *in[1], in[1]->dim(0), "w_zero_point");
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(check(in, w, ys));
    out.resize(num_outputs_);
    out[0] = {DataType::kInt32, ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(check(in, w, ys));
    const Tensor* xzp = opt_input(in, 2);
    const std::vector<int32_t> wz = weights_minus_zp(*in[1], opt_input(in, 3));
    int_conv(*in[0], xzp ? int_at(*xzp, 0) : 0, wz, in[1]->dim(0), group_, w, out[0]->data<int32_t>(),
             ctx.num_threads);
    return Status::ok();
  }
};

// Writes y[n, o, p] from int32 accumulators: real = acc * mult[o] + bias[o];
// activation; then float output or quantize(real, y_scale, y_zp).
void requantize_rows(const int32_t* acc, int64_t rows, int64_t O, int64_t P, const std::vector<float>& mult,
                     const std::vector<float>& bias, ActKind act, const float* act_params, Tensor& y, float y_scale,
                     int32_t y_zp, int threads) {
  int32_t lo, hi;
  quant::qrange(y.dtype(), &lo, &hi);
  const int nt = rows * O * P > kParallelThreshold ? threads : 1;
  const DataType dt = y.dtype();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows * O; ++r) {
    const int64_t o = r % O;
    const float m = mult[o], b = bias.empty() ? 0.f : bias[o];
    const float fz = static_cast<float>(y_zp), flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
    const int32_t* a = acc + r * P;
    for (int64_t p = 0; p < P; ++p) {
      float v = static_cast<float>(a[p]) * m + b;
      if (act != ActKind::kNone) v = apply_activation(act, v, act_params);
      const int64_t i = r * P + p;
      if (dt == DataType::kFloat32) y.data<float>()[i] = v;
      else if (dt == DataType::kUInt8) y.data<uint8_t>()[i] = static_cast<uint8_t>(quant::quantize_fast(v, y_scale, fz, flo, fhi));
      else y.data<int8_t>()[i] = static_cast<int8_t>(quant::quantize_fast(v, y_scale, fz, flo, fhi));
    }
  }
}

// QLinearConv: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, [B int32].
class QLinearConvKernel : public IntConvBase {
 public:
  Status init(const KernelCreateInfo& info) { return init_conv(info); }

  Status check(const TensorList& in, Window3& w, Shape& ys) const {
    RETURN_IF_ERROR(check_inputs(in, 8, 9));
    const Tensor& x = *in[0];
    const Tensor& wt = *in[3];
    RETURN_IF_ERROR(geometry(x, wt, w, ys));
    const int64_t O = wt.dim(0);
    for (int i : {1, 4, 6}) {
      const Tensor& s = *in[i];
      if (s.dtype() != DataType::kFloat32) return error("scale input " + std::to_string(i) + " must be float32");
      if (s.numel() != 1 && !(i == 4 && s.rank() == 1 && s.numel() == O))
        return error("scale input " + std::to_string(i) + " has shape " + shape_str(s.shape()) +
                     (i == 4 ? ", expected a scalar or [" + std::to_string(O) + "]" : ", expected a scalar"));
    }
    RETURN_IF_ERROR(check_zp(in[2], x, 0, "x_zero_point"));
    RETURN_IF_ERROR(check_zp(in[5], wt, O, "w_zero_point"));
    if (!quant::is_q8(in[7]->dtype()) || in[7]->numel() != 1)
      return error("y_zero_point must be a uint8/int8 scalar, got " + in[7]->desc());
    if (const Tensor* b = opt_input(in, 8))
      if (b->dtype() != DataType::kInt32 || b->rank() != 1 || b->dim(0) != O)
        return error("B must be int32 [" + std::to_string(O) + "], got " + b->desc());
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(check(in, w, ys));
    out.resize(num_outputs_);
    out[0] = {in[7]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(check(in, w, ys));
    const Tensor& x = *in[0];
    const Tensor& wt = *in[3];
    const int64_t O = wt.dim(0), P = w.out_size();
    const std::vector<int32_t> wz = weights_minus_zp(wt, in[5]);
    std::vector<int32_t> acc(static_cast<size_t>(x.dim(0) * O * P));
    int_conv(x, int_at(*in[2], 0), wz, O, group_, w, acc.data(), ctx.num_threads);
    const float xs = in[1]->data<float>()[0];
    const std::vector<float> ws = scales_of(*in[4], O);
    std::vector<float> mult(O), bias;
    for (int64_t o = 0; o < O; ++o) mult[o] = xs * ws[o];
    if (const Tensor* b = opt_input(in, 8)) {
      bias.resize(O);
      for (int64_t o = 0; o < O; ++o) bias[o] = static_cast<float>(b->data<int32_t>()[o]) * mult[o];
    }
    requantize_rows(acc.data(), x.dim(0), O, P, mult, bias, ActKind::kNone, nullptr, *out[0],
                    in[6]->data<float>()[0], int_at(*in[7], 0), ctx.num_threads);
    return Status::ok();
  }
};

// medq QConv (reference / oracle): X_q, W_q, [B int32 (accumulator units) or float32].
class QConvRefKernel : public IntConvBase {
 public:
  Status init(const KernelCreateInfo& info) {
    RETURN_IF_ERROR(init_conv(info));
    RETURN_IF_ERROR(p_.parse(info.node));
    if (info.node.has_input(3)) return unsupported_error("the Sum input is not supported");
    if (const Tensor* w = info.constant_input(1)) wz_ = weights_minus_zp(*w, nullptr);
    return Status::ok();
  }

  Status check(const TensorList& in, Window3& w, Shape& ys) const {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    RETURN_IF_ERROR(geometry(*in[0], *in[1], w, ys));
    const int64_t O = in[1]->dim(0);
    if (p_.w_scales.size() != 1 && static_cast<int64_t>(p_.w_scales.size()) != O)
      return error("w_scales has " + std::to_string(p_.w_scales.size()) + " entries, expected 1 or " +
                   std::to_string(O));
    if (const Tensor* b = opt_input(in, 2))
      if ((b->dtype() != DataType::kInt32 && b->dtype() != DataType::kFloat32) || b->rank() != 1 || b->dim(0) != O)
        return error("B must be int32 or float32 [" + std::to_string(O) + "], got " + b->desc());
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(check(in, w, ys));
    out.resize(num_outputs_);
    out[0] = {p_.out_dtype, ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    Shape ys;
    RETURN_IF_ERROR(check(in, w, ys));
    const Tensor& x = *in[0];
    const int64_t O = in[1]->dim(0), P = w.out_size();
    std::vector<int32_t> wz_run;
    if (wz_.empty()) wz_run = weights_minus_zp(*in[1], nullptr);
    const std::vector<int32_t>& wz = wz_.empty() ? wz_run : wz_;
    std::vector<int32_t> acc(static_cast<size_t>(x.dim(0) * O * P));
    int_conv(x, p_.x_zp, wz, O, group_, w, acc.data(), ctx.num_threads);
    std::vector<float> mult(O), bias;
    for (int64_t o = 0; o < O; ++o) mult[o] = p_.x_scale * p_.w_scale(o);
    if (const Tensor* b = opt_input(in, 2)) {
      bias.resize(O);
      for (int64_t o = 0; o < O; ++o)
        bias[o] = b->dtype() == DataType::kInt32 ? static_cast<float>(b->data<int32_t>()[o]) * mult[o]
                                                 : b->data<float>()[o];
    }
    requantize_rows(acc.data(), x.dim(0), O, P, mult, bias, p_.act, p_.act_params.data(), *out[0], p_.y_scale,
                    p_.y_zp, ctx.num_threads);
    return Status::ok();
  }

 private:
  quant::QParams p_;
  std::vector<int32_t> wz_;  // pre-converted constant weights
};

// ---------------------------------------------------------------- integer matmul

struct IntMmGeom {
  int64_t M = 0, N = 0, K = 0, batch = 1;
  Shape out_shape;
  std::vector<int64_t> a_idx, b_idx;  // per output batch: batch index into A / B
};

// numpy matmul geometry (1-D operands promoted and their dims dropped from the output).
Status int_mm_geom(const std::string& label, Shape as, Shape bs, IntMmGeom& g) {
  if (as.empty() || bs.empty()) return invalid_argument(label + ": matmul operands must have rank >= 1");
  const bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  g.M = as[as.size() - 2];
  g.K = as.back();
  g.N = bs.back();
  if (bs[bs.size() - 2] != g.K)
    return invalid_argument(label + ": inner dims differ: A " + shape_str(as) + ", B " + shape_str(bs));
  Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  auto br = broadcast_shapes(ab, bb);
  if (!br.is_ok()) return invalid_argument(label + ": batch dims do not broadcast: A " + shape_str(as) + ", B " + shape_str(bs));
  const Shape& ob = br.value();
  g.batch = shape_numel(ob);
  g.out_shape = ob;
  if (!a1) g.out_shape.push_back(g.M);
  if (!b1) g.out_shape.push_back(g.N);
  g.a_idx.assign(g.batch, 0);
  g.b_idx.assign(g.batch, 0);
  const int r = static_cast<int>(ob.size());
  for (int64_t i = 0; i < g.batch; ++i) {
    int64_t rem = i, ai = 0, bi = 0, am = 1, bm = 1;
    for (int d = r - 1; d >= 0; --d) {
      const int64_t idx = rem % ob[d];
      rem /= ob[d];
      const int da = d - (r - static_cast<int>(ab.size())), db = d - (r - static_cast<int>(bb.size()));
      if (da >= 0) {
        ai += (ab[da] == 1 ? 0 : idx) * am;
        am *= ab[da];
      }
      if (db >= 0) {
        bi += (bb[db] == 1 ? 0 : idx) * bm;
        bm *= bb[db];
      }
    }
    g.a_idx[i] = ai;
    g.b_idx[i] = bi;
  }
  return Status::ok();
}

// acc[b, m, n] = sum_k (a - azp[m]) * bz[b', k, n]; bz already has B's zero point removed.
void int_matmul(const Tensor& a, const std::vector<int32_t>& azp, const int32_t* bz, const IntMmGeom& g, int32_t* acc,
                int threads) {
  const int64_t M = g.M, N = g.N, K = g.K;
  const int nt = g.batch * M * N * K > kParallelThreshold ? threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < g.batch * M; ++r) {
    const int64_t bi = r / M, i = r % M;
    const int64_t abase = (g.a_idx[bi] * M + i) * K;
    const int32_t* pb = bz + g.b_idx[bi] * K * N;
    int32_t* row = acc + r * N;
    std::fill(row, row + N, 0);
    for (int64_t k = 0; k < K; ++k) {
      const int32_t av = int_at(a, abase + k) - azp[i];
      if (av == 0) continue;
      const int32_t* brow = pb + k * N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) row[j] += av * brow[j];
    }
  }
}

// B [.., K, N] minus per-column zero point as int32.
std::vector<int32_t> b_minus_zp(const Tensor& b, const std::vector<int32_t>& zb) {
  const int64_t N = b.dim(-1);
  std::vector<int32_t> bz(static_cast<size_t>(b.numel()));
  for (int64_t i = 0; i < b.numel(); ++i) bz[i] = int_at(b, i) - zb[N == 0 ? 0 : i % N];
  return bz;
}

// QLinearMatMul: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp. a_* may be
// per row (M), b_* per column (N); y_* per tensor.
class QLinearMatMulKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status check(const TensorList& in, IntMmGeom& g) const {
    RETURN_IF_ERROR(check_inputs(in, 8, 8));
    if (!quant::is_q8(in[0]->dtype()) || !quant::is_q8(in[3]->dtype()))
      return error("a and b must be uint8 or int8, got " + in[0]->desc() + " and " + in[3]->desc());
    RETURN_IF_ERROR(int_mm_geom(label_, in[0]->shape(), in[3]->shape(), g));
    const int64_t per[8] = {0, g.M, g.M, 0, g.N, g.N, 1, 1};
    for (int i : {1, 2, 4, 5, 6, 7}) {
      const Tensor& t = *in[i];
      const bool scale = i == 1 || i == 4 || i == 6;
      if (scale ? t.dtype() != DataType::kFloat32 : t.dtype() != in[i == 2 ? 0 : (i == 5 ? 3 : 7)]->dtype())
        return error("input " + std::to_string(i) + " has dtype " + dtype_name(t.dtype()));
      if (i == 7 && !quant::is_q8(t.dtype())) return error("y_zero_point must be uint8 or int8");
      if (t.numel() != 1 && t.numel() != per[i])
        return error("input " + std::to_string(i) + " has shape " + shape_str(t.shape()) +
                     ", expected a scalar or " + std::to_string(per[i]) + " elements");
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    IntMmGeom g;
    RETURN_IF_ERROR(check(in, g));
    out.resize(num_outputs_);
    out[0] = {in[7]->dtype(), g.out_shape};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    IntMmGeom g;
    RETURN_IF_ERROR(check(in, g));
    const std::vector<int32_t> za = zps_of(in[2], g.M), zb = zps_of(in[5], g.N);
    const std::vector<float> sa = scales_of(*in[1], g.M), sb = scales_of(*in[4], g.N);
    const std::vector<int32_t> bz = b_minus_zp(*in[3], zb);
    std::vector<int32_t> acc(static_cast<size_t>(g.batch * g.M * g.N));
    int_matmul(*in[0], za, bz.data(), g, acc.data(), ctx.num_threads);
    Tensor& y = *out[0];
    int32_t lo, hi;
    quant::qrange(y.dtype(), &lo, &hi);
    const float ys = in[6]->data<float>()[0];
    const int32_t yz = int_at(*in[7], 0);
    for (int64_t r = 0; r < g.batch * g.M; ++r) {
      const int64_t i = r % g.M;
      for (int64_t j = 0; j < g.N; ++j) {
        const float v = static_cast<float>(acc[r * g.N + j]) * (sa[i] * sb[j]);
        const int32_t q = quantize_value(v, ys, yz, lo, hi);
        if (y.dtype() == DataType::kUInt8) y.data<uint8_t>()[r * g.N + j] = static_cast<uint8_t>(q);
        else y.data<int8_t>()[r * g.N + j] = static_cast<int8_t>(q);
      }
    }
    return Status::ok();
  }
};

// medq QMatMul (reference / oracle): A_q [..., K], B_q [K, N] int8, [bias [N] int32 (acc units) or float32].
class QMatMulRefKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(p_.parse(info.node));
    return Status::ok();
  }
  Status check(const TensorList& in, IntMmGeom& g) const {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    if (!quant::is_q8(in[0]->dtype())) return error("A must be uint8 or int8, got " + in[0]->desc());
    if (in[1]->dtype() != DataType::kInt8 || in[1]->rank() != 2) return error("B must be int8 [K, N], got " + in[1]->desc());
    if (in[0]->rank() < 1) return error("A must have rank >= 1");
    RETURN_IF_ERROR(int_mm_geom(label_, in[0]->shape(), in[1]->shape(), g));
    if (p_.w_scales.size() != 1 && static_cast<int64_t>(p_.w_scales.size()) != g.N)
      return error("w_scales has " + std::to_string(p_.w_scales.size()) + " entries, expected 1 or " +
                   std::to_string(g.N));
    if (const Tensor* b = opt_input(in, 2))
      if ((b->dtype() != DataType::kInt32 && b->dtype() != DataType::kFloat32) || b->numel() != g.N)
        return error("bias must be int32 or float32 [" + std::to_string(g.N) + "], got " + b->desc());
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    IntMmGeom g;
    RETURN_IF_ERROR(check(in, g));
    out.resize(num_outputs_);
    out[0] = {p_.out_dtype, g.out_shape};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    IntMmGeom g;
    RETURN_IF_ERROR(check(in, g));
    const std::vector<int32_t> za(static_cast<size_t>(g.M), p_.x_zp);
    const std::vector<int32_t> bz = b_minus_zp(*in[1], std::vector<int32_t>(static_cast<size_t>(g.N), 0));
    std::vector<int32_t> acc(static_cast<size_t>(g.batch * g.M * g.N));
    int_matmul(*in[0], za, bz.data(), g, acc.data(), ctx.num_threads);
    std::vector<float> mult(g.N), bias;
    for (int64_t j = 0; j < g.N; ++j) mult[j] = p_.x_scale * p_.w_scale(j);
    if (const Tensor* b = opt_input(in, 2)) {
      bias.resize(g.N);
      for (int64_t j = 0; j < g.N; ++j)
        bias[j] = b->dtype() == DataType::kInt32 ? static_cast<float>(b->data<int32_t>()[j]) * mult[j]
                                                 : b->data<float>()[j];
    }
    requantize_rows(acc.data(), g.batch * g.M, g.N, 1, mult, bias, p_.act, p_.act_params.data(), *out[0], p_.y_scale,
                    p_.y_zp, ctx.num_threads);
    return Status::ok();
  }

 private:
  quant::QParams p_;
};

// ---------------------------------------------------------------- QAdd

// medq QAdd: Y = quantize(act((A - a_zp) * a_scale + (B - b_zp) * b_scale)), A and B of
// the same shape (uint8/int8 each). The sum is computed exactly as the float QDQ graph does.
class QAddKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    as_ = n.attr_f("a_scale", 0.f);
    bs_ = n.attr_f("b_scale", 0.f);
    ys_ = n.attr_f("y_scale", 0.f);
    az_ = static_cast<int32_t>(n.attr_i("a_zero_point", 0));
    bz_ = static_cast<int32_t>(n.attr_i("b_zero_point", 0));
    yz_ = static_cast<int32_t>(n.attr_i("y_zero_point", 0));
    out_dtype_ = static_cast<DataType>(n.attr_i("output_dtype", 2));
    if (!(as_ > 0.f) || !(bs_ > 0.f) || !(ys_ > 0.f)) return error("a_scale, b_scale and y_scale must be positive");
    if (!quant::is_q8(out_dtype_)) return error("output_dtype must be 2 (uint8) or 3 (int8)");
    auto a = parse_activation(n.attr_s("activation", ""));
    if (!a.is_ok()) return error(a.status().message());
    act_ = a.value();
    if (act_ != ActKind::kNone && act_ != ActKind::kRelu && act_ != ActKind::kClip)
      return unsupported_error("activation must be Relu or Clip");
    act_params_ = complete_activation_params(act_, n.attr_floats("activation_params"));
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    if (!quant::is_q8(in[0]->dtype()) || !quant::is_q8(in[1]->dtype()))
      return error("A and B must be uint8 or int8, got " + in[0]->desc() + " and " + in[1]->desc());
    if (in[0]->shape() != in[1]->shape())
      return error("A " + shape_str(in[0]->shape()) + " and B " + shape_str(in[1]->shape()) + " must have the same shape");
    out.resize(num_outputs_);
    out[0] = {out_dtype_, in[0]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    Tensor& y = *out[0];
    if (a.dtype() == DataType::kUInt8) {
      if (b.dtype() == DataType::kUInt8) dispatch_y(a.data<uint8_t>(), b.data<uint8_t>(), y, ctx);
      else dispatch_y(a.data<uint8_t>(), b.data<int8_t>(), y, ctx);
    } else {
      if (b.dtype() == DataType::kUInt8) dispatch_y(a.data<int8_t>(), b.data<uint8_t>(), y, ctx);
      else dispatch_y(a.data<int8_t>(), b.data<int8_t>(), y, ctx);
    }
    return Status::ok();
  }

 private:
  template <class A, class B>
  void dispatch_y(const A* a, const B* b, Tensor& y, RunContext& ctx) const {
    if (y.dtype() == DataType::kUInt8) run_t(a, b, y.data<uint8_t>(), y.numel(), ctx);
    else run_t(a, b, y.data<int8_t>(), y.numel(), ctx);
  }
  template <class A, class B, class Y>
  void run_t(const A* a, const B* b, Y* y, int64_t n, RunContext& ctx) const {
    int32_t lo, hi;
    quant::qrange(out_dtype_, &lo, &hi);
    const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi), fz = static_cast<float>(yz_);
    float alo = -std::numeric_limits<float>::infinity(), ahi = std::numeric_limits<float>::infinity();
    if (act_ == ActKind::kRelu) alo = 0.f;
    if (act_ == ActKind::kClip) {
      alo = act_params_[0];
      ahi = act_params_[1];
    }
    const int nt = n > kParallelThreshold ? ctx.num_threads : 1;
    const int64_t chunk = 4096;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
      const int64_t c1 = std::min(n, c0 + chunk);
#pragma omp simd
      for (int64_t i = c0; i < c1; ++i) {
        const float v = static_cast<float>(static_cast<int32_t>(a[i]) - az_) * as_ +
                        static_cast<float>(static_cast<int32_t>(b[i]) - bz_) * bs_;
        y[i] = static_cast<Y>(quant::quantize_fast(clamp_f(v, alo, ahi), ys_, fz, flo, fhi));
      }
    }
  }

  float as_ = 1.f, bs_ = 1.f, ys_ = 1.f;
  int32_t az_ = 0, bz_ = 0, yz_ = 0;
  DataType out_dtype_ = DataType::kUInt8;
  ActKind act_ = ActKind::kNone;
  std::vector<float> act_params_;
};

}  // namespace
}  // namespace ref

void register_ref_quant(KernelRegistry& r) {
  r.add("", "QuantizeLinear", "ref", 0, make_factory<ref::QuantizeLinearKernel>());
  r.add("", "DequantizeLinear", "ref", 0, make_factory<ref::DequantizeLinearKernel>());
  r.add("", "DynamicQuantizeLinear", "ref", 0, make_factory<ref::DynamicQuantizeLinearKernel>());
  r.add("", "ConvInteger", "ref", 0, make_factory<ref::ConvIntegerKernel>());
  r.add("", "QLinearConv", "ref", 0, make_factory<ref::QLinearConvKernel>());
  r.add("", "QLinearMatMul", "ref", 0, make_factory<ref::QLinearMatMulKernel>());
  r.add(kMedqDomain, "QConv", "ref", 0, make_factory<ref::QConvRefKernel>());
  r.add(kMedqDomain, "QMatMul", "ref", 0, make_factory<ref::QMatMulRefKernel>());
  r.add(kMedqDomain, "QAdd", "ref", 0, make_factory<ref::QAddKernel>());
}

}  // namespace medq
