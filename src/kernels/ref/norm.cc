// Reference normalisation kernels: BatchNormalization (inference, plus the
// opset-14+ training_mode outputs), InstanceNormalization,
// LayerNormalization (opset 17, optional Mean/InvStdDev outputs),
// LpNormalization, LRN and MeanVarianceNormalization. float32/float64
// (float16/bfloat16 through float32, see RefKernel). Statistics are
// accumulated in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ref/broadcast.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

class NormKernel : public NodeRefKernel {
 protected:
  // All present inputs float and of the same dtype as input 0.
  Status check_float_inputs(const TensorList& in) const {
    RETURN_IF_ERROR(check_dtype(label_, "input 0", in[0]->dtype(), kClassFloat));
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i] && in[i]->defined() && dtype_class(in[i]->dtype()) != kClassFloat)
        return error("input " + std::to_string(i) + " has dtype " + dtype_name(in[i]->dtype()) +
                     ", expected float");
    return Status::ok();
  }
  int threads(int64_t work, const RunContext& ctx) const { return work >= kParallelThreshold ? ctx.num_threads : 1; }
};

inline const Tensor* opt_in(const TensorList& in, size_t i) {
  return i < in.size() && in[i] != nullptr && in[i]->defined() ? in[i] : nullptr;
}

// Reads a float/double tensor's element i as double (after half promotion).
inline double at(const Tensor& t, int64_t i) {
  return t.dtype() == DataType::kFloat64 ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}

// ---------------------------------------------------------------- BatchNormalization

class BatchNormKernel : public NormKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    epsilon_ = n.attr_f("epsilon", 1e-5f);
    momentum_ = n.attr_f("momentum", 0.9f);
    training_ = opset_ >= 14 && n.attr_i("training_mode", 0) != 0;
    spatial_ = n.attr_i("spatial", 1) != 0;
    size_t present = 0;
    for (size_t i = 1; i < n.outputs.size(); ++i)
      if (n.outputs[i] != kNoValue) ++present;
    if (!training_ && present > 0)
      return unsupported(label_ + ": training outputs (running mean/var, saved mean/var) are only supported with "
                                  "training_mode=1 at opset >= 14");
    if (training_ && !spatial_) return unsupported(label_ + ": training mode with spatial=0 is not supported");
    return Status::ok();
  }

  // Channels (elements of scale) and the plane size per channel.
  Status geometry(const Tensor& x, int64_t& c, int64_t& plane) const {
    if (x.rank() < 2) return error("X must have rank >= 2 (N, C, ...), got " + shape_str(x.shape()));
    c = spatial_ ? x.dim(1) : x.numel() / std::max<int64_t>(x.dim(0), 1);
    plane = spatial_ ? x.numel() / std::max<int64_t>(x.dim(0) * x.dim(1), 1) : 1;
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 5, 5));
    RETURN_IF_ERROR(check_float_inputs(in));
    int64_t c, plane;
    RETURN_IF_ERROR(geometry(*in[0], c, plane));
    static const char* names[] = {"X", "scale", "B", "input_mean", "input_var"};
    for (int i = 1; i < 5; ++i)
      if (in[i]->numel() != c)
        return error(std::string(names[i]) + " has shape " + shape_str(in[i]->shape()) + ", expected " +
                     std::to_string(c) + " elements (channels of X " + shape_str(in[0]->shape()) + ")");
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    for (size_t i = 1; i < num_outputs_; ++i) out[i] = {in[3]->dtype(), in[3]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    int64_t c, plane;
    RETURN_IF_ERROR(geometry(x, c, plane));
    const int64_t n = x.numel() / std::max<int64_t>(c * plane, 1);
    std::vector<double> mean(c), var(c);
    for (int64_t ch = 0; ch < c; ++ch) {
      mean[ch] = at(*in[3], ch);
      var[ch] = at(*in[4], ch);
    }
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      if (training_) {
        // Batch statistics (population variance) over N and the spatial dims.
        std::vector<double> bm(c, 0.0), bv(c, 0.0);
        for (int64_t ch = 0; ch < c; ++ch) {
          double s = 0, s2 = 0;
          for (int64_t b = 0; b < n; ++b) {
            const T* p = src + (b * c + ch) * plane;
            for (int64_t i = 0; i < plane; ++i) s += p[i];
          }
          const double cnt = static_cast<double>(n * plane);
          const double m = cnt > 0 ? s / cnt : 0.0;
          for (int64_t b = 0; b < n; ++b) {
            const T* p = src + (b * c + ch) * plane;
            for (int64_t i = 0; i < plane; ++i) s2 += (p[i] - m) * (p[i] - m);
          }
          bm[ch] = m;
          bv[ch] = cnt > 0 ? s2 / cnt : 0.0;
        }
        for (size_t o = 1; o < out.size() && o < 3; ++o) {
          if (!out[o]) continue;
          T* d = out[o]->data<T>();
          for (int64_t ch = 0; ch < c; ++ch)
            d[ch] = static_cast<T>(o == 1 ? mean[ch] * momentum_ + bm[ch] * (1.0 - momentum_)
                                          : var[ch] * momentum_ + bv[ch] * (1.0 - momentum_));
        }
        mean = bm;
        var = bv;
      }
      std::vector<T> a(c), b(c);
      for (int64_t ch = 0; ch < c; ++ch) {
        const double s = at(*in[1], ch) / std::sqrt(var[ch] + static_cast<double>(epsilon_));
        a[ch] = static_cast<T>(s);
        b[ch] = static_cast<T>(at(*in[2], ch) - mean[ch] * s);
      }
      T* dst = out[0]->data<T>();
      const int64_t rows = n * c;
#pragma omp parallel for num_threads(threads(x.numel(), ctx)) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t ch = r % c;
        const T* p = src + r * plane;
        T* q = dst + r * plane;
        const T av = a[ch], bv = b[ch];
        for (int64_t i = 0; i < plane; ++i) q[i] = p[i] * av + bv;
      }
      return Status::ok();
    });
  }

 private:
  float epsilon_ = 1e-5f;
  float momentum_ = 0.9f;
  bool training_ = false;
  bool spatial_ = true;
};

// ---------------------------------------------------------------- InstanceNormalization

class InstanceNormKernel : public NormKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    epsilon_ = info.node.attr_f("epsilon", 1e-5f);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 3, 3));
    RETURN_IF_ERROR(check_float_inputs(in));
    const Tensor& x = *in[0];
    if (x.rank() < 3) return error("input must have rank >= 3 (N, C, D1, ...), got " + shape_str(x.shape()));
    for (int i = 1; i < 3; ++i)
      if (in[i]->numel() != x.dim(1))
        return error(std::string(i == 1 ? "scale" : "B") + " has shape " + shape_str(in[i]->shape()) +
                     ", expected " + std::to_string(x.dim(1)) + " elements (C of input " + shape_str(x.shape()) +
                     ")");
    out.resize(num_outputs_);
    out[0] = {x.dtype(), x.shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    const int64_t c = x.dim(1), rows = x.dim(0) * c;
    const int64_t plane = rows ? x.numel() / rows : 0;
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = out[0]->data<T>();
#pragma omp parallel for num_threads(threads(x.numel(), ctx)) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t ch = r % c;
        const T* p = src + r * plane;
        T* q = dst + r * plane;
        double s = 0;
        for (int64_t i = 0; i < plane; ++i) s += p[i];
        const double m = s / plane;
        double v = 0;
        for (int64_t i = 0; i < plane; ++i) v += (p[i] - m) * (p[i] - m);
        v /= plane;
        const double a = at(*in[1], ch) / std::sqrt(v + epsilon_);
        const double b = at(*in[2], ch) - m * a;
        for (int64_t i = 0; i < plane; ++i) q[i] = static_cast<T>(p[i] * a + b);
      }
      return Status::ok();
    });
  }

 private:
  float epsilon_ = 1e-5f;
};

// ---------------------------------------------------------------- LayerNormalization

// Expands `t` (unidirectionally broadcastable to `inner_shape`) to a dense vector.
inline Result<std::vector<double>> expand_to(const std::string& label, const char* what, const Tensor& t,
                                             const Shape& inner_shape) {
  const int r = static_cast<int>(inner_shape.size());
  if (t.rank() > r)
    return invalid_argument(label + ": " + what + " shape " + shape_str(t.shape()) +
                            " cannot be broadcast to the normalized shape " + shape_str(inner_shape));
  const int off = r - t.rank();
  std::vector<int64_t> st(r, 0);
  int64_t s = 1;
  for (int d = r - 1; d >= off; --d) {
    const int64_t td = t.dim(d - off);
    if (td != 1 && td != inner_shape[d])
      return invalid_argument(label + ": " + what + " shape " + shape_str(t.shape()) +
                              " cannot be broadcast to the normalized shape " + shape_str(inner_shape));
    st[d] = td == 1 ? 0 : s;
    s *= td;
  }
  const int64_t n = shape_numel(inner_shape);
  std::vector<double> v(n);
  std::vector<int64_t> idx(r, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t o = 0;
    for (int d = 0; d < r; ++d) o += idx[d] * st[d];
    v[i] = at(t, o);
    for (int d = r - 1; d >= 0; --d) {
      if (++idx[d] < inner_shape[d]) break;
      idx[d] = 0;
    }
  }
  return v;
}

class LayerNormKernel : public NormKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    axis_ = n.attr_i("axis", -1);
    epsilon_ = n.attr_f("epsilon", 1e-5f);
    stash_ = n.attr_i("stash_type", 1);
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 2, 3));
    RETURN_IF_ERROR(check_float_inputs(in));
    const Tensor& x = *in[0];
    if (x.rank() == 0) return error("X must have rank >= 1");
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, x.rank()));
    const Shape inner(x.shape().begin() + axis, x.shape().end());
    RETURN_IF_ERROR(expand_to(label_, "Scale", *in[1], inner).status());
    if (const Tensor* b = opt_in(in, 2)) RETURN_IF_ERROR(expand_to(label_, "B", *b, inner).status());
    out.resize(num_outputs_);
    out[0] = {x.dtype(), x.shape()};
    Shape ms = x.shape();
    for (int d = axis; d < x.rank(); ++d) ms[d] = 1;
    const DataType st = stash_ == 1 ? DataType::kFloat32 : x.dtype();
    for (size_t i = 1; i < num_outputs_; ++i) out[i] = {st, ms};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    ASSIGN_OR_RETURN(int axis, axis_of(axis_, x.rank()));
    const Shape inner_shape(x.shape().begin() + axis, x.shape().end());
    ASSIGN_OR_RETURN(std::vector<double> scale, expand_to(label_, "Scale", *in[1], inner_shape));
    std::vector<double> bias;
    if (const Tensor* b = opt_in(in, 2)) {
      ASSIGN_OR_RETURN(bias, expand_to(label_, "B", *b, inner_shape));
    }
    const int64_t inner = shape_numel(inner_shape);
    const int64_t rows = inner ? x.numel() / inner : 0;
    Tensor* mean_out = out.size() > 1 ? out[1] : nullptr;
    Tensor* inv_out = out.size() > 2 ? out[2] : nullptr;
    auto store = [](Tensor* t, int64_t i, double v) {
      if (!t) return;
      if (t->dtype() == DataType::kFloat64) t->data<double>()[i] = v;
      else t->data<float>()[i] = static_cast<float>(v);
    };
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = out[0]->data<T>();
#pragma omp parallel for num_threads(threads(x.numel(), ctx)) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* p = src + r * inner;
        T* q = dst + r * inner;
        double s = 0;
        for (int64_t i = 0; i < inner; ++i) s += p[i];
        const double m = s / inner;
        double v = 0;
        for (int64_t i = 0; i < inner; ++i) v += (p[i] - m) * (p[i] - m);
        const double inv = 1.0 / std::sqrt(v / inner + epsilon_);
        if (bias.empty())
          for (int64_t i = 0; i < inner; ++i) q[i] = static_cast<T>((p[i] - m) * inv * scale[i]);
        else
          for (int64_t i = 0; i < inner; ++i) q[i] = static_cast<T>((p[i] - m) * inv * scale[i] + bias[i]);
        store(mean_out, r, m);
        store(inv_out, r, inv);
      }
      return Status::ok();
    });
  }

 private:
  int64_t axis_ = -1;
  float epsilon_ = 1e-5f;
  int64_t stash_ = 1;
};

// ---------------------------------------------------------------- LpNormalization

class LpNormKernel : public NormKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", -1);
    p_ = info.node.attr_i("p", 2);
    if (p_ != 1 && p_ != 2) return invalid_argument(label_ + ": p must be 1 or 2, got " + std::to_string(p_));
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 1));
    RETURN_IF_ERROR(check_float_inputs(in));
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
    int64_t outer = 1, n = 1, inner = 1;
    for (int d = 0; d < x.rank(); ++d) (d < axis ? outer : (d == axis ? n : inner)) *= x.dim(d);
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = out[0]->data<T>();
#pragma omp parallel for num_threads(threads(x.numel(), ctx)) schedule(static)
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const T* p = src + o * n * inner + i;
          T* q = dst + o * n * inner + i;
          double s = 0;
          for (int64_t r = 0; r < n; ++r) s += p_ == 1 ? std::fabs(p[r * inner]) : double(p[r * inner]) * p[r * inner];
          const double norm = p_ == 1 ? s : std::sqrt(s);
          for (int64_t r = 0; r < n; ++r) q[r * inner] = static_cast<T>(p[r * inner] / norm);
        }
      return Status::ok();
    });
  }

 private:
  int64_t axis_ = -1;
  int64_t p_ = 2;
};

// ---------------------------------------------------------------- LRN

class LrnKernel : public NormKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    alpha_ = n.attr_f("alpha", 1e-4f);
    beta_ = n.attr_f("beta", 0.75f);
    bias_ = n.attr_f("bias", 1.0f);
    size_ = n.attr_i("size", 0);
    if (size_ <= 0) return invalid_argument(label_ + ": attribute 'size' must be a positive integer");
    return Status::ok();
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 1));
    RETURN_IF_ERROR(check_float_inputs(in));
    if (in[0]->rank() < 2) return error("X must have rank >= 2 (N, C, ...), got " + shape_str(in[0]->shape()));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    const int64_t n = x.dim(0), c = x.dim(1);
    const int64_t plane = (n * c) != 0 ? x.numel() / (n * c) : 0;
    const int64_t lo = (size_ - 1) / 2, hi = size_ - 1 - lo;  // floor / ceil of (size-1)/2
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = out[0]->data<T>();
#pragma omp parallel for num_threads(threads(x.numel(), ctx)) schedule(static)
      for (int64_t r = 0; r < n * c; ++r) {
        const int64_t b = r / c, ch = r % c;
        const int64_t c0 = std::max<int64_t>(0, ch - lo), c1 = std::min<int64_t>(c - 1, ch + hi);
        for (int64_t i = 0; i < plane; ++i) {
          double s = 0;
          for (int64_t k = c0; k <= c1; ++k) {
            const double v = src[(b * c + k) * plane + i];
            s += v * v;
          }
          const double den = std::pow(bias_ + alpha_ / size_ * s, static_cast<double>(beta_));
          dst[r * plane + i] = static_cast<T>(src[r * plane + i] / den);
        }
      }
      return Status::ok();
    });
  }

 private:
  float alpha_ = 1e-4f, beta_ = 0.75f, bias_ = 1.0f;
  int64_t size_ = 0;
};

// ---------------------------------------------------------------- MeanVarianceNormalization

class MvnKernel : public NormKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axes_ = info.node.attr_ints("axes", {0, 2, 3});
    return Status::ok();
  }

  Result<std::vector<bool>> reduced(const Tensor& x) const {
    std::vector<bool> red(x.rank(), false);
    for (int64_t a : axes_) {
      if (a < -x.rank() || a >= x.rank())
        return error("axis " + std::to_string(a) + " is out of range for input of shape " + shape_str(x.shape()));
      red[a < 0 ? a + x.rank() : a] = true;
    }
    return red;
  }

  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_count(in, 1, 1));
    RETURN_IF_ERROR(check_float_inputs(in));
    RETURN_IF_ERROR(reduced(*in[0]).status());
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }

 protected:
  Status compute(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    ASSIGN_OR_RETURN(std::vector<bool> red, reduced(x));
    const int r = x.rank();
    // Stats index of each element: strides over the kept dims (0 on reduced ones).
    std::vector<int64_t> st(r, 0);
    int64_t nstats = 1, count = 1;
    for (int d = r - 1; d >= 0; --d) {
      if (red[d]) {
        count *= x.dim(d);
      } else {
        st[d] = nstats;
        nstats *= x.dim(d);
      }
    }
    const int64_t n = x.numel();
    std::vector<int64_t> sidx(n);
    {
      std::vector<int64_t> idx(r, 0);
      int64_t o = 0;
      for (int64_t i = 0; i < n; ++i) {
        sidx[i] = o;
        for (int d = r - 1; d >= 0; --d) {
          o += st[d];
          if (++idx[d] < x.dim(d)) break;
          o -= st[d] * idx[d];
          idx[d] = 0;
        }
      }
    }
    return dispatch_class<kClassFloat>(x.dtype(), [&](auto tag) -> Status {
      using T = typename decltype(tag)::type;
      const T* src = x.data<T>();
      T* dst = out[0]->data<T>();
      std::vector<double> mean(nstats, 0.0), var(nstats, 0.0);
      for (int64_t i = 0; i < n; ++i) mean[sidx[i]] += src[i];
      for (auto& m : mean) m /= count;
      for (int64_t i = 0; i < n; ++i) {
        const double d = src[i] - mean[sidx[i]];
        var[sidx[i]] += d * d;
      }
      for (auto& v : var) v = std::sqrt(v / count) + 1e-9;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>((src[i] - mean[sidx[i]]) / var[sidx[i]]);
      return Status::ok();
    });
  }

 private:
  std::vector<int64_t> axes_;
};

}  // namespace
}  // namespace ref

void register_ref_norm(KernelRegistry& r) {
  using namespace ref;  // NOLINT
  r.add("", "BatchNormalization", "ref", 0, make_factory<BatchNormKernel>());
  r.add("", "InstanceNormalization", "ref", 0, make_factory<InstanceNormKernel>());
  r.add("", "LayerNormalization", "ref", 0, make_factory<LayerNormKernel>());
  r.add("", "LpNormalization", "ref", 0, make_factory<LpNormKernel>());
  r.add("", "LRN", "ref", 0, make_factory<LrnKernel>());
  r.add("", "MeanVarianceNormalization", "ref", 0, make_factory<MvnKernel>());
}

}  // namespace medq
