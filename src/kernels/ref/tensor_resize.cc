// Reference Resize (opset 10+) and Upsample (opset 7/9): nearest for every
// dtype (a gather), linear and cubic for float32 as separable per-axis passes.
// Coordinate transforms and tap selection follow the ONNX reference
// implementation (onnx/reference/ops/op_resize.py).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ref/tensor_common.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

enum class ResizeMode { kNearest, kLinear, kCubic };
enum class CoordMode { kHalfPixel, kPytorchHalfPixel, kAlignCorners, kAsymmetric, kTfHalfPixelForNn, kTfCropAndResize };
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil, kSimple };

// Interpolation taps of one output coordinate along one axis.
struct Taps {
  int64_t idx[4];
  float w[4];
  int n = 0;
  bool outside = false;  // tf_crop_and_resize: use extrapolation_value
};

class ResizeKernel : public RefKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    upsample_ = n.op_type == "Upsample";
    std::string mode = n.attr_s("mode", "nearest");
    if (mode == "nearest") mode_ = ResizeMode::kNearest;
    else if (mode == "linear" || mode == "bilinear") mode_ = ResizeMode::kLinear;
    else if (mode == "cubic" && !upsample_) mode_ = ResizeMode::kCubic;
    else return error("unsupported mode '" + mode + "'");
    if (upsample_ || info.opset < 11) {
      coord_ = CoordMode::kAsymmetric;
      nearest_ = NearestMode::kSimple;
    } else {
      std::string c = n.attr_s("coordinate_transformation_mode", "half_pixel");
      if (c == "half_pixel") coord_ = CoordMode::kHalfPixel;
      else if (c == "pytorch_half_pixel") coord_ = CoordMode::kPytorchHalfPixel;
      else if (c == "align_corners") coord_ = CoordMode::kAlignCorners;
      else if (c == "asymmetric") coord_ = CoordMode::kAsymmetric;
      else if (c == "tf_half_pixel_for_nn") coord_ = CoordMode::kTfHalfPixelForNn;
      else if (c == "tf_crop_and_resize") coord_ = CoordMode::kTfCropAndResize;
      else return error("unsupported coordinate_transformation_mode '" + c + "'");
      std::string nm = n.attr_s("nearest_mode", "round_prefer_floor");
      if (nm == "round_prefer_floor") nearest_ = NearestMode::kRoundPreferFloor;
      else if (nm == "round_prefer_ceil") nearest_ = NearestMode::kRoundPreferCeil;
      else if (nm == "floor") nearest_ = NearestMode::kFloor;
      else if (nm == "ceil") nearest_ = NearestMode::kCeil;
      else return error("unsupported nearest_mode '" + nm + "'");
      if (n.attr_s("keep_aspect_ratio_policy", "stretch") != "stretch")
        return unsupported_error("keep_aspect_ratio_policy other than 'stretch' is not supported");
    }
    cubic_a_ = n.attr_f("cubic_coeff_a", -0.75f);
    exclude_outside_ = n.attr_i("exclude_outside", 0) != 0;
    extrapolation_ = n.attr_f("extrapolation_value", 0.0f);
    if (upsample_ && info.opset < 9) {
      if (!n.has_attr("scales")) return error("missing 'scales' attribute");
      attr_scales_ = n.attr_floats("scales");
      scales_from_attr_ = true;
    }
    if (n.has_attr("axes")) attr_axes_ = n.attr_ints("axes");
    return Status::ok();
  }

  // Output shape, per-axis scales and the roi (tf_crop_and_resize).
  Status plan(const TensorList& in, Shape& ys, std::vector<double>& scales, std::vector<double>& roi) const {
    const Tensor& x = *in[0];
    const int r = x.rank();
    const Shape& xs = x.shape();
    std::vector<float> sc;
    std::vector<int64_t> sizes;
    roi.clear();
    if (scales_from_attr_) {
      sc = attr_scales_;
    } else if (upsample_ || opset_ < 11) {
      if (!opt_input(in, 1)) return error("missing scales input");
      sc = in[1]->to_f32_vector();
    } else {
      if (const Tensor* t = opt_input(in, 1)) {
        for (float v : t->to_f32_vector()) roi.push_back(v);
      }
      if (const Tensor* t = opt_input(in, 2)) sc = t->to_f32_vector();
      if (const Tensor* t = opt_input(in, 3)) {
        ASSIGN_OR_RETURN(sizes, read_ints(label_, "sizes", *t));
      }
    }
    std::vector<int64_t> axes = attr_axes_;
    if (axes.empty()) {
      for (int i = 0; i < r; ++i) axes.push_back(i);
    }
    for (auto& a : axes) {
      if (a < -r || a >= r) return error("axis " + std::to_string(a) + " out of range");
      if (a < 0) a += r;
    }
    ys = xs;
    scales.assign(r, 1.0);
    if (!sc.empty()) {
      if (!sizes.empty()) return error("only one of scales and sizes may be given");
      if (sc.size() != axes.size())
        return error("scales has " + std::to_string(sc.size()) + " entries for rank " + std::to_string(r));
      for (size_t i = 0; i < axes.size(); ++i) {
        if (!(sc[i] > 0)) return error("scales must be positive");
        scales[axes[i]] = sc[i];
        ys[axes[i]] = static_cast<int64_t>(std::floor(static_cast<double>(xs[axes[i]]) * sc[i]));
      }
    } else if (!sizes.empty()) {
      if (sizes.size() != axes.size())
        return error("sizes has " + std::to_string(sizes.size()) + " entries for rank " + std::to_string(r));
      for (size_t i = 0; i < axes.size(); ++i) {
        if (sizes[i] < 0) return error("negative size");
        ys[axes[i]] = sizes[i];
        scales[axes[i]] = xs[axes[i]] ? static_cast<double>(sizes[i]) / xs[axes[i]] : 1.0;
      }
    } else {
      return error("one of scales and sizes must be given");
    }
    if (coord_ == CoordMode::kTfCropAndResize) {
      std::vector<double> full(2 * r);
      for (int i = 0; i < r; ++i) {
        full[i] = 0;
        full[i + r] = 1;
      }
      if (roi.size() == 2 * axes.size()) {
        for (size_t i = 0; i < axes.size(); ++i) {
          full[axes[i]] = roi[i];
          full[axes[i] + r] = roi[i + axes.size()];
        }
      } else if (!roi.empty()) {
        return error("roi must have 2 * rank entries");
      }
      roi = full;
    }
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    const size_t max_in = upsample_ ? (scales_from_attr_ ? 1 : 2) : (opset_ < 11 ? 2 : 5);
    RETURN_IF_ERROR(check_inputs(in, 1, max_in));
    if (mode_ != ResizeMode::kNearest && in[0]->dtype() != DataType::kFloat32)
      return unsupported_error(std::string("linear/cubic resize supports float32 only, got ") + dtype_name(in[0]->dtype()));
    Shape ys;
    std::vector<double> scales, roi;
    RETURN_IF_ERROR(plan(in, ys, scales, roi));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }

  double original_coord(int64_t x, double scale, int64_t in_len, int64_t out_len, double roi_s, double roi_e,
                        bool& outside) const {
    const double out_w = scale * in_len;  // as in the ONNX reference
    outside = false;
    switch (coord_) {
      case CoordMode::kAlignCorners:
        return out_w == 1 ? 0.0 : x * (in_len - 1) / (out_w - 1);
      case CoordMode::kAsymmetric: return x / scale;
      case CoordMode::kTfHalfPixelForNn: return (x + 0.5) / scale;
      case CoordMode::kPytorchHalfPixel: return out_len == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
      case CoordMode::kTfCropAndResize: {
        double xo = out_len == 1 ? (roi_e - roi_s) * (in_len - 1) / 2.0
                                 : x * (roi_e - roi_s) * (in_len - 1) / (out_len - 1);
        xo += roi_s * (in_len - 1);
        outside = xo < 0 || xo > in_len - 1;
        return xo;
      }
      case CoordMode::kHalfPixel:
      default: return (x + 0.5) / scale - 0.5;
    }
  }

  Taps taps_for(int64_t x, double scale, int64_t in_len, int64_t out_len, double roi_s, double roi_e) const {
    Taps t;
    double xo = original_coord(x, scale, in_len, out_len, roi_s, roi_e, t.outside);
    auto clampi = [&](int64_t i) { return std::clamp<int64_t>(i, 0, in_len - 1); };
    if (mode_ == ResizeMode::kNearest) {
      int64_t i;
      const double fl = std::floor(xo), frac = xo - fl;
      switch (nearest_) {
        case NearestMode::kRoundPreferFloor: i = static_cast<int64_t>(frac <= 0.5 ? fl : fl + 1); break;
        case NearestMode::kRoundPreferCeil: i = static_cast<int64_t>(frac < 0.5 ? fl : fl + 1); break;
        case NearestMode::kFloor: i = static_cast<int64_t>(fl); break;
        case NearestMode::kCeil: i = static_cast<int64_t>(std::ceil(xo)); break;
        case NearestMode::kSimple:
        default: i = static_cast<int64_t>(scale < 1 ? std::ceil(xo) : fl); break;
      }
      t.n = 1;
      t.idx[0] = clampi(i);
      t.w[0] = 1;
      return t;
    }
    // base = the tap left of xo (the one below when xo is an integer), ratio in (0, 1].
    const int64_t base = static_cast<int64_t>(std::ceil(xo)) - 1;
    const double ratio = xo - base;
    double w[4];
    int64_t idx[4];
    int n;
    if (mode_ == ResizeMode::kLinear) {
      n = 2;
      idx[0] = base;
      idx[1] = base + 1;
      w[0] = 1 - ratio;
      w[1] = ratio;
    } else {
      n = 4;
      const double a = cubic_a_, r = ratio, q = 1 - ratio;
      w[0] = ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a;
      w[1] = ((a + 2) * r - (a + 3)) * r * r + 1;
      w[2] = ((a + 2) * q - (a + 3)) * q * q + 1;
      w[3] = ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a;
      for (int k = 0; k < 4; ++k) idx[k] = base - 1 + k;
    }
    if (exclude_outside_) {
      double sum = 0;
      for (int k = 0; k < n; ++k) {
        if (idx[k] < 0 || idx[k] >= in_len) w[k] = 0;
        sum += w[k];
      }
      if (sum != 0)
        for (int k = 0; k < n; ++k) w[k] /= sum;
    }
    t.n = n;
    for (int k = 0; k < n; ++k) {
      t.idx[k] = clampi(idx[k]);
      t.w[k] = static_cast<float>(w[k]);
    }
    return t;
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    Shape ys;
    std::vector<double> scales, roi;
    RETURN_IF_ERROR(plan(in, ys, scales, roi));
    const int r = x.rank();
    const Shape& xs = x.shape();
    if (y.numel() == 0) return Status::ok();
    for (int d = 0; d < r; ++d)
      if (xs[d] == 0) return error("cannot resize an empty input");
    std::vector<std::vector<Taps>> taps(r);
    bool any_outside = false;
    for (int d = 0; d < r; ++d) {
      taps[d].resize(ys[d]);
      const double rs = roi.empty() ? 0 : roi[d], re = roi.empty() ? 1 : roi[d + r];
      for (int64_t o = 0; o < ys[d]; ++o) {
        taps[d][o] = taps_for(o, scales[d], xs[d], ys[d], rs, re);
        any_outside |= taps[d][o].outside;
      }
    }
    if (mode_ == ResizeMode::kNearest) {
      std::vector<int64_t> xst = strides_of(xs);
      Status st = dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
        using T = decltype(tag);
        const T* src = static_cast<const T*>(x.raw());
        T* dst = static_cast<T*>(y.raw());
        if (r == 0) {
          dst[0] = src[0];
          return;
        }
        const int64_t inner = ys[r - 1], rows = y.numel() / inner;
        const auto& last = taps[r - 1];
#pragma omp parallel for num_threads(ctx.num_threads) if (y.numel() > kParallelThreshold)
        for (int64_t row = 0; row < rows; ++row) {
          int64_t off = 0, rem = row;
          for (int d = r - 2; d >= 0; --d) {
            off += taps[d][rem % ys[d]].idx[0] * xst[d];
            rem /= ys[d];
          }
          T* o = dst + row * inner;
          for (int64_t j = 0; j < inner; ++j) o[j] = src[off + last[j].idx[0]];
        }
      });
      RETURN_IF_ERROR(st);
    } else {
      // Separable passes over the axes that change, float32.
      Tensor cur = x;
      Shape cs = xs;
      std::vector<int> axes;
      for (int d = 0; d < r; ++d) {
        bool ident = ys[d] == xs[d];
        for (int64_t o = 0; ident && o < ys[d]; ++o) {
          const Taps& t = taps[d][o];
          for (int k = 0; k < t.n; ++k)
            if (t.w[k] != 0 && !(t.idx[k] == o && t.w[k] == 1)) ident = false;
        }
        if (!ident) axes.push_back(d);
      }
      if (axes.empty()) copy_if_distinct(x, y);
      for (size_t ai = 0; ai < axes.size(); ++ai) {
        const int d = axes[ai];
        Shape ns = cs;
        ns[d] = ys[d];
        Tensor next = ai + 1 == axes.size() ? y : Tensor(DataType::kFloat32, ns);
        int64_t outer = 1, inner = 1;
        for (int k = 0; k < d; ++k) outer *= cs[k];
        for (int k = d + 1; k < r; ++k) inner *= cs[k];
        const int64_t in_len = cs[d], out_len = ns[d];
        const float* src = cur.data<float>();
        float* dst = next.data<float>();
        const auto& tp = taps[d];
#pragma omp parallel for num_threads(ctx.num_threads) if (outer * out_len * inner > kParallelThreshold)
        for (int64_t t = 0; t < outer * out_len; ++t) {
          const int64_t o = t / out_len, j = t % out_len;
          const Taps& tj = tp[j];
          float* dp = dst + t * inner;
          const float* sp = src + o * in_len * inner;
          for (int64_t i = 0; i < inner; ++i) dp[i] = 0;
          for (int k = 0; k < tj.n; ++k) {
            const float w = tj.w[k];
            if (w == 0) continue;
            const float* s = sp + tj.idx[k] * inner;
            for (int64_t i = 0; i < inner; ++i) dp[i] += w * s[i];
          }
        }
        cur = next;
        cs = ns;
      }
    }
    if (any_outside) {
      // tf_crop_and_resize: positions outside the input take extrapolation_value.
      Tensor ev = Tensor::scalar<float>(extrapolation_).cast(y.dtype());
      const size_t es = dtype_size(y.dtype());
      uint8_t* p = static_cast<uint8_t*>(y.raw());
      std::vector<int64_t> pos(r, 0);
      for (int64_t i = 0; i < y.numel(); ++i) {
        bool outside = false;
        for (int d = 0; d < r; ++d) outside |= taps[d][pos[d]].outside;
        if (outside) std::memcpy(p + i * es, ev.raw(), es);
        for (int d = r - 1; d >= 0; --d) {
          if (++pos[d] < ys[d]) break;
          pos[d] = 0;
        }
      }
    }
    return Status::ok();
  }

 private:
  bool upsample_ = false;
  ResizeMode mode_ = ResizeMode::kNearest;
  CoordMode coord_ = CoordMode::kHalfPixel;
  NearestMode nearest_ = NearestMode::kRoundPreferFloor;
  float cubic_a_ = -0.75f;
  bool exclude_outside_ = false;
  float extrapolation_ = 0.0f;
  bool scales_from_attr_ = false;
  std::vector<float> attr_scales_;
  std::vector<int64_t> attr_axes_;
};

}  // namespace
}  // namespace ref

void register_ref_tensor_resize(KernelRegistry& r) {
  r.add("", "Resize", "ref", 0, make_factory<ref::ResizeKernel>());
  r.add("", "Upsample", "ref", 0, make_factory<ref::ResizeKernel>());
}

}  // namespace medq
