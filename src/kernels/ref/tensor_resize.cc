// Reference Resize (opset 10+) and Upsample (opset 7/9): nearest for every
// dtype (a gather), linear and cubic for float32 as separable per-axis passes.
// Coordinate transforms and tap selection follow the ONNX reference
// implementation (onnx/reference/ops/op_resize.py). Also GridSample (2-D).
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

class ResizeKernel : public TensorKernel {
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

// GridSample (opset 16, 2-D, float32/float64): Y[n, c, oh, ow] samples X[n, c]
// at Grid[n, oh, ow] = (x, y) in [-1, 1] with bilinear / nearest / bicubic
// interpolation and zeros / border / reflection padding. Follows the ONNX
// reference implementation (onnx/reference/ops/op_grid_sample.py).
class GridSampleKernel : public TensorKernel {
 public:
  enum class Mode { kBilinear, kNearest, kBicubic };
  enum class Padding { kZeros, kBorder, kReflection };

  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const std::string mode = n.attr_s("mode", "bilinear");
    if (mode == "bilinear" || mode == "linear") mode_ = Mode::kBilinear;
    else if (mode == "nearest") mode_ = Mode::kNearest;
    else if (mode == "bicubic" || mode == "cubic") mode_ = Mode::kBicubic;
    else return error("unsupported mode '" + mode + "'");
    const std::string pad = n.attr_s("padding_mode", "zeros");
    if (pad == "zeros") padding_ = Padding::kZeros;
    else if (pad == "border") padding_ = Padding::kBorder;
    else if (pad == "reflection") padding_ = Padding::kReflection;
    else return error("unsupported padding_mode '" + pad + "'");
    align_corners_ = n.attr_i("align_corners", 0) != 0;
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    const Tensor& x = *in[0];
    const Tensor& g = *in[1];
    if (x.dtype() != DataType::kFloat32 && x.dtype() != DataType::kFloat64)
      return unsupported_error(std::string("dtype ") + dtype_name(x.dtype()) + " is not supported (float32/float64)");
    if (g.dtype() != x.dtype()) return error("grid dtype must match X");
    if (x.rank() != 4) return unsupported_error("only 4-D X (N, C, H, W) is supported, got " + shape_str(x.shape()));
    if (g.rank() != 4 || g.dim(0) != x.dim(0) || g.dim(3) != 2)
      return error("grid " + shape_str(g.shape()) + " must be [N, H_out, W_out, 2] with N = " + std::to_string(x.dim(0)));
    out.resize(num_outputs_);
    out[0] = {x.dtype(), {x.dim(0), x.dim(1), g.dim(1), g.dim(2)}};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const int nt = out[0]->numel() > kParallelThreshold / 4 ? ctx.num_threads : 1;
    if (in[0]->dtype() == DataType::kFloat64) run_typed<double>(*in[0], *in[1], *out[0], nt);
    else run_typed<float>(*in[0], *in[1], *out[0], nt);
    return Status::ok();
  }

 private:
  double denormalize(double v, int64_t len) const {
    return align_corners_ ? (v + 1) / 2.0 * (len - 1) : ((v + 1) * len - 1) / 2.0;
  }
  static double reflect(double x, double lo, double hi) {
    const double rng = hi - lo;
    if (rng <= 0) return lo;
    if (x < lo) {
      const double dx = lo - x;
      const int64_t n = static_cast<int64_t>(dx / rng);
      const double r = dx - n * rng;
      return n % 2 == 0 ? lo + r : hi - r;
    }
    if (x > hi) {
      const double dx = x - hi;
      const int64_t n = static_cast<int64_t>(dx / rng);
      const double r = dx - n * rng;
      return n % 2 == 0 ? hi - r : lo + r;
    }
    return x;
  }
  template <class T>
  double pixel(const T* img, int64_t H, int64_t W, int64_t r, int64_t c, const double* border) const {
    switch (padding_) {
      case Padding::kZeros:
        return (r >= 0 && r < H && c >= 0 && c < W) ? static_cast<double>(img[r * W + c]) : 0.0;
      case Padding::kBorder:
        r = std::min<int64_t>(std::max<int64_t>(r, 0), H - 1);
        c = std::min<int64_t>(std::max<int64_t>(c, 0), W - 1);
        return img[r * W + c];
      case Padding::kReflection:
        c = static_cast<int64_t>(reflect(static_cast<double>(c), border[0], border[2]));
        r = static_cast<int64_t>(reflect(static_cast<double>(r), border[1], border[3]));
        r = std::min<int64_t>(std::max<int64_t>(r, 0), H - 1);
        c = std::min<int64_t>(std::max<int64_t>(c, 0), W - 1);
        return img[r * W + c];
    }
    return 0.0;
  }
  static void cubic_coeffs(double t, double* c) {
    const double A = -0.75;
    const double x0 = t + 1, x1 = t, x2 = 1 - t, x3 = 2 - t;
    c[0] = ((A * x0 - 5 * A) * x0 + 8 * A) * x0 - 4 * A;
    c[1] = ((A + 2) * x1 - (A + 3)) * x1 * x1 + 1;
    c[2] = ((A + 2) * x2 - (A + 3)) * x2 * x2 + 1;
    c[3] = ((A * x3 - 5 * A) * x3 + 8 * A) * x3 - 4 * A;
  }

  template <class T>
  void run_typed(const Tensor& xt, const Tensor& gt, Tensor& yt, int nt) const {
    const int64_t N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3);
    const int64_t OH = gt.dim(1), OW = gt.dim(2);
    const T* x = xt.data<T>();
    const T* grid = gt.data<T>();
    T* y = yt.data<T>();
    // Border of valid coordinates: x_min, y_min, x_max, y_max.
    const double border[4] = {align_corners_ ? 0.0 : -0.5, align_corners_ ? 0.0 : -0.5,
                              align_corners_ ? W - 1.0 : W - 0.5, align_corners_ ? H - 1.0 : H - 0.5};
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const T* img = x + (n * C + c) * H * W;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const T* gp = grid + ((n * OH + oh) * OW + ow) * 2;
          double fx = denormalize(static_cast<double>(gp[0]), W), fy = denormalize(static_cast<double>(gp[1]), H);
          if (mode_ == Mode::kNearest) {
            fx = std::nearbyint(fx);
            fy = std::nearbyint(fy);
          }
          if (fx < border[0] || fx > border[2] || fy < border[1] || fy > border[3]) {
            if (padding_ == Padding::kBorder) {
              fx = std::min(std::max(fx, 0.0), W - 1.0);
              fy = std::min(std::max(fy, 0.0), H - 1.0);
            } else if (padding_ == Padding::kReflection) {
              fx = reflect(fx, border[0], border[2]);
              fy = reflect(fy, border[1], border[3]);
            }
          }
          double v = 0;
          if (mode_ == Mode::kNearest) {
            v = pixel(img, H, W, static_cast<int64_t>(fy), static_cast<int64_t>(fx), border);
          } else if (mode_ == Mode::kBilinear) {
            const int64_t x1 = static_cast<int64_t>(std::floor(fx)), y1 = static_cast<int64_t>(std::floor(fy));
            const int64_t x2 = x1 + 1, y2 = y1 + 1;
            const double dx2 = x2 - fx, dx1 = fx - x1, dy2 = y2 - fy, dy1 = fy - y1;
            v = dy2 * (dx2 * pixel(img, H, W, y1, x1, border) + dx1 * pixel(img, H, W, y1, x2, border)) +
                dy1 * (dx2 * pixel(img, H, W, y2, x1, border) + dx1 * pixel(img, H, W, y2, x2, border));
          } else {
            const int64_t x0 = static_cast<int64_t>(std::floor(fx)) - 1, y0 = static_cast<int64_t>(std::floor(fy)) - 1;
            double cx[4], cy[4];
            cubic_coeffs(fx - std::floor(fx), cx);
            cubic_coeffs(fy - std::floor(fy), cy);
            for (int i = 0; i < 4; ++i) {
              double row = 0;
              for (int j = 0; j < 4; ++j) row += cx[j] * pixel(img, H, W, y0 + i, x0 + j, border);
              v += cy[i] * row;
            }
          }
          y[((n * C + c) * OH + oh) * OW + ow] = static_cast<T>(v);
        }
    }
  }

  Mode mode_ = Mode::kBilinear;
  Padding padding_ = Padding::kZeros;
  bool align_corners_ = false;
};

}  // namespace
}  // namespace ref

void register_ref_tensor_resize(KernelRegistry& r) {
  r.add("", "Resize", "ref", 0, make_factory<ref::ResizeKernel>());
  r.add("", "Upsample", "ref", 0, make_factory<ref::ResizeKernel>());
  r.add("", "GridSample", "ref", 0, make_factory<ref::GridSampleKernel>());
}

}  // namespace medq
