// Reference pooling: MaxPool (optional Indices), AveragePool, LpPool and the
// global variants, 1-D to 3-D (lifted to 3 spatial dims, see conv_common.h).
// MaxPool supports float32/float64/int8/uint8; the others float32/float64.
// Parallel over (batch, channel) planes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/ref/conv_common.h"
#include "kernels/ref/tensor_common.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

enum class PoolKind { kMax, kAverage, kLp };

class PoolKernel : public RefKernel {
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
}

}  // namespace medq
