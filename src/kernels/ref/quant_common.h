// Quantization helpers shared by the reference quantized kernels (quant.cc)
// and the oneDNN int8 kernels (kernels/dnnl/dnnl_int8.cc): ONNX rounding and
// saturation, and the attribute set of the medq QConv / QMatMul ops
// (see ops/fused.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "ir/graph.h"
#include "kernels/ref/activation.h"

namespace medq {
namespace quant {

// Integer range of a quantized dtype (uint8, int8, int32).
inline void qrange(DataType dt, int32_t* lo, int32_t* hi) {
  switch (dt) {
    case DataType::kUInt8: *lo = 0; *hi = 255; return;
    case DataType::kInt8: *lo = -128; *hi = 127; return;
    default: *lo = INT32_MIN; *hi = INT32_MAX; return;
  }
}

inline bool is_q8(DataType dt) { return dt == DataType::kUInt8 || dt == DataType::kInt8; }

// q = saturate(round(x / scale) + zp) exactly as ONNX QuantizeLinear (division,
// not multiplication by a reciprocal, so .5 ties are the same as numpy's).
// Rounding is half to even (nearbyint in the default rounding mode); NaN
// maps to the zero point.
inline int32_t quantize_value(float x, float scale, int32_t zp, int32_t lo, int32_t hi) {
  const float r = std::nearbyint(x / scale) + static_cast<float>(zp);
  if (!(r >= static_cast<float>(lo))) return r != r ? (zp < lo ? lo : (zp > hi ? hi : zp)) : lo;
  if (r > static_cast<float>(hi)) return hi;
  return static_cast<int32_t>(r);
}

// Branch-free, vectorizable form of quantize_value() (same results): the
// quotient is clamped just outside the representable range first (values
// beyond saturate either way), then rounded half to even with the 1.5 * 2^23
// trick (exact for |v| < 2^22 in the default rounding mode). NaN -> zp.
inline int32_t quantize_fast(float x, float scale, float zp, float lo, float hi) {
  float v = x / scale;
  v = select_f(v == v, v, 0.f);
  v = clamp_f(v, lo - zp - 1.f, hi - zp + 1.f);
  v = (v + 12582912.f) - 12582912.f;
  return static_cast<int32_t>(clamp_f(v + zp, lo, hi));
}

// Attributes of medq QConv / QMatMul (ops/fused.h):
//   x_scale, x_zero_point        input quantization (per tensor)
//   w_scales                     weight scales (1 or one per output channel / column), zero point 0
//   y_scale, y_zero_point        output quantization (ignored when output_dtype is float32)
//   output_dtype                 ONNX dtype code: 1 float32, 2 uint8, 3 int8
//   activation, activation_params  "" | "Relu" | "Clip" (params in real units)
// QMatMul uses the same names (x = A, w = B).
struct QParams {
  float x_scale = 1.f;
  int32_t x_zp = 0;
  std::vector<float> w_scales;
  float y_scale = 1.f;
  int32_t y_zp = 0;
  DataType out_dtype = DataType::kFloat32;
  ActKind act = ActKind::kNone;
  std::vector<float> act_params;

  float w_scale(int64_t o) const { return w_scales.size() == 1 ? w_scales[0] : w_scales[o]; }
  bool quantized_output() const { return out_dtype != DataType::kFloat32; }

  Status parse(const Node& n) {
    x_scale = n.attr_f("x_scale", 0.f);
    x_zp = static_cast<int32_t>(n.attr_i("x_zero_point", 0));
    w_scales = n.attr_floats("w_scales");
    y_scale = n.attr_f("y_scale", 1.f);
    y_zp = static_cast<int32_t>(n.attr_i("y_zero_point", 0));
    out_dtype = static_cast<DataType>(n.attr_i("output_dtype", 1));
    if (!(x_scale > 0.f) || !std::isfinite(x_scale))
      return invalid_argument(n.label() + ": x_scale must be a positive finite float");
    if (w_scales.empty()) return invalid_argument(n.label() + ": w_scales is missing");
    for (float s : w_scales)
      if (!(s > 0.f) || !std::isfinite(s))
        return invalid_argument(n.label() + ": w_scales must be positive finite floats");
    if (out_dtype != DataType::kFloat32 && !is_q8(out_dtype))
      return invalid_argument(n.label() + ": output_dtype must be 1 (float32), 2 (uint8) or 3 (int8), got " +
                              std::to_string(n.attr_i("output_dtype", 1)));
    if (quantized_output()) {
      if (!(y_scale > 0.f) || !std::isfinite(y_scale))
        return invalid_argument(n.label() + ": y_scale must be a positive finite float");
      int32_t lo, hi;
      qrange(out_dtype, &lo, &hi);
      if (y_zp < lo || y_zp > hi)
        return invalid_argument(n.label() + ": y_zero_point " + std::to_string(y_zp) + " is out of range for " +
                                dtype_name(out_dtype));
    }
    if (x_zp < -128 || x_zp > 255) return invalid_argument(n.label() + ": x_zero_point out of range");
    auto a = parse_activation(n.attr_s("activation", ""));
    if (!a.is_ok()) return invalid_argument(n.label() + ": " + a.status().message());
    act = a.value();
    if (act != ActKind::kNone && act != ActKind::kRelu && act != ActKind::kClip)
      return unsupported(n.label() + ": activation '" + n.attr_s("activation", "") +
                         "' is not supported by quantized ops (Relu, Clip only)");
    act_params = complete_activation_params(act, n.attr_floats("activation_params"));
    return Status::ok();
  }
};

}  // namespace quant
}  // namespace medq
