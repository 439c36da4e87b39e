// Reference shape ops: zero-copy views (Reshape, Flatten, Squeeze, Unsqueeze,
// Identity, Dropout) and shape/constant generators (Shape, Size, Constant,
// ConstantOfShape, Range). Also the registration of every tensor op; the data
// movement ops live in tensor_movement.cc and tensor_resize.cc.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ref/tensor_common.h"
#include "ops/kernel.h"

namespace medq {

void register_ref_tensor_movement(KernelRegistry& r);  // tensor_movement.cc
void register_ref_tensor_resize(KernelRegistry& r);    // tensor_resize.cc

namespace ref {
namespace {

// Base of the view ops: output 0 is input 0 with a new shape. run() is the
// memcpy fallback used when the executor does not alias.
class ViewKernel : public TensorKernel {
 public:
  int view_of_input() const override { return 0; }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    Tensor* y = out_at(out, 0);
    if (!y) return Status::ok();
    if (y->nbytes() != in[0]->nbytes()) return error("output size does not match input size");
    copy_if_distinct(*in[0], *y);
    return Status::ok();
  }
};

class ReshapeKernel : public ViewKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    allowzero_ = info.node.attr_i("allowzero", 0) != 0;
    if (info.opset < 5) {
      if (!info.node.has_attr("shape")) return error("missing 'shape' attribute");
      attr_shape_ = info.node.attr_ints("shape");
      use_attr_ = true;
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, use_attr_ ? 1 : 2, use_attr_ ? 1 : 2));
    std::vector<int64_t> spec = attr_shape_;
    if (!use_attr_) {
      ASSIGN_OR_RETURN(spec, read_ints(label_, "shape", *in[1]));
    }
    const Shape& xs = in[0]->shape();
    Shape ys(spec.size());
    int infer_at = -1;
    int64_t known = 1;
    for (size_t i = 0; i < spec.size(); ++i) {
      int64_t d = spec[i];
      if (d == -1) {
        if (infer_at >= 0) return error("shape " + shape_str(spec) + " has more than one -1");
        infer_at = static_cast<int>(i);
        continue;
      }
      if (d == 0 && !allowzero_) {
        if (i >= xs.size())
          return error("shape " + shape_str(spec) + " copies dim " + std::to_string(i) + " (0) but input " +
                       shape_str(xs) + " has rank " + std::to_string(xs.size()));
        d = xs[i];
      } else if (d < 0) {
        return error("invalid dim " + std::to_string(d) + " in shape " + shape_str(spec));
      }
      ys[i] = d;
      known *= d;
    }
    const int64_t n = in[0]->numel();
    if (infer_at >= 0) {
      if (known == 0 || n % known != 0)
        return error("cannot reshape input " + shape_str(xs) + " to " + shape_str(spec));
      ys[infer_at] = n / known;
    } else if (known != n) {
      return error("cannot reshape input " + shape_str(xs) + " (" + std::to_string(n) + " elements) to " +
                   shape_str(ys) + " (" + std::to_string(known) + " elements)");
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }

 private:
  bool allowzero_ = false;
  bool use_attr_ = false;
  std::vector<int64_t> attr_shape_;
};

class FlattenKernel : public ViewKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", 1);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    const Shape& xs = in[0]->shape();
    const int r = in[0]->rank();
    int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    if (axis < 0 || axis > r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < r; ++i) (i < axis ? outer : inner) *= xs[i];
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), {outer, inner}};
    return Status::ok();
  }

 private:
  int64_t axis_ = 1;
};

class SqueezeKernel : public ViewKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axes_from_input_ = info.opset >= 13;
    if (!axes_from_input_ && info.node.has_attr("axes")) {
      axes_ = info.node.attr_ints("axes");
      has_axes_ = true;
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, axes_from_input_ ? 2 : 1));
    std::vector<int64_t> axes = axes_;
    bool has_axes = has_axes_;
    if (axes_from_input_ && opt_input(in, 1)) {
      ASSIGN_OR_RETURN(axes, read_ints(label_, "axes", *in[1]));
      has_axes = true;
    }
    const Shape& xs = in[0]->shape();
    const int r = in[0]->rank();
    std::vector<bool> drop(r, false);
    if (!has_axes) {
      for (int i = 0; i < r; ++i) drop[i] = xs[i] == 1;
    } else {
      for (int64_t a : axes) {
        if (a < -r || a >= r) return error("axis " + std::to_string(a) + " out of range for rank " + std::to_string(r));
        int64_t ax = a < 0 ? a + r : a;
        if (xs[ax] != 1)
          return error("cannot squeeze axis " + std::to_string(a) + " of shape " + shape_str(xs) + " (dim is not 1)");
        drop[ax] = true;
      }
    }
    Shape ys;
    for (int i = 0; i < r; ++i) if (!drop[i]) ys.push_back(xs[i]);
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }

 private:
  bool axes_from_input_ = false;
  bool has_axes_ = false;
  std::vector<int64_t> axes_;
};

class UnsqueezeKernel : public ViewKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axes_from_input_ = info.opset >= 13;
    if (!axes_from_input_) {
      if (!info.node.has_attr("axes")) return error("missing 'axes' attribute");
      axes_ = info.node.attr_ints("axes");
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, axes_from_input_ ? 2 : 1, axes_from_input_ ? 2 : 1));
    std::vector<int64_t> axes = axes_;
    if (axes_from_input_) {
      ASSIGN_OR_RETURN(axes, read_ints(label_, "axes", *in[1]));
    }
    const Shape& xs = in[0]->shape();
    const int r = in[0]->rank() + static_cast<int>(axes.size());
    std::vector<bool> is_new(r, false);
    for (int64_t a : axes) {
      if (a < -r || a >= r) return error("axis " + std::to_string(a) + " out of range for output rank " + std::to_string(r));
      int64_t ax = a < 0 ? a + r : a;
      if (is_new[ax]) return error("axis " + std::to_string(a) + " is repeated");
      is_new[ax] = true;
    }
    Shape ys(r);
    size_t k = 0;
    for (int i = 0; i < r; ++i) ys[i] = is_new[i] ? 1 : xs[k++];
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }

 private:
  bool axes_from_input_ = false;
  std::vector<int64_t> axes_;
};

class IdentityKernel : public ViewKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }
};

// Dropout at inference: Y = X; the optional mask is all true (bool from opset
// 10, X's dtype filled with 1 before). training_mode=true with ratio > 0 is
// not supported (medq is deterministic); with ratio 0 it is the identity.
class DropoutKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    has_mask_ = n.outputs.size() > 1 && n.outputs[1] != kNoValue;
    ratio_ = n.attr_f("ratio", 0.5f);
    if (info.opset < 7 && n.attr_i("is_test", 0) == 0)
      return unsupported_error("training-mode Dropout (is_test=0) is not supported");
    return Status::ok();
  }
  int view_of_input() const override { return has_mask_ ? -1 : 0; }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, opset_ >= 12 ? 3 : 1));
    if (const Tensor* tm = opt_input(in, 2)) {
      if (tm->numel() != 1) return error("training_mode must be a scalar");
      if (tm->get_f64(0) != 0.0) {
        double ratio = ratio_;
        if (const Tensor* r = opt_input(in, 1)) ratio = r->numel() ? r->get_f64(0) : ratio;
        if (ratio != 0.0) return unsupported_error("training-mode Dropout with ratio > 0 is not supported");
      }
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    if (num_outputs_ > 1) out[1] = {opset_ >= 10 ? DataType::kBool : in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    if (Tensor* y = out_at(out, 0)) copy_if_distinct(*in[0], *y);
    if (Tensor* m = out_at(out, 1)) {
      if (m->dtype() == DataType::kBool) {
        std::memset(m->raw(), 1, m->nbytes());
      } else {
        Tensor one = Tensor::scalar<float>(1.0f).cast(m->dtype());
        const size_t es = dtype_size(m->dtype());
        uint8_t* p = static_cast<uint8_t*>(m->raw());
        for (int64_t i = 0; i < m->numel(); ++i) std::memcpy(p + i * es, one.raw(), es);
      }
    }
    return Status::ok();
  }

 private:
  bool has_mask_ = false;
  float ratio_ = 0.5f;
};

class ShapeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    start_ = info.node.attr_i("start", 0);
    if (info.node.has_attr("end")) {
      end_ = info.node.attr_i("end", 0);
      has_end_ = true;
    }
    return Status::ok();
  }
  void range(int64_t r, int64_t& s, int64_t& e) const {
    s = start_ < 0 ? start_ + r : start_;
    e = has_end_ ? (end_ < 0 ? end_ + r : end_) : r;
    s = std::clamp<int64_t>(s, 0, r);
    e = std::clamp<int64_t>(e, 0, r);
    if (e < s) e = s;
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    int64_t s, e;
    range(in[0]->rank(), s, e);
    out.resize(num_outputs_);
    out[0] = {DataType::kInt64, {e - s}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    int64_t s, e;
    range(in[0]->rank(), s, e);
    int64_t* y = out[0]->data<int64_t>();
    for (int64_t i = s; i < e; ++i) y[i - s] = in[0]->shape()[i];
    return Status::ok();
  }

 private:
  int64_t start_ = 0, end_ = 0;
  bool has_end_ = false;
};

class SizeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    out.resize(num_outputs_);
    out[0] = {DataType::kInt64, {}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    out[0]->data<int64_t>()[0] = in[0]->numel();
    return Status::ok();
  }
};

// Constant: the value is materialised at init from whichever attribute is set.
class ConstantKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    if (const Attribute* a = n.attr("value")) {
      if (!a->t.defined()) return unsupported_error("'value' tensor has an unsupported dtype");
      value_ = a->t;
    } else if (const Attribute* a = n.attr("value_float")) {
      value_ = Tensor::scalar<float>(a->f);
    } else if (const Attribute* a = n.attr("value_floats")) {
      value_ = Tensor::from_vector<float>(a->floats, {static_cast<int64_t>(a->floats.size())});
    } else if (const Attribute* a = n.attr("value_int")) {
      value_ = Tensor::scalar<int64_t>(a->i);
    } else if (const Attribute* a = n.attr("value_ints")) {
      value_ = Tensor::from_vector<int64_t>(a->ints, {static_cast<int64_t>(a->ints.size())});
    } else if (n.has_attr("sparse_value") || n.has_attr("value_string") || n.has_attr("value_strings")) {
      return unsupported_error("sparse and string constants are not supported");
    } else {
      return error("no value attribute");
    }
    if (!dtype_supported(value_.dtype())) return unsupported_error(std::string("dtype ") + dtype_name(value_.dtype()));
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    out.resize(num_outputs_);
    out[0] = {value_.dtype(), value_.shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    if (value_.nbytes()) std::memcpy(out[0]->raw(), value_.raw(), value_.nbytes());
    return Status::ok();
  }

 private:
  Tensor value_;
};

class ConstantOfShapeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    if (const Attribute* a = info.node.attr("value")) {
      if (!a->t.defined() || a->t.numel() != 1) return error("'value' must be a one-element tensor");
      value_ = a->t.reshaped({});
    } else {
      value_ = Tensor::scalar<float>(0.0f);
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> dims, read_ints(label_, "shape", *in[0]));
    for (int64_t d : dims)
      if (d < 0) return error("negative dim in shape " + shape_str(dims));
    out.resize(num_outputs_);
    out[0] = {value_.dtype(), dims};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const size_t es = dtype_size(value_.dtype());
    uint8_t* p = static_cast<uint8_t*>(out[0]->raw());
    const int64_t n = out[0]->numel();
    return dispatch_by_size(es, [&](auto tag) {
      using T = decltype(tag);
      T v;
      std::memcpy(&v, value_.raw(), sizeof(T));
      T* y = reinterpret_cast<T*>(p);
      std::fill(y, y + n, v);
    });
  }

 private:
  Tensor value_;
};

class RangeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 3, 3));
    const DataType dt = in[0]->dtype();
    for (int i = 0; i < 3; ++i) {
      if (in[i]->numel() != 1) return error("start, limit and delta must be scalars");
      if (in[i]->dtype() != dt) return error("start, limit and delta must have the same dtype");
    }
    if (dt != DataType::kFloat32 && dt != DataType::kFloat64 && dt != DataType::kInt16 && dt != DataType::kInt32 &&
        dt != DataType::kInt64)
      return unsupported_error(std::string("dtype ") + dtype_name(dt));
    int64_t n = 0;
    if (dt == DataType::kInt64 || dt == DataType::kInt32 || dt == DataType::kInt16) {
      int64_t s = in[0]->get_i64(0), l = in[1]->get_i64(0), d = in[2]->get_i64(0);
      if (d == 0) return error("delta is 0");
      n = std::max<int64_t>(0, (l - s + (d > 0 ? d - 1 : d + 1)) / d);
    } else {
      double s = in[0]->get_f64(0), l = in[1]->get_f64(0), d = in[2]->get_f64(0);
      if (d == 0) return error("delta is 0");
      if (dt == DataType::kFloat32) {
        n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((static_cast<float>(l) - static_cast<float>(s)) /
                                                                 static_cast<float>(d))));
      } else {
        n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((l - s) / d)));
      }
    }
    out.resize(num_outputs_);
    out[0] = {dt, {n}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    Tensor& y = *out[0];
    const int64_t n = y.numel();
    switch (y.dtype()) {
      case DataType::kFloat32: {
        float s = in[0]->data<float>()[0], d = in[2]->data<float>()[0];
        for (int64_t i = 0; i < n; ++i) y.data<float>()[i] = s + static_cast<float>(i) * d;
        break;
      }
      case DataType::kFloat64: {
        double s = in[0]->data<double>()[0], d = in[2]->data<double>()[0];
        for (int64_t i = 0; i < n; ++i) y.data<double>()[i] = s + static_cast<double>(i) * d;
        break;
      }
      case DataType::kInt16:
        for (int64_t i = 0; i < n; ++i)
          y.data<int16_t>()[i] = static_cast<int16_t>(in[0]->data<int16_t>()[0] + i * in[2]->data<int16_t>()[0]);
        break;
      case DataType::kInt32:
        for (int64_t i = 0; i < n; ++i)
          y.data<int32_t>()[i] = static_cast<int32_t>(in[0]->data<int32_t>()[0] + i * in[2]->data<int32_t>()[0]);
        break;
      case DataType::kInt64:
        for (int64_t i = 0; i < n; ++i) y.data<int64_t>()[i] = in[0]->data<int64_t>()[0] + i * in[2]->data<int64_t>()[0];
        break;
      default: return unsupported_error("dtype");
    }
    return Status::ok();
  }
};

}  // namespace
}  // namespace ref

void register_ref_tensor_ops(KernelRegistry& r) {
  using namespace ref;
  r.add("", "Reshape", "ref", 0, make_factory<ReshapeKernel>());
  r.add("", "Flatten", "ref", 0, make_factory<FlattenKernel>());
  r.add("", "Squeeze", "ref", 0, make_factory<SqueezeKernel>());
  r.add("", "Unsqueeze", "ref", 0, make_factory<UnsqueezeKernel>());
  r.add("", "Identity", "ref", 0, make_factory<IdentityKernel>());
  r.add("", "Dropout", "ref", 0, make_factory<DropoutKernel>());
  r.add("", "Shape", "ref", 0, make_factory<ShapeKernel>());
  r.add("", "Size", "ref", 0, make_factory<SizeKernel>());
  r.add("", "Constant", "ref", 0, make_factory<ConstantKernel>());
  r.add("", "ConstantOfShape", "ref", 0, make_factory<ConstantOfShapeKernel>());
  r.add("", "Range", "ref", 0, make_factory<RangeKernel>());
  register_ref_tensor_movement(r);
  register_ref_tensor_resize(r);
}

}  // namespace medq
