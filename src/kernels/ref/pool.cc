// Reference pooling: MaxPool (optional Indices), AveragePool, LpPool and the
// global variants, 1-D to 3-D (lifted to 3 spatial dims, see conv_common.h).
// MaxPool supports float32/float64/int8/uint8; the others float32/float64.
// Parallel over (batch, channel) planes. Also MaxUnpool and RoiAlign.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/ref/conv_common.h"
#include "kernels/ref/tensor_common.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

enum class PoolKind { kMax, kAverage, kLp };

class PoolKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const std::string& op = n.op_type;
    global_ = op.rfind("Global", 0) == 0;
    if (op == "MaxPool" || op == "GlobalMaxPool") kind_ = PoolKind::kMax;
    else if (op == "AveragePool" || op == "GlobalAveragePool") kind_ = PoolKind::kAverage;
    else kind_ = PoolKind::kLp;
    if (!global_) {
      RETURN_IF_ERROR(attrs_.parse(n));
      if (attrs_.kernel.empty()) return error("missing 'kernel_shape' attribute");
    }
    count_include_pad_ = n.attr_i("count_include_pad", 0) != 0;
    storage_order_ = n.attr_i("storage_order", 0);
    p_ = kind_ == PoolKind::kLp ? static_cast<double>(n.has_attr("p") && n.attr("p")->type == Attribute::Type::kFloat
                                                           ? n.attr_f("p", 2.0f)
                                                           : static_cast<float>(n.attr_i("p", 2)))
                                : 2.0;
    if (kind_ != PoolKind::kMax && num_outputs_ > 1) return error("has only one output");
    return Status::ok();
  }

  Status geometry(const Tensor& x, Window3& w) const {
    if (x.rank() < 3) return error("X must have rank >= 3 (N, C, spatial...), got " + shape_str(x.shape()));
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    if (global_) {
      WindowAttrs a;
      return compute_window(label_, a, in_sp, in_sp, false, w);
    }
    return compute_window(label_, attrs_, in_sp, attrs_.kernel, true, w);
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    const DataType dt = in[0]->dtype();
    const bool ok = dt == DataType::kFloat32 || dt == DataType::kFloat64 ||
                    (kind_ == PoolKind::kMax && (dt == DataType::kInt8 || dt == DataType::kUInt8));
    if (!ok) return unsupported_error(std::string("dtype ") + dtype_name(dt) + " is not supported");
    Window3 w;
    RETURN_IF_ERROR(geometry(*in[0], w));
    Shape ys = {in[0]->dim(0), in[0]->dim(1)};
    for (int i = kMaxSpatial - w.spatial; i < kMaxSpatial; ++i) ys.push_back(w.out[i]);
    out.resize(num_outputs_);
    out[0] = {dt, ys};
    if (num_outputs_ > 1) out[1] = {DataType::kInt64, ys};
    return Status::ok();
  }

  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Window3 w;
    RETURN_IF_ERROR(geometry(*in[0], w));
    const Tensor& x = *in[0];
    Tensor* y = out_at(out, 0);
    Tensor* ind = out_at(out, 1);
    switch (x.dtype()) {
      case DataType::kFloat32: run_typed<float>(x, y, ind, w, ctx); break;
      case DataType::kFloat64: run_typed<double>(x, y, ind, w, ctx); break;
      case DataType::kInt8: run_typed<int8_t>(x, y, ind, w, ctx); break;
      case DataType::kUInt8: run_typed<uint8_t>(x, y, ind, w, ctx); break;
      default: return unsupported_error(std::string("dtype ") + dtype_name(x.dtype()));
    }
    return Status::ok();
  }

  template <class T>
  void run_typed(const Tensor& x, Tensor* y, Tensor* ind, const Window3& w, RunContext& ctx) const {
    const int64_t planes = x.dim(0) * x.dim(1);
    const int64_t in_size = w.in_size(), out_size = w.out_size();
    const T* src = x.data<T>();
    T* dst = y ? y->data<T>() : nullptr;
    int64_t* idx = ind ? ind->data<int64_t>() : nullptr;
    const int nt = planes * out_size * w.k_size() > kParallelThreshold ? ctx.num_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* xp = src + pl * in_size;
      for (int64_t od = 0; od < w.out[0]; ++od)
        for (int64_t oh = 0; oh < w.out[1]; ++oh)
          for (int64_t ow = 0; ow < w.out[2]; ++ow) {
            const int64_t sd = od * w.s[0] - w.pb[0], sh = oh * w.s[1] - w.pb[1], sw = ow * w.s[2] - w.pb[2];
            const int64_t o = pl * out_size + (od * w.out[1] + oh) * w.out[2] + ow;
            double acc = kind_ == PoolKind::kMax ? -std::numeric_limits<double>::infinity() : 0.0;
            int64_t best = -1, count = 0, count_pad = 1;
            if (kind_ == PoolKind::kAverage && count_include_pad_) {
              // Taps inside the padded extent [-pb, in + pe).
              int64_t c[3];
              const int64_t st[3] = {sd, sh, sw};
              for (int a = 0; a < 3; ++a) {
                c[a] = 0;
                for (int64_t k = 0; k < w.k[a]; ++k) {
                  const int64_t i = st[a] + k * w.d[a];
                  if (i >= -w.pb[a] && i < w.in[a] + w.pe[a]) ++c[a];
                }
              }
              count_pad = c[0] * c[1] * c[2];
            }
            for (int64_t kd = 0; kd < w.k[0]; ++kd) {
              const int64_t id = sd + kd * w.d[0];
              if (id < 0 || id >= w.in[0]) continue;
              for (int64_t kh = 0; kh < w.k[1]; ++kh) {
                const int64_t ih = sh + kh * w.d[1];
                if (ih < 0 || ih >= w.in[1]) continue;
                for (int64_t kw = 0; kw < w.k[2]; ++kw) {
                  const int64_t iw = sw + kw * w.d[2];
                  if (iw < 0 || iw >= w.in[2]) continue;
                  const int64_t off = (id * w.in[1] + ih) * w.in[2] + iw;
                  const double v = static_cast<double>(xp[off]);
                  switch (kind_) {
                    case PoolKind::kMax:
                      if (v > acc || best < 0) {
                        acc = v;
                        best = storage_order_ == 0 ? off : col_major(id, ih, iw, w);
                      }
                      break;
                    case PoolKind::kAverage: acc += v; break;
                    case PoolKind::kLp: acc += std::pow(std::fabs(v), p_); break;
                  }
                  ++count;
                }
              }
            }
            double r = acc;
            if (kind_ == PoolKind::kAverage) r = count_include_pad_ ? acc / count_pad : (count ? acc / count : 0.0);
            else if (kind_ == PoolKind::kLp) r = std::pow(acc, 1.0 / p_);
            else if (best < 0) r = 0;
            if (dst) dst[o] = static_cast<T>(r);
            if (idx) idx[o] = pl * in_size + (best < 0 ? 0 : best);
          }
    }
  }

  // Spatial offset in column-major order (MaxPool storage_order = 1).
  static int64_t col_major(int64_t id, int64_t ih, int64_t iw, const Window3& w) {
    return iw * w.in[1] * w.in[0] + ih * w.in[0] + id;
  }

 private:
  PoolKind kind_ = PoolKind::kMax;
  bool global_ = false;
  WindowAttrs attrs_;
  bool count_include_pad_ = false;
  int64_t storage_order_ = 0;
  double p_ = 2.0;
};

// MaxUnpool: X and Indices (from MaxPool) -> Y zero-filled with Y.flat[I[i]] =
// X[i]. Indices are flat offsets into the whole tensor of the inferred shape
// (in - 1) * stride + kernel - pad_begin - pad_end per spatial dim, as
// MaxPool writes them. With the optional output_shape input, that result is
// padded (or cropped) at the end of each dim to output_shape, like the ONNX
// reference implementation and its test data.
class MaxUnpoolKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    RETURN_IF_ERROR(attrs_.parse(info.node));
    if (attrs_.kernel.empty()) return error("missing 'kernel_shape' attribute");
    return Status::ok();
  }
  Result<Shape> inferred_shape(const Tensor& x) const {
    const size_t ns = x.rank() - 2;
    if (attrs_.kernel.size() != ns)
      return error("kernel_shape has " + std::to_string(attrs_.kernel.size()) + " dims, X has " + std::to_string(ns) +
                   " spatial dims");
    if ((!attrs_.strides.empty() && attrs_.strides.size() != ns) || (!attrs_.pads.empty() && attrs_.pads.size() != 2 * ns))
      return error("strides/pads do not match the " + std::to_string(ns) + " spatial dims");
    Shape ys = {x.dim(0), x.dim(1)};
    for (size_t i = 0; i < ns; ++i) {
      const int64_t s = attrs_.strides.empty() ? 1 : attrs_.strides[i];
      const int64_t pb = attrs_.pads.empty() ? 0 : attrs_.pads[i], pe = attrs_.pads.empty() ? 0 : attrs_.pads[i + ns];
      ys.push_back((x.dim(2 + static_cast<int>(i)) - 1) * s + attrs_.kernel[i] - pb - pe);
      if (ys.back() < 0) return error("negative output size");
    }
    return ys;
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 3));
    const Tensor& x = *in[0];
    if (x.rank() < 3) return error("X must have rank >= 3 (N, C, spatial...), got " + shape_str(x.shape()));
    if (in[1]->dtype() != DataType::kInt64) return error("I must be int64, got " + std::string(dtype_name(in[1]->dtype())));
    if (in[1]->shape() != x.shape())
      return error("I " + shape_str(in[1]->shape()) + " must have the shape of X " + shape_str(x.shape()));
    ASSIGN_OR_RETURN(Shape ys, inferred_shape(x));
    if (const Tensor* os = opt_input(in, 2)) {
      ASSIGN_OR_RETURN(ys, read_ints(label_, "output_shape", *os));
      if (ys.size() != x.shape().size() || ys[0] != x.dim(0) || ys[1] != x.dim(1))
        return error("output_shape " + shape_str(ys) + " does not match X " + shape_str(x.shape()));
      for (int64_t d : ys)
        if (d < 0) return error("negative dim in output_shape " + shape_str(ys));
    }
    out.resize(num_outputs_);
    out[0] = {x.dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const int64_t* idx = in[1]->data<int64_t>();
    Tensor& y = *out[0];
    ASSIGN_OR_RETURN(Shape is, inferred_shape(x));
    const int64_t total = shape_numel(is);
    const Shape& ys = y.shape();
    const int r = static_cast<int>(ys.size());
    for (int64_t i = 0; i < x.numel(); ++i)
      if (idx[i] < 0 || idx[i] >= total)
        return error("index " + std::to_string(idx[i]) + " out of range for the unpooled shape " + shape_str(is));
    // Output offset of each index (-1 when cropped away).
    std::vector<int64_t> offs(x.numel());
    const std::vector<int64_t> yst = strides_of(ys);
    for (int64_t i = 0; i < x.numel(); ++i) {
      int64_t rem = idx[i], off = 0;
      for (int d = r - 1; d >= 0 && off >= 0; --d) {
        const int64_t c = rem % is[d];
        rem /= is[d];
        if (c >= ys[d]) off = -1;
        else off += c * yst[d];
      }
      offs[i] = off;
    }
    std::memset(y.raw(), 0, y.nbytes());
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) -> void {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(x.raw());
      T* dst = static_cast<T*>(y.raw());
      for (int64_t i = 0; i < x.numel(); ++i)
        if (offs[i] >= 0) dst[offs[i]] = src[i];
    });
  }

 private:
  WindowAttrs attrs_;
};

// RoiAlign (float32): X [N, C, H, W], rois [R, 4] (x1, y1, x2, y2), batch
// indices [R] -> Y [R, C, output_height, output_width]; bilinear samples on a
// sampling_ratio grid per bin (adaptive ceil(roi/bins) when 0), averaged or
// maxed. coordinate_transformation_mode half_pixel (opset 16 default) shifts
// by -0.5; output_half_pixel (opset 10 behaviour) does not and clamps the roi
// size to >= 1. Sampling follows the ONNX Runtime / ONNX reference kernels.
class RoiAlignKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    const std::string mode = n.attr_s("mode", "avg");
    if (mode != "avg" && mode != "max") return error("unknown mode '" + mode + "'");
    max_mode_ = mode == "max";
    oh_ = n.attr_i("output_height", 1);
    ow_ = n.attr_i("output_width", 1);
    sampling_ratio_ = n.attr_i("sampling_ratio", 0);
    scale_ = n.attr_f("spatial_scale", 1.0f);
    const std::string ctm =
        n.attr_s("coordinate_transformation_mode", info.opset >= 16 ? "half_pixel" : "output_half_pixel");
    if (ctm != "half_pixel" && ctm != "output_half_pixel")
      return error("unknown coordinate_transformation_mode '" + ctm + "'");
    half_pixel_ = ctm == "half_pixel";
    if (oh_ < 1 || ow_ < 1 || sampling_ratio_ < 0) return error("output sizes must be >= 1 and sampling_ratio >= 0");
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 3, 3));
    const Tensor& x = *in[0];
    const Tensor& rois = *in[1];
    if (x.dtype() != DataType::kFloat32 || rois.dtype() != DataType::kFloat32)
      return unsupported_error("only float32 X and rois are supported");
    if (x.rank() != 4) return error("X must be [N, C, H, W], got " + shape_str(x.shape()));
    if (rois.rank() != 2 || rois.dim(1) != 4) return error("rois must be [num_rois, 4], got " + shape_str(rois.shape()));
    if (in[2]->rank() != 1 || in[2]->numel() != rois.dim(0))
      return error("batch_indices must be [" + std::to_string(rois.dim(0)) + "], got " + shape_str(in[2]->shape()));
    out.resize(num_outputs_);
    out[0] = {DataType::kFloat32, {rois.dim(0), x.dim(1), oh_, ow_}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& xt = *in[0];
    const float* rois = in[1]->data<float>();
    const int64_t R = in[1]->dim(0), N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3);
    const float* x = xt.data<float>();
    float* y = out[0]->data<float>();
    const float offset = half_pixel_ ? 0.5f : 0.0f;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = in[2]->get_i64(r);
      if (b < 0 || b >= N) return error("batch index " + std::to_string(b) + " out of range [0, " + std::to_string(N) + ")");
      const float* roi = rois + r * 4;
      const float sw = roi[0] * scale_ - offset, sh = roi[1] * scale_ - offset;
      const float ew = roi[2] * scale_ - offset, eh = roi[3] * scale_ - offset;
      float rw = ew - sw, rh = eh - sh;
      if (!half_pixel_) {
        rw = std::max(rw, 1.0f);
        rh = std::max(rh, 1.0f);
      }
      const float bh = rh / oh_, bw = rw / ow_;
      const int64_t gh = sampling_ratio_ > 0 ? sampling_ratio_ : static_cast<int64_t>(std::ceil(rh / oh_));
      const int64_t gw = sampling_ratio_ > 0 ? sampling_ratio_ : static_cast<int64_t>(std::ceil(rw / ow_));
      const float count = static_cast<float>(std::max<int64_t>(gh * gw, 1));
      for (int64_t c = 0; c < C; ++c) {
        const float* img = x + (b * C + c) * H * W;
        for (int64_t ph = 0; ph < oh_; ++ph)
          for (int64_t pw = 0; pw < ow_; ++pw) {
            float acc = 0;
            bool first = true;
            for (int64_t iy = 0; iy < gh; ++iy) {
              const float yy = sh + ph * bh + (iy + 0.5f) * bh / gh;
              for (int64_t ix = 0; ix < gw; ++ix) {
                const float xx = sw + pw * bw + (ix + 0.5f) * bw / gw;
                float v = 0;
                if (!(yy < -1.0f || yy > H || xx < -1.0f || xx > W)) {
                  float fy = std::max(yy, 0.0f), fx = std::max(xx, 0.0f);
                  int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx), y1, x1;
                  if (y0 >= H - 1) { y0 = y1 = H - 1; fy = static_cast<float>(y0); } else { y1 = y0 + 1; }
                  if (x0 >= W - 1) { x0 = x1 = W - 1; fx = static_cast<float>(x0); } else { x1 = x0 + 1; }
                  const float ly = fy - y0, lx = fx - x0, hy = 1 - ly, hx = 1 - lx;
                  const float w1 = hy * hx, w2 = hy * lx, w3 = ly * hx, w4 = ly * lx;
                  const float v1 = img[y0 * W + x0], v2 = img[y0 * W + x1], v3 = img[y1 * W + x0], v4 = img[y1 * W + x1];
                  if (max_mode_) v = std::max(std::max(w1 * v1, w2 * v2), std::max(w3 * v3, w4 * v4));
                  else v = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
                }
                if (max_mode_) acc = first ? v : std::max(acc, v);
                else acc += v;
                first = false;
              }
            }
            y[((r * C + c) * oh_ + ph) * ow_ + pw] = max_mode_ ? acc : acc / count;
          }
      }
    }
    return Status::ok();
  }

 private:
  bool max_mode_ = false, half_pixel_ = true;
  int64_t oh_ = 1, ow_ = 1, sampling_ratio_ = 0;
  float scale_ = 1.0f;
};

}  // namespace
}  // namespace ref

void register_ref_pool(KernelRegistry& r) {
  using ref::PoolKernel;
  r.add("", "MaxPool", "ref", 0, make_factory<PoolKernel>());
  r.add("", "AveragePool", "ref", 0, make_factory<PoolKernel>());
  r.add("", "LpPool", "ref", 0, make_factory<PoolKernel>());
  r.add("", "GlobalMaxPool", "ref", 0, make_factory<PoolKernel>());
  r.add("", "GlobalAveragePool", "ref", 0, make_factory<PoolKernel>());
  r.add("", "GlobalLpPool", "ref", 0, make_factory<PoolKernel>());
  r.add("", "MaxUnpool", "ref", 0, make_factory<ref::MaxUnpoolKernel>());
  r.add("", "RoiAlign", "ref", 0, make_factory<ref::RoiAlignKernel>());
}

}  // namespace medq
