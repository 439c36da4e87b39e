// Reference data-movement kernels. All are dtype-agnostic (elements are moved
// by size): Transpose, Concat, Split, Slice, Gather, GatherElements, GatherND,
// Expand, Tile, Pad, DepthToSpace, SpaceToDepth, Trilu, EyeLike, NonZero,
// Scatter/ScatterElements/ScatterND (with reductions), OneHot, Compress,
// ReverseSequence, Unique, NonMaxSuppression.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/ref/tensor_common.h"
#include "ops/kernel.h"

namespace medq {
namespace ref {
namespace {

// ---------------------------------------------------------------------------
// Transpose

// Drops size-1 dims and merges input dims that stay adjacent in the same
// order; returns the reduced input shape and permutation.
void simplify_perm(const Shape& in_shape, const std::vector<int64_t>& perm, Shape& s_shape,
                   std::vector<int64_t>& s_perm) {
  const int r = static_cast<int>(perm.size());
  std::vector<int64_t> kept;  // output order, input dims with size > 1
  for (int i = 0; i < r; ++i)
    if (in_shape[perm[i]] != 1) kept.push_back(perm[i]);
  // Group consecutive runs (in output order) of consecutive input dims.
  std::vector<std::vector<int64_t>> groups;
  for (int64_t d : kept) {
    if (!groups.empty() && groups.back().back() + 1 == d) {
      // input dim d follows the previous one unless some kept dim lies between (cannot: consecutive)
      groups.back().push_back(d);
    } else {
      groups.push_back({d});
    }
  }
  // Order groups by their first input dim to get the new input shape.
  std::vector<size_t> order(groups.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return groups[a][0] < groups[b][0]; });
  std::vector<int64_t> new_index(groups.size());
  s_shape.clear();
  for (size_t k = 0; k < order.size(); ++k) {
    new_index[order[k]] = static_cast<int64_t>(k);
    int64_t sz = 1;
    for (int64_t d : groups[order[k]]) sz *= in_shape[d];
    s_shape.push_back(sz);
  }
  s_perm.clear();
  for (size_t g = 0; g < groups.size(); ++g) s_perm.push_back(new_index[g]);
}

// Batched 2D transpose: src [B][R][C] -> dst [B][C][R], cache-blocked.
template <class T>
void transpose_2d_batched(T* dst, const T* src, int64_t batch, int64_t rows, int64_t cols, int num_threads) {
  constexpr int64_t kBlock = 32;
  const int64_t rb = (rows + kBlock - 1) / kBlock, cb = (cols + kBlock - 1) / kBlock;
  const int64_t tasks = batch * rb * cb;
  const bool par = batch * rows * cols > kParallelThreshold;
#pragma omp parallel for num_threads(num_threads) if (par)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t b = t / (rb * cb), rem = t % (rb * cb);
    const int64_t r0 = (rem / cb) * kBlock, c0 = (rem % cb) * kBlock;
    const int64_t r1 = std::min(rows, r0 + kBlock), c1 = std::min(cols, c0 + kBlock);
    const T* s = src + b * rows * cols;
    T* d = dst + b * rows * cols;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) d[c * rows + r] = s[r * cols + c];
  }
}

class TransposeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    if (info.node.has_attr("perm")) {
      perm_ = info.node.attr_ints("perm");
      has_perm_ = true;
    }
    return Status::ok();
  }
  Result<std::vector<int64_t>> perm_for(int r) const {
    std::vector<int64_t> p(r);
    if (!has_perm_) {
      for (int i = 0; i < r; ++i) p[i] = r - 1 - i;
      return p;
    }
    if (static_cast<int>(perm_.size()) != r)
      return error("perm " + shape_str(perm_) + " does not match input rank " + std::to_string(r));
    std::vector<bool> seen(r, false);
    for (int i = 0; i < r; ++i) {
      int64_t a = perm_[i] < 0 ? perm_[i] + r : perm_[i];
      if (a < 0 || a >= r || seen[a]) return error("perm " + shape_str(perm_) + " is not a permutation");
      seen[a] = true;
      p[i] = a;
    }
    return p;
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> p, perm_for(in[0]->rank()));
    Shape ys(p.size());
    for (size_t i = 0; i < p.size(); ++i) ys[i] = in[0]->shape()[p[i]];
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    ASSIGN_OR_RETURN(std::vector<int64_t> p, perm_for(in[0]->rank()));
    Shape s;
    std::vector<int64_t> sp;
    simplify_perm(in[0]->shape(), p, s, sp);
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (x.numel() == 0) return Status::ok();
    const int r = static_cast<int>(s.size());
    bool identity = true;
    for (int i = 0; i < r; ++i) identity &= sp[i] == i;
    if (identity) {
      copy_if_distinct(x, y);
      return Status::ok();
    }
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(x.raw());
      T* dst = static_cast<T*>(y.raw());
      if (r == 2) {
        transpose_2d_batched(dst, src, 1, s[0], s[1], ctx.num_threads);
      } else if (r == 3 && sp[0] == 0 && sp[1] == 2 && sp[2] == 1) {
        transpose_2d_batched(dst, src, s[0], s[1], s[2], ctx.num_threads);
      } else {
        std::vector<int64_t> in_st = strides_of(s), st(r);
        Shape ys(r);
        for (int i = 0; i < r; ++i) {
          ys[i] = s[sp[i]];
          st[i] = in_st[sp[i]];
        }
        strided_copy(dst, src, ys, st, 0, ctx.num_threads);
      }
    });
  }

 private:
  std::vector<int64_t> perm_;
  bool has_perm_ = false;
};

// ---------------------------------------------------------------------------
// Concat

class ConcatKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    if (!info.node.has_attr("axis") && info.opset >= 4) return error("missing 'axis' attribute");
    axis_ = info.node.attr_i("axis", 1);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    if (in.empty()) return error("needs at least one input");
    RETURN_IF_ERROR(check_inputs(in, in.size(), in.size()));
    const Tensor& a = *in[0];
    const int r = a.rank();
    if (r == 0) return error("cannot concatenate scalars");
    if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    Shape ys = a.shape();
    ys[axis] = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const Tensor& t = *in[i];
      if (t.dtype() != a.dtype())
        return error(std::string("input ") + std::to_string(i) + " has dtype " + dtype_name(t.dtype()) + ", expected " +
                     dtype_name(a.dtype()));
      if (t.rank() != r) return error("input " + std::to_string(i) + " has shape " + shape_str(t.shape()) +
                                      ", rank differs from " + shape_str(a.shape()));
      for (int d = 0; d < r; ++d)
        if (d != axis && t.shape()[d] != a.shape()[d])
          return error("input " + std::to_string(i) + " shape " + shape_str(t.shape()) + " does not match " +
                       shape_str(a.shape()) + " outside axis " + std::to_string(axis));
      ys[axis] += t.shape()[axis];
    }
    out.resize(num_outputs_);
    out[0] = {a.dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    Tensor& y = *out[0];
    const int r = y.rank();
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    const size_t es = dtype_size(y.dtype());
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= y.shape()[d];
    for (int d = axis + 1; d < r; ++d) inner *= y.shape()[d];
    const int64_t out_row = y.shape()[axis] * inner * es;
    uint8_t* dst = static_cast<uint8_t*>(y.raw());
    int64_t offset = 0;
    for (const Tensor* t : in) {
      const int64_t row = t->shape()[axis] * inner * es;
      const uint8_t* src = static_cast<const uint8_t*>(t->raw());
      const bool par = outer * row > kParallelThreshold * 4 && outer > 1;
#pragma omp parallel for num_threads(ctx.num_threads) if (par)
      for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * out_row + offset, src + o * row, row);
      offset += row;
    }
    return Status::ok();
  }

 private:
  int64_t axis_ = 1;
};

// ---------------------------------------------------------------------------
// Split

class SplitKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", 0);
    split_from_input_ = info.opset >= 13;
    if (!split_from_input_ && info.node.has_attr("split")) {
      split_ = info.node.attr_ints("split");
      has_split_ = true;
    }
    num_outputs_attr_ = info.node.attr_i("num_outputs", 0);
    if (num_outputs_ == 0) return error("needs at least one output");
    return Status::ok();
  }
  Result<std::vector<int64_t>> sizes(const TensorList& in, int& axis) const {
    const int r = in[0]->rank();
    if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    const int64_t dim = in[0]->shape()[axis];
    std::vector<int64_t> split = split_;
    bool has = has_split_;
    if (split_from_input_ && opt_input(in, 1)) {
      ASSIGN_OR_RETURN(split, read_ints(label_, "split", *in[1]));
      has = true;
    }
    const int64_t n = static_cast<int64_t>(num_outputs_);
    if (has) {
      if (static_cast<int64_t>(split.size()) != n)
        return error("split " + shape_str(split) + " has " + std::to_string(split.size()) + " entries for " +
                     std::to_string(n) + " outputs");
      int64_t total = 0;
      for (int64_t s : split) {
        if (s < 0) return error("negative split size in " + shape_str(split));
        total += s;
      }
      if (total != dim)
        return error("split " + shape_str(split) + " sums to " + std::to_string(total) + " but axis dim is " +
                     std::to_string(dim));
      return split;
    }
    split.assign(n, 0);
    if (num_outputs_attr_ > 0) {  // opset 18: ceil-sized chunks, last may be smaller
      int64_t chunk = (dim + n - 1) / n;
      for (int64_t i = 0; i < n; ++i) split[i] = std::max<int64_t>(0, std::min(chunk, dim - i * chunk));
      return split;
    }
    if (dim % n != 0)
      return error("axis dim " + std::to_string(dim) + " is not divisible into " + std::to_string(n) + " equal parts");
    for (auto& s : split) s = dim / n;
    return split;
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, split_from_input_ ? 2 : 1));
    int axis;
    ASSIGN_OR_RETURN(std::vector<int64_t> split, sizes(in, axis));
    out.resize(num_outputs_);
    for (size_t i = 0; i < num_outputs_; ++i) {
      Shape s = in[0]->shape();
      s[axis] = split[i];
      out[i] = {in[0]->dtype(), s};
    }
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    int axis;
    ASSIGN_OR_RETURN(std::vector<int64_t> split, sizes(in, axis));
    const Tensor& x = *in[0];
    const size_t es = dtype_size(x.dtype());
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= x.shape()[d];
    for (int d = axis + 1; d < x.rank(); ++d) inner *= x.shape()[d];
    const int64_t in_row = x.shape()[axis] * inner * es;
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    int64_t offset = 0;
    for (size_t i = 0; i < split.size(); ++i) {
      const int64_t row = split[i] * inner * es;
      if (Tensor* y = out_at(out, i)) {
        uint8_t* dst = static_cast<uint8_t*>(y->raw());
        for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * row, src + o * in_row + offset, row);
      }
      offset += row;
    }
    return Status::ok();
  }

 private:
  int64_t axis_ = 0;
  bool split_from_input_ = false;
  bool has_split_ = false;
  std::vector<int64_t> split_;
  int64_t num_outputs_attr_ = 0;
};

// ---------------------------------------------------------------------------
// Slice

class SliceKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    from_inputs_ = info.opset >= 10;
    if (!from_inputs_) {
      if (!info.node.has_attr("starts") || !info.node.has_attr("ends")) return error("missing 'starts'/'ends' attributes");
      starts_ = info.node.attr_ints("starts");
      ends_ = info.node.attr_ints("ends");
      axes_ = info.node.attr_ints("axes");
    }
    return Status::ok();
  }
  // Per-dim start, step and output size.
  Status plan(const TensorList& in, std::vector<int64_t>& start, std::vector<int64_t>& step, Shape& ys) const {
    std::vector<int64_t> starts = starts_, ends = ends_, axes = axes_, steps;
    if (from_inputs_) {
      ASSIGN_OR_RETURN(starts, read_ints(label_, "starts", *in[1]));
      ASSIGN_OR_RETURN(ends, read_ints(label_, "ends", *in[2]));
      if (const Tensor* a = opt_input(in, 3)) {
        ASSIGN_OR_RETURN(axes, read_ints(label_, "axes", *a));
      }
      if (const Tensor* s = opt_input(in, 4)) {
        ASSIGN_OR_RETURN(steps, read_ints(label_, "steps", *s));
      }
    }
    if (starts.size() != ends.size()) return error("starts and ends have different lengths");
    if (axes.empty()) {
      axes.resize(starts.size());
      std::iota(axes.begin(), axes.end(), 0);
    }
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (axes.size() != starts.size() || steps.size() != starts.size())
      return error("starts, ends, axes and steps must have the same length");
    const Shape& xs = in[0]->shape();
    const int r = in[0]->rank();
    start.assign(r, 0);
    step.assign(r, 1);
    ys = xs;
    std::vector<bool> seen(r, false);
    for (size_t i = 0; i < axes.size(); ++i) {
      int64_t a = axes[i];
      if (a < -r || a >= r) return error("axis " + std::to_string(a) + " out of range for rank " + std::to_string(r));
      if (a < 0) a += r;
      if (seen[a]) return error("axis " + std::to_string(axes[i]) + " is repeated");
      seen[a] = true;
      const int64_t d = xs[a];
      const int64_t st = steps[i];
      if (st == 0) return error("step is 0");
      int64_t s = starts[i], e = ends[i];
      if (s < 0) s += d;
      if (e < 0) e += d;
      if (st > 0) {
        s = std::clamp<int64_t>(s, 0, d);
        e = std::clamp<int64_t>(e, 0, d);
      } else {
        s = std::clamp<int64_t>(s, 0, d - 1);
        e = std::clamp<int64_t>(e, -1, d - 1);
      }
      int64_t n = 0;
      if (st > 0 && e > s) n = (e - s + st - 1) / st;
      if (st < 0 && s > e) n = (s - e + (-st) - 1) / (-st);
      start[a] = s;
      step[a] = st;
      ys[a] = n;
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, from_inputs_ ? 3 : 1, from_inputs_ ? 5 : 1));
    std::vector<int64_t> start, step;
    Shape ys;
    RETURN_IF_ERROR(plan(in, start, step, ys));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    std::vector<int64_t> start, step;
    Shape ys;
    RETURN_IF_ERROR(plan(in, start, step, ys));
    const Tensor& x = *in[0];
    if (shape_numel(ys) == 0) return Status::ok();
    std::vector<int64_t> xst = strides_of(x.shape()), st(x.rank());
    int64_t offset = 0;
    for (int i = 0; i < x.rank(); ++i) {
      st[i] = xst[i] * step[i];
      offset += start[i] * xst[i];
    }
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
      using T = decltype(tag);
      strided_copy(static_cast<T*>(out[0]->raw()), static_cast<const T*>(x.raw()), ys, st, offset, ctx.num_threads);
    });
  }

 private:
  bool from_inputs_ = true;
  std::vector<int64_t> starts_, ends_, axes_;
};

// ---------------------------------------------------------------------------
// Gather / GatherElements / GatherND

Result<std::vector<int64_t>> read_indices(const std::string& label, const Tensor& t, int64_t dim) {
  if (t.dtype() != DataType::kInt64 && t.dtype() != DataType::kInt32)
    return invalid_argument(label + ": indices must be int32 or int64, got " + dtype_name(t.dtype()));
  std::vector<int64_t> idx(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t v = t.dtype() == DataType::kInt64 ? t.data<int64_t>()[i] : t.data<int32_t>()[i];
    if (v < -dim || v >= dim)
      return invalid_argument(label + ": index " + std::to_string(v) + " out of range for dim " + std::to_string(dim));
    idx[i] = v < 0 ? v + dim : v;
  }
  return idx;
}

class GatherKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", 0);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    const int r = in[0]->rank();
    if (r == 0) return error("data must have rank >= 1");
    if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    if (in[1]->dtype() != DataType::kInt64 && in[1]->dtype() != DataType::kInt32)
      return error(std::string("indices must be int32 or int64, got ") + dtype_name(in[1]->dtype()));
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    Shape ys;
    for (int d = 0; d < axis; ++d) ys.push_back(in[0]->shape()[d]);
    for (int64_t d : in[1]->shape()) ys.push_back(d);
    for (int d = axis + 1; d < r; ++d) ys.push_back(in[0]->shape()[d]);
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    const int64_t dim = x.shape()[axis];
    ASSIGN_OR_RETURN(std::vector<int64_t> idx, read_indices(label_, *in[1], dim));
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= x.shape()[d];
    for (int d = axis + 1; d < r; ++d) inner *= x.shape()[d];
    const size_t es = dtype_size(x.dtype());
    const int64_t nidx = static_cast<int64_t>(idx.size());
    const int64_t block = inner * es;
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    uint8_t* dst = static_cast<uint8_t*>(out[0]->raw());
    const bool par = outer * nidx * inner > kParallelThreshold;
#pragma omp parallel for num_threads(ctx.num_threads) if (par)
    for (int64_t t = 0; t < outer * nidx; ++t) {
      const int64_t o = t / nidx, j = t % nidx;
      std::memcpy(dst + t * block, src + (o * dim + idx[j]) * block, block);
    }
    return Status::ok();
  }

 private:
  int64_t axis_ = 0;
};

class GatherElementsKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", 0);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    const int r = in[0]->rank();
    if (r == 0) return error("data must have rank >= 1");
    if (in[1]->rank() != r)
      return error("indices rank " + std::to_string(in[1]->rank()) + " differs from data rank " + std::to_string(r));
    if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[1]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const Tensor& ind = *in[1];
    const int r = x.rank();
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    ASSIGN_OR_RETURN(std::vector<int64_t> idx, read_indices(label_, ind, x.shape()[axis]));
    std::vector<int64_t> xst = strides_of(x.shape());
    const Shape& is = ind.shape();
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(x.raw());
      T* dst = static_cast<T*>(out[0]->raw());
      std::vector<int64_t> pos(r, 0);
      for (int64_t i = 0; i < static_cast<int64_t>(idx.size()); ++i) {
        int64_t off = 0;
        for (int d = 0; d < r; ++d) off += (d == axis ? idx[i] : pos[d]) * xst[d];
        dst[i] = src[off];
        for (int d = r - 1; d >= 0; --d) {
          if (++pos[d] < is[d]) break;
          pos[d] = 0;
        }
      }
    });
  }

 private:
  int64_t axis_ = 0;
};

class GatherNDKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    batch_dims_ = info.node.attr_i("batch_dims", 0);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    const Shape& xs = in[0]->shape();
    const Shape& is = in[1]->shape();
    const int64_t b = batch_dims_;
    if (in[1]->dtype() != DataType::kInt64) return error("indices must be int64");
    if (is.empty() || xs.empty()) return error("data and indices must have rank >= 1");
    const int64_t k = is.back();
    if (b < 0 || b >= static_cast<int64_t>(std::min(xs.size(), is.size())) || k < 1 ||
        b + k > static_cast<int64_t>(xs.size()))
      return error("invalid batch_dims/index depth for data " + shape_str(xs) + " and indices " + shape_str(is));
    for (int64_t d = 0; d < b; ++d)
      if (xs[d] != is[d]) return error("batch dims of data and indices differ");
    Shape ys(is.begin(), is.end() - 1);
    for (size_t d = b + k; d < xs.size(); ++d) ys.push_back(xs[d]);
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const Tensor& ind = *in[1];
    const Shape& xs = x.shape();
    const int64_t b = batch_dims_, k = ind.shape().back();
    int64_t batch = 1;
    for (int64_t d = 0; d < b; ++d) batch *= xs[d];
    const int64_t nq = ind.numel() / k / std::max<int64_t>(batch, 1);
    int64_t slice = 1;
    for (size_t d = b + k; d < xs.size(); ++d) slice *= xs[d];
    int64_t batch_stride = 1;
    for (size_t d = b; d < xs.size(); ++d) batch_stride *= xs[d];
    std::vector<int64_t> xst = strides_of(xs);
    const size_t es = dtype_size(x.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    uint8_t* dst = static_cast<uint8_t*>(out[0]->raw());
    const int64_t* id = ind.data<int64_t>();
    for (int64_t bb = 0; bb < batch; ++bb)
      for (int64_t q = 0; q < nq; ++q) {
        const int64_t* iq = id + (bb * nq + q) * k;
        int64_t off = bb * batch_stride;
        for (int64_t j = 0; j < k; ++j) {
          int64_t dim = xs[b + j], v = iq[j];
          if (v < -dim || v >= dim) return error("index " + std::to_string(v) + " out of range for dim " + std::to_string(dim));
          off += (v < 0 ? v + dim : v) * xst[b + j];
        }
        std::memcpy(dst + (bb * nq + q) * slice * es, src + off * es, slice * es);
      }
    return Status::ok();
  }

 private:
  int64_t batch_dims_ = 0;
};

// ---------------------------------------------------------------------------
// Expand / Tile

// dst (shape ys) = broadcast of src (shape xs, right-aligned, rank <= ys rank).
template <class T>
void broadcast_copy(T* dst, const T* src, const Shape& xs, const Shape& ys, int num_threads) {
  const int r = static_cast<int>(ys.size());
  std::vector<int64_t> xst = strides_of(xs), st(r, 0);
  const int off = r - static_cast<int>(xs.size());
  for (int d = 0; d < r; ++d)
    if (d >= off && xs[d - off] != 1) st[d] = xst[d - off];
  strided_copy(dst, src, ys, st, 0, num_threads);
}

class ExpandKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> shape, read_ints(label_, "shape", *in[1]));
    auto ys = broadcast_shapes(in[0]->shape(), shape);
    if (!ys.is_ok())
      return error("cannot expand " + shape_str(in[0]->shape()) + " to " + shape_str(shape));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys.value()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    return dispatch_by_size(dtype_size(in[0]->dtype()), [&](auto tag) {
      using T = decltype(tag);
      broadcast_copy(static_cast<T*>(out[0]->raw()), static_cast<const T*>(in[0]->raw()), in[0]->shape(),
                     out[0]->shape(), ctx.num_threads);
    });
  }
};

class TileKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> rep, read_ints(label_, "repeats", *in[1]));
    if (static_cast<int>(rep.size()) != in[0]->rank())
      return error("repeats " + shape_str(rep) + " does not match input rank " + std::to_string(in[0]->rank()));
    Shape ys = in[0]->shape();
    for (size_t i = 0; i < rep.size(); ++i) {
      if (rep[i] < 0) return error("negative repeat in " + shape_str(rep));
      ys[i] *= rep[i];
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    if (y.numel() == 0) return Status::ok();
    const int r = x.rank();
    const Shape& xs = x.shape();
    const Shape& ys = y.shape();
    std::vector<int64_t> xst = strides_of(xs);
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(x.raw());
      T* dst = static_cast<T*>(y.raw());
      if (r == 0) {
        dst[0] = src[0];
        return;
      }
      const int64_t inner = ys[r - 1], rows = y.numel() / inner, xin = xs[r - 1];
      for (int64_t row = 0; row < rows; ++row) {
        int64_t off = 0, rem = row;
        for (int d = r - 2; d >= 0; --d) {
          off += ((rem % ys[d]) % xs[d]) * xst[d];
          rem /= ys[d];
        }
        T* o = dst + row * inner;
        for (int64_t j = 0; j < inner; j += xin) std::memcpy(o + j, src + off, xin * sizeof(T));
      }
    });
  }
};

// ---------------------------------------------------------------------------
// Pad

class PadKernel : public TensorKernel {
 public:
  enum class Mode { kConstant, kReflect, kEdge, kWrap };
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    const Node& n = info.node;
    std::string mode = n.attr_s("mode", "constant");
    if (mode == "constant") mode_ = Mode::kConstant;
    else if (mode == "reflect") mode_ = Mode::kReflect;
    else if (mode == "edge") mode_ = Mode::kEdge;
    else if (mode == "wrap") mode_ = Mode::kWrap;
    else return error("unknown mode '" + mode + "'");
    pads_from_input_ = info.opset >= 11;
    if (!pads_from_input_) {
      const char* name = n.has_attr("pads") ? "pads" : "paddings";
      if (!n.has_attr(name)) return error("missing 'pads' attribute");
      pads_ = n.attr_ints(name);
      value_ = n.attr_f("value", 0.0f);
    }
    return Status::ok();
  }
  Status get_pads(const TensorList& in, std::vector<int64_t>& pads) const {
    const int r = in[0]->rank();
    pads = pads_;
    if (pads_from_input_) {
      ASSIGN_OR_RETURN(std::vector<int64_t> p, read_ints(label_, "pads", *in[1]));
      if (const Tensor* ax = opt_input(in, 3)) {
        ASSIGN_OR_RETURN(std::vector<int64_t> axes, read_ints(label_, "axes", *ax));
        if (p.size() != 2 * axes.size()) return error("pads length does not match axes");
        pads.assign(2 * r, 0);
        for (size_t i = 0; i < axes.size(); ++i) {
          int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
          if (a < 0 || a >= r) return error("axis " + std::to_string(axes[i]) + " out of range");
          pads[a] = p[i];
          pads[a + r] = p[i + axes.size()];
        }
      } else {
        pads = p;
      }
    }
    if (static_cast<int>(pads.size()) != 2 * r)
      return error("pads " + shape_str(pads) + " must have 2 * rank (" + std::to_string(2 * r) + ") entries");
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, pads_from_input_ ? 2 : 1, pads_from_input_ ? 4 : 1));
    std::vector<int64_t> pads;
    RETURN_IF_ERROR(get_pads(in, pads));
    const int r = in[0]->rank();
    Shape ys = in[0]->shape();
    for (int d = 0; d < r; ++d) {
      ys[d] += pads[d] + pads[d + r];
      if (ys[d] < 0) return error("pads " + shape_str(pads) + " crop more than the input " + shape_str(in[0]->shape()));
      if (mode_ != Mode::kConstant && in[0]->shape()[d] == 0 && ys[d] > 0)
        return error("cannot pad an empty dim in non-constant mode");
    }
    if (const Tensor* cv = opt_input(in, 2)) {
      if (cv->numel() != 1) return error("constant_value must be a scalar");
      if (cv->dtype() != in[0]->dtype()) return error("constant_value dtype differs from data");
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  // Maps an output coordinate to an input coordinate, -1 for the constant.
  int64_t map_index(int64_t o, int64_t pad_begin, int64_t n) const {
    int64_t i = o - pad_begin;
    if (i >= 0 && i < n) return i;
    switch (mode_) {
      case Mode::kConstant: return -1;
      case Mode::kEdge: return std::clamp<int64_t>(i, 0, n - 1);
      case Mode::kWrap: return ((i % n) + n) % n;
      case Mode::kReflect: {
        if (n == 1) return 0;
        const int64_t period = 2 * (n - 1);
        i = ((i % period) + period) % period;
        return i >= n ? period - i : i;
      }
    }
    return -1;
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    std::vector<int64_t> pads;
    RETURN_IF_ERROR(get_pads(in, pads));
    const int r = x.rank();
    if (y.numel() == 0) return Status::ok();
    // Padding value in the data's dtype.
    Tensor pad_value;
    if (const Tensor* cv = opt_input(in, 2)) pad_value = *cv;
    else pad_value = Tensor::scalar<double>(value_).cast(x.dtype());
    const Shape& xs = x.shape();
    const Shape& ys = y.shape();
    std::vector<int64_t> xst = strides_of(xs);
    std::vector<std::vector<int64_t>> maps(r);
    for (int d = 0; d < r; ++d) {
      maps[d].resize(ys[d]);
      for (int64_t o = 0; o < ys[d]; ++o) maps[d][o] = map_index(o, pads[d], xs[d]);
    }
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
      using T = decltype(tag);
      T pv;
      std::memcpy(&pv, pad_value.raw(), sizeof(T));
      const T* src = static_cast<const T*>(x.raw());
      T* dst = static_cast<T*>(y.raw());
      if (r == 0) {
        dst[0] = src[0];
        return;
      }
      const int64_t inner = ys[r - 1], rows = y.numel() / inner;
      const std::vector<int64_t>& last = maps[r - 1];
      for (int64_t row = 0; row < rows; ++row) {
        int64_t off = 0, rem = row;
        bool constant = false;
        for (int d = r - 2; d >= 0; --d) {
          int64_t m = maps[d][rem % ys[d]];
          rem /= ys[d];
          if (m < 0) constant = true;
          else off += m * xst[d];
        }
        T* o = dst + row * inner;
        if (constant) {
          std::fill(o, o + inner, pv);
          continue;
        }
        const T* s = src + off;
        for (int64_t j = 0; j < inner; ++j) o[j] = last[j] < 0 ? pv : s[last[j]];
      }
    });
  }

 private:
  Mode mode_ = Mode::kConstant;
  bool pads_from_input_ = true;
  std::vector<int64_t> pads_;
  float value_ = 0.0f;
};

// ---------------------------------------------------------------------------
// DepthToSpace / SpaceToDepth: reshape + transpose.

class DepthSpaceKernel : public TensorKernel {
 public:
  explicit DepthSpaceKernel(bool to_space) : to_space_(to_space) {}
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    block_ = info.node.attr_i("blocksize", 0);
    if (block_ <= 0) return error("blocksize must be positive");
    crd_ = to_space_ && info.node.attr_s("mode", "DCR") == "CRD";
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    if (in[0]->rank() != 4) return error("input must be 4-D, got " + shape_str(in[0]->shape()));
    const Shape& s = in[0]->shape();
    const int64_t b = block_;
    Shape ys;
    if (to_space_) {
      if (s[1] % (b * b) != 0) return error("channels " + std::to_string(s[1]) + " not divisible by blocksize^2");
      ys = {s[0], s[1] / (b * b), s[2] * b, s[3] * b};
    } else {
      if (s[2] % b != 0 || s[3] % b != 0) return error("H and W must be divisible by blocksize");
      ys = {s[0], s[1] * b * b, s[2] / b, s[3] / b};
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const override {
    const Shape& s = in[0]->shape();
    const int64_t b = block_, n = s[0], c = s[1], h = s[2], w = s[3];
    Shape view_shape;
    std::vector<int64_t> perm;
    if (to_space_) {
      if (crd_) {
        view_shape = {n, c / (b * b), b, b, h, w};
        perm = {0, 1, 4, 2, 5, 3};
      } else {
        view_shape = {n, b, b, c / (b * b), h, w};
        perm = {0, 3, 4, 1, 5, 2};
      }
    } else {
      view_shape = {n, c, h / b, b, w / b, b};
      perm = {0, 3, 5, 1, 2, 4};
    }
    std::vector<int64_t> vst = strides_of(view_shape), st(6);
    Shape ts(6);
    for (int i = 0; i < 6; ++i) {
      ts[i] = view_shape[perm[i]];
      st[i] = vst[perm[i]];
    }
    return dispatch_by_size(dtype_size(in[0]->dtype()), [&](auto tag) {
      using T = decltype(tag);
      strided_copy(static_cast<T*>(out[0]->raw()), static_cast<const T*>(in[0]->raw()), ts, st, 0, ctx.num_threads);
    });
  }

 private:
  bool to_space_;
  bool crd_ = false;
  int64_t block_ = 0;
};

class DepthToSpaceKernel : public DepthSpaceKernel {
 public:
  DepthToSpaceKernel() : DepthSpaceKernel(true) {}
};
class SpaceToDepthKernel : public DepthSpaceKernel {
 public:
  SpaceToDepthKernel() : DepthSpaceKernel(false) {}
};

// ---------------------------------------------------------------------------
// Trilu / EyeLike / NonZero

class TriluKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    upper_ = info.node.attr_i("upper", 1) != 0;
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 2));
    if (in[0]->rank() < 2) return error("input must have rank >= 2");
    if (const Tensor* k = opt_input(in, 1))
      if (k->numel() != 1) return error("k must be a scalar");
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const int64_t k = opt_input(in, 1) ? in[1]->get_i64(0) : 0;
    const int64_t rows = x.dim(-2), cols = x.dim(-1);
    const int64_t mats = (rows != 0 && cols != 0) ? x.numel() / (rows * cols) : 0;
    return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(x.raw());
      T* dst = static_cast<T*>(out[0]->raw());
      for (int64_t m = 0; m < mats; ++m)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) {
            const int64_t o = (m * rows + i) * cols + j;
            const bool keep = upper_ ? (j - i >= k) : (j - i <= k);
            dst[o] = keep ? src[o] : T(0);
          }
    });
  }

 private:
  bool upper_ = true;
};

class EyeLikeKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    k_ = info.node.attr_i("k", 0);
    if (info.node.has_attr("dtype")) {
      dtype_ = static_cast<DataType>(info.node.attr_i("dtype", 1));
      if (!dtype_supported(dtype_)) return unsupported_error("dtype " + std::to_string(static_cast<int>(dtype_)));
    }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    if (in[0]->rank() != 2) return error("input must be 2-D, got " + shape_str(in[0]->shape()));
    out.resize(num_outputs_);
    out[0] = {dtype_ == DataType::kUndefined ? in[0]->dtype() : dtype_, in[0]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    Tensor& y = *out[0];
    std::memset(y.raw(), 0, y.nbytes());
    Tensor one = Tensor::scalar<float>(1.0f).cast(y.dtype());
    const size_t es = dtype_size(y.dtype());
    const int64_t rows = y.dim(0), cols = y.dim(1);
    uint8_t* p = static_cast<uint8_t*>(y.raw());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t j = i + k_;
      if (j >= 0 && j < cols) std::memcpy(p + (i * cols + j) * es, one.raw(), es);
    }
    return Status::ok();
  }

 private:
  int64_t k_ = 0;
  DataType dtype_ = DataType::kUndefined;
};

class NonZeroKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    return Status::ok();
  }
  static int64_t count(const Tensor& x) {
    int64_t n = 0;
    for (int64_t i = 0; i < x.numel(); ++i) n += x.get_f64(i) != 0.0;
    return n;
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    out.resize(num_outputs_);
    out[0] = {DataType::kInt64, {std::max(in[0]->rank(), 1), count(*in[0])}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    const int64_t nnz = out[0]->dim(1);
    int64_t* y = out[0]->data<int64_t>();
    std::vector<int64_t> pos(r, 0);
    int64_t k = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      if (x.get_f64(i) != 0.0) {
        if (r == 0) y[k] = 0;
        for (int d = 0; d < r; ++d) y[d * nnz + k] = pos[d];
        ++k;
      }
      for (int d = r - 1; d >= 0; --d) {
        if (++pos[d] < x.shape()[d]) break;
        pos[d] = 0;
      }
    }
    return Status::ok();
  }
};

// ---------------------------------------------------------------------------
// Scatter / ScatterElements / ScatterND

enum class ScatterReduce { kNone, kAdd, kMul, kMax, kMin };

Result<ScatterReduce> parse_reduction(const Node& n) {
  const std::string r = n.attr_s("reduction", "none");
  if (r == "none") return ScatterReduce::kNone;
  if (r == "add") return ScatterReduce::kAdd;
  if (r == "mul") return ScatterReduce::kMul;
  if (r == "max") return ScatterReduce::kMax;
  if (r == "min") return ScatterReduce::kMin;
  return invalid_argument(n.label() + ": unknown reduction '" + r + "'");
}

template <class T>
inline void scatter_apply(ScatterReduce red, T& dst, T v) {
  switch (red) {
    case ScatterReduce::kNone: dst = v; break;
    case ScatterReduce::kAdd: dst = static_cast<T>(dst + v); break;
    case ScatterReduce::kMul: dst = static_cast<T>(dst * v); break;
    case ScatterReduce::kMax: dst = std::max(dst, v); break;
    case ScatterReduce::kMin: dst = std::min(dst, v); break;
  }
}

// Calls f(T{}) with the C++ type of a numeric dtype (for arithmetic reductions).
template <class F>
Status dispatch_numeric(DataType dt, const std::string& label, F&& f) {
  switch (dt) {
    case DataType::kFloat32: f(float{}); return Status::ok();
    case DataType::kFloat64: f(double{}); return Status::ok();
    case DataType::kInt8: f(int8_t{}); return Status::ok();
    case DataType::kUInt8: f(uint8_t{}); return Status::ok();
    case DataType::kInt16: f(int16_t{}); return Status::ok();
    case DataType::kUInt16: f(uint16_t{}); return Status::ok();
    case DataType::kInt32: f(int32_t{}); return Status::ok();
    case DataType::kInt64: f(int64_t{}); return Status::ok();
    case DataType::kUInt32: f(uint32_t{}); return Status::ok();
    case DataType::kUInt64: f(uint64_t{}); return Status::ok();
    default:
      return unsupported(label + ": dtype " + dtype_name(dt) + " is not supported with a scatter reduction");
  }
}

class ScatterElementsKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", 0);
    ASSIGN_OR_RETURN(red_, parse_reduction(info.node));
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 3, 3));
    const int r = in[0]->rank();
    if (r == 0) return error("data must have rank >= 1");
    if (in[1]->rank() != r)
      return error("indices rank " + std::to_string(in[1]->rank()) + " differs from data rank " + std::to_string(r));
    if (in[2]->shape() != in[1]->shape())
      return error("updates " + shape_str(in[2]->shape()) + " must have the shape of indices " +
                   shape_str(in[1]->shape()));
    if (in[2]->dtype() != in[0]->dtype()) return error("updates dtype differs from data dtype");
    if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
    for (int d = 0; d < r; ++d)
      if (d != (axis_ < 0 ? axis_ + r : axis_) && in[1]->dim(d) > in[0]->dim(d))
        return error("indices " + shape_str(in[1]->shape()) + " exceed data " + shape_str(in[0]->shape()) +
                     " in dim " + std::to_string(d));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const Tensor& ind = *in[1];
    const Tensor& upd = *in[2];
    Tensor& y = *out[0];
    const int r = x.rank();
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    ASSIGN_OR_RETURN(std::vector<int64_t> idx, read_indices(label_, ind, x.shape()[axis]));
    copy_if_distinct(x, y);
    std::vector<int64_t> xst = strides_of(x.shape());
    const Shape& is = ind.shape();
    // Output offset of every update element.
    std::vector<int64_t> offs(idx.size());
    std::vector<int64_t> pos(r, 0);
    for (int64_t i = 0; i < static_cast<int64_t>(idx.size()); ++i) {
      int64_t off = 0;
      for (int d = 0; d < r; ++d) off += (d == axis ? idx[i] : pos[d]) * xst[d];
      offs[i] = off;
      for (int d = r - 1; d >= 0; --d) {
        if (++pos[d] < is[d]) break;
        pos[d] = 0;
      }
    }
    if (red_ == ScatterReduce::kNone) {
      return dispatch_by_size(dtype_size(x.dtype()), [&](auto tag) {
        using T = decltype(tag);
        const T* u = static_cast<const T*>(upd.raw());
        T* dst = static_cast<T*>(y.raw());
        for (size_t i = 0; i < offs.size(); ++i) dst[offs[i]] = u[i];
      });
    }
    return dispatch_numeric(x.dtype(), label_, [&](auto tag) {
      using T = decltype(tag);
      const T* u = upd.data<T>();
      T* dst = y.data<T>();
      for (size_t i = 0; i < offs.size(); ++i) scatter_apply(red_, dst[offs[i]], u[i]);
    });
  }

 private:
  int64_t axis_ = 0;
  ScatterReduce red_ = ScatterReduce::kNone;
};

class ScatterNDKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    ASSIGN_OR_RETURN(red_, parse_reduction(info.node));
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 3, 3));
    const Shape& xs = in[0]->shape();
    const Shape& is = in[1]->shape();
    if (in[1]->dtype() != DataType::kInt64) return error("indices must be int64");
    if (xs.empty() || is.empty()) return error("data and indices must have rank >= 1");
    const int64_t k = is.back();
    if (k < 1 || k > static_cast<int64_t>(xs.size()))
      return error("index depth " + std::to_string(k) + " invalid for data " + shape_str(xs));
    Shape us(is.begin(), is.end() - 1);
    for (size_t d = k; d < xs.size(); ++d) us.push_back(xs[d]);
    if (in[2]->shape() != us)
      return error("updates " + shape_str(in[2]->shape()) + " must have shape " + shape_str(us));
    if (in[2]->dtype() != in[0]->dtype()) return error("updates dtype differs from data dtype");
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), xs};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const Tensor& ind = *in[1];
    const Tensor& upd = *in[2];
    Tensor& y = *out[0];
    const Shape& xs = x.shape();
    const int64_t k = ind.shape().back();
    const int64_t nq = k ? ind.numel() / k : 0;
    int64_t slice = 1;
    for (size_t d = k; d < xs.size(); ++d) slice *= xs[d];
    std::vector<int64_t> xst = strides_of(xs);
    const int64_t* id = ind.data<int64_t>();
    std::vector<int64_t> offs(nq);
    for (int64_t q = 0; q < nq; ++q) {
      int64_t off = 0;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t dim = xs[j], v = id[q * k + j];
        if (v < -dim || v >= dim) return error("index " + std::to_string(v) + " out of range for dim " + std::to_string(dim));
        off += (v < 0 ? v + dim : v) * xst[j];
      }
      offs[q] = off;
    }
    copy_if_distinct(x, y);
    if (red_ == ScatterReduce::kNone) {
      const size_t es = dtype_size(x.dtype());
      uint8_t* dst = static_cast<uint8_t*>(y.raw());
      const uint8_t* u = static_cast<const uint8_t*>(upd.raw());
      for (int64_t q = 0; q < nq; ++q) std::memcpy(dst + offs[q] * es, u + q * slice * es, slice * es);
      return Status::ok();
    }
    return dispatch_numeric(x.dtype(), label_, [&](auto tag) {
      using T = decltype(tag);
      const T* u = upd.data<T>();
      T* dst = y.data<T>();
      for (int64_t q = 0; q < nq; ++q)
        for (int64_t j = 0; j < slice; ++j) scatter_apply(red_, dst[offs[q] + j], u[q * slice + j]);
    });
  }

 private:
  ScatterReduce red_ = ScatterReduce::kNone;
};

// ---------------------------------------------------------------------------
// OneHot

class OneHotKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    axis_ = info.node.attr_i("axis", -1);
    return Status::ok();
  }
  Result<int64_t> depth_of(const Tensor& t) const {
    if (t.numel() != 1) return error("depth must have exactly one element, got " + shape_str(t.shape()));
    const double d = t.get_f64(0);
    if (!(d >= 1)) return error("depth must be >= 1, got " + std::to_string(d));
    return static_cast<int64_t>(d);
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 3, 3));
    if (in[2]->numel() != 2) return error("values must have 2 elements [off, on], got " + shape_str(in[2]->shape()));
    ASSIGN_OR_RETURN(int64_t depth, depth_of(*in[1]));
    const int r = in[0]->rank() + 1;
    if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for output rank " + std::to_string(r));
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    Shape ys = in[0]->shape();
    ys.insert(ys.begin() + axis, depth);
    out.resize(num_outputs_);
    out[0] = {in[2]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& ind = *in[0];
    ASSIGN_OR_RETURN(int64_t depth, depth_of(*in[1]));
    const int r = ind.rank() + 1;
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= ind.shape()[d];
    for (int d = axis; d < ind.rank(); ++d) inner *= ind.shape()[d];
    const Tensor& vals = *in[2];
    Tensor& y = *out[0];
    return dispatch_by_size(dtype_size(vals.dtype()), [&](auto tag) {
      using T = decltype(tag);
      const T off = static_cast<const T*>(vals.raw())[0], on = static_cast<const T*>(vals.raw())[1];
      T* dst = static_cast<T*>(y.raw());
      std::fill(dst, dst + y.numel(), off);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          double v = ind.get_f64(o * inner + i);
          int64_t k = static_cast<int64_t>(v);
          if (k < 0) k += depth;
          if (k < 0 || k >= depth) continue;
          dst[(o * depth + k) * inner + i] = on;
        }
    });
  }

 private:
  int64_t axis_ = -1;
};

// ---------------------------------------------------------------------------
// Compress

class CompressKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    has_axis_ = info.node.has_attr("axis");
    axis_ = info.node.attr_i("axis", 0);
    return Status::ok();
  }
  // Selected positions along the compressed dim of size `dim`.
  Result<std::vector<int64_t>> selected(const Tensor& cond, int64_t dim) const {
    if (cond.rank() != 1) return error("condition must be 1-D, got " + shape_str(cond.shape()));
    if (cond.numel() > dim)
      return error("condition has " + std::to_string(cond.numel()) + " entries, more than the " + std::to_string(dim) +
                   " selectable slices");
    std::vector<int64_t> sel;
    for (int64_t i = 0; i < cond.numel(); ++i)
      if (cond.get_f64(i) != 0) sel.push_back(i);
    return sel;
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    const Shape& xs = in[0]->shape();
    const int r = in[0]->rank();
    Shape ys;
    if (has_axis_) {
      if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
      const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
      ASSIGN_OR_RETURN(std::vector<int64_t> sel, selected(*in[1], xs[axis]));
      ys = xs;
      ys[axis] = static_cast<int64_t>(sel.size());
    } else {
      ASSIGN_OR_RETURN(std::vector<int64_t> sel, selected(*in[1], in[0]->numel()));
      ys = {static_cast<int64_t>(sel.size())};
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    int64_t outer = 1, dim = x.numel(), inner = 1;
    if (has_axis_) {
      const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
      dim = x.shape()[axis];
      for (int d = 0; d < axis; ++d) outer *= x.shape()[d];
      for (int d = axis + 1; d < r; ++d) inner *= x.shape()[d];
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> sel, selected(*in[1], dim));
    const size_t es = dtype_size(x.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    uint8_t* dst = static_cast<uint8_t*>(out[0]->raw());
    const int64_t ns = static_cast<int64_t>(sel.size());
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < ns; ++j)
        std::memcpy(dst + (o * ns + j) * inner * es, src + (o * dim + sel[j]) * inner * es, inner * es);
    return Status::ok();
  }

 private:
  bool has_axis_ = false;
  int64_t axis_ = 0;
};

// ---------------------------------------------------------------------------
// ReverseSequence

class ReverseSequenceKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    time_axis_ = info.node.attr_i("time_axis", 0);
    batch_axis_ = info.node.attr_i("batch_axis", 1);
    if (!((time_axis_ == 0 && batch_axis_ == 1) || (time_axis_ == 1 && batch_axis_ == 0)))
      return error("time_axis/batch_axis must be 0/1 or 1/0, got " + std::to_string(time_axis_) + "/" +
                   std::to_string(batch_axis_));
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 2));
    if (in[0]->rank() < 2) return error("input must have rank >= 2, got " + shape_str(in[0]->shape()));
    if (in[1]->rank() != 1 || in[1]->numel() != in[0]->dim(static_cast<int>(batch_axis_)))
      return error("sequence_lens " + in[1]->desc() + " must be 1-D with the batch size " +
                   std::to_string(in[0]->dim(static_cast<int>(batch_axis_))));
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), in[0]->shape()};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    const int64_t T = x.dim(static_cast<int>(time_axis_)), B = x.dim(static_cast<int>(batch_axis_));
    const int64_t inner = x.numel() / std::max<int64_t>(T * B, 1);
    const int64_t t_stride = (time_axis_ == 0 ? B : 1) * inner, b_stride = (batch_axis_ == 0 ? T : 1) * inner;
    const size_t es = dtype_size(x.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    uint8_t* dst = static_cast<uint8_t*>(out[0]->raw());
    for (int64_t b = 0; b < B; ++b) {
      int64_t len = in[1]->get_i64(b);
      if (len < 0 || len > T)
        return error("sequence_lens[" + std::to_string(b) + "] = " + std::to_string(len) + " outside [0, " +
                     std::to_string(T) + "]");
      for (int64_t t = 0; t < T; ++t) {
        const int64_t st = t < len ? len - 1 - t : t;
        std::memcpy(dst + (b * b_stride + t * t_stride) * es, src + (b * b_stride + st * t_stride) * es, inner * es);
      }
    }
    return Status::ok();
  }

 private:
  int64_t time_axis_ = 0, batch_axis_ = 1;
};

// ---------------------------------------------------------------------------
// Unique

// Outputs Y (unique elements or slices along `axis`), indices (first
// occurrence), inverse_indices and counts. sorted=1 orders Y ascending
// (slices lexicographically), sorted=0 by first occurrence.
class UniqueKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    has_axis_ = info.node.has_attr("axis");
    axis_ = info.node.attr_i("axis", 0);
    sorted_ = info.node.attr_i("sorted", 1) != 0;
    return Status::ok();
  }
  struct Plan {
    int64_t outer = 1, dim = 0, inner = 1;
    std::vector<int64_t> first;    // per unique item: first occurrence
    std::vector<int64_t> inverse;  // per item of X: unique index
    std::vector<int64_t> counts;
  };
  Status plan(const Tensor& x, Plan& p) const {
    const int r = x.rank();
    if (has_axis_) {
      if (axis_ < -r || axis_ >= r) return error("axis " + std::to_string(axis_) + " out of range for rank " + std::to_string(r));
      const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
      p.dim = x.shape()[axis];
      for (int d = 0; d < axis; ++d) p.outer *= x.shape()[d];
      for (int d = axis + 1; d < r; ++d) p.inner *= x.shape()[d];
    } else {
      p.dim = x.numel();
    }
    return dispatch_numeric(x.dtype() == DataType::kBool ? DataType::kUInt8 : x.dtype(), label_, [&](auto tag) {
      using T = decltype(tag);
      const T* src = static_cast<const T*>(x.raw());
      const int64_t outer = p.outer, dim = p.dim, inner = p.inner;
      // Three-way comparison of items a and b (slices along the axis).
      auto cmp = [&](int64_t a, int64_t b) {
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) {
            const T va = src[(o * dim + a) * inner + i], vb = src[(o * dim + b) * inner + i];
            if (va < vb) return -1;
            if (vb < va) return 1;
          }
        return 0;
      };
      std::vector<int64_t> order(dim);
      for (int64_t i = 0; i < dim; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cmp(a, b) < 0; });
      // Groups of equal items in sorted order; the first of each is the first occurrence (stable sort).
      std::vector<int64_t> group_of(dim);
      std::vector<int64_t> firsts, cnts;
      for (int64_t k = 0; k < dim; ++k) {
        if (k == 0 || cmp(order[k - 1], order[k]) != 0) {
          firsts.push_back(order[k]);
          cnts.push_back(0);
        }
        group_of[order[k]] = static_cast<int64_t>(firsts.size()) - 1;
        ++cnts.back();
      }
      std::vector<int64_t> rank(firsts.size());
      std::vector<int64_t> gorder(firsts.size());
      for (size_t g = 0; g < firsts.size(); ++g) gorder[g] = static_cast<int64_t>(g);
      if (!sorted_)
        std::sort(gorder.begin(), gorder.end(), [&](int64_t a, int64_t b) { return firsts[a] < firsts[b]; });
      for (size_t k = 0; k < gorder.size(); ++k) rank[gorder[k]] = static_cast<int64_t>(k);
      p.first.resize(firsts.size());
      p.counts.resize(firsts.size());
      for (size_t g = 0; g < firsts.size(); ++g) {
        p.first[rank[g]] = firsts[g];
        p.counts[rank[g]] = cnts[g];
      }
      p.inverse.resize(dim);
      for (int64_t i = 0; i < dim; ++i) p.inverse[i] = rank[group_of[i]];
    });
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 1, 1));
    Plan p;
    RETURN_IF_ERROR(plan(*in[0], p));
    const int64_t u = static_cast<int64_t>(p.first.size());
    Shape ys = {u};
    if (has_axis_) {
      ys = in[0]->shape();
      ys[axis_ < 0 ? axis_ + in[0]->rank() : axis_] = u;
    }
    out.resize(num_outputs_);
    out[0] = {in[0]->dtype(), ys};
    if (num_outputs_ > 1) out[1] = {DataType::kInt64, {u}};
    if (num_outputs_ > 2) out[2] = {DataType::kInt64, {p.dim}};
    if (num_outputs_ > 3) out[3] = {DataType::kInt64, {u}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    const Tensor& x = *in[0];
    Plan p;
    RETURN_IF_ERROR(plan(x, p));
    const int64_t u = static_cast<int64_t>(p.first.size());
    if (Tensor* y = out_at(out, 0)) {
      const size_t es = dtype_size(x.dtype());
      const uint8_t* src = static_cast<const uint8_t*>(x.raw());
      uint8_t* dst = static_cast<uint8_t*>(y->raw());
      for (int64_t o = 0; o < p.outer; ++o)
        for (int64_t k = 0; k < u; ++k)
          std::memcpy(dst + (o * u + k) * p.inner * es, src + (o * p.dim + p.first[k]) * p.inner * es, p.inner * es);
    }
    auto put = [&](size_t i, const std::vector<int64_t>& v) {
      if (Tensor* t = out_at(out, i)) std::copy(v.begin(), v.end(), t->data<int64_t>());
    };
    put(1, p.first);
    put(2, p.inverse);
    put(3, p.counts);
    return Status::ok();
  }

 private:
  bool has_axis_ = false, sorted_ = true;
  int64_t axis_ = 0;
};

// ---------------------------------------------------------------------------
// NonMaxSuppression

// Greedy per (batch, class): boxes with score > score_threshold by descending
// score, dropping those whose IoU with a kept box exceeds iou_threshold, at
// most max_output_boxes_per_class. Output [num_selected, 3] int64 rows
// (batch, class, box).
class NonMaxSuppressionKernel : public TensorKernel {
 public:
  Status init(const KernelCreateInfo& info) {
    init_base(info);
    center_point_box_ = info.node.attr_i("center_point_box", 0) != 0;
    return Status::ok();
  }
  Status select(const TensorList& in, std::vector<int64_t>& rows) const {
    const Tensor& boxes = *in[0];
    const Tensor& scores = *in[1];
    if (boxes.dtype() != DataType::kFloat32 || scores.dtype() != DataType::kFloat32)
      return unsupported_error("boxes and scores must be float32");
    if (boxes.rank() != 3 || boxes.dim(2) != 4) return error("boxes must be [batch, boxes, 4], got " + shape_str(boxes.shape()));
    if (scores.rank() != 3 || scores.dim(0) != boxes.dim(0) || scores.dim(2) != boxes.dim(1))
      return error("scores " + shape_str(scores.shape()) + " must be [batch, classes, " + std::to_string(boxes.dim(1)) + "]");
    int64_t max_out = 0;
    float iou_th = 0, score_th = -std::numeric_limits<float>::infinity();
    bool has_score_th = false;
    if (const Tensor* t = opt_input(in, 2)) {
      if (t->numel() != 1) return error("max_output_boxes_per_class must have one element");
      max_out = t->get_i64(0);
    }
    if (const Tensor* t = opt_input(in, 3)) {
      if (t->numel() != 1) return error("iou_threshold must have one element");
      iou_th = static_cast<float>(t->get_f64(0));
    }
    if (const Tensor* t = opt_input(in, 4)) {
      if (t->numel() != 1) return error("score_threshold must have one element");
      score_th = static_cast<float>(t->get_f64(0));
      has_score_th = true;
    }
    rows.clear();
    if (max_out <= 0) return Status::ok();
    const int64_t B = boxes.dim(0), NB = boxes.dim(1), NC = scores.dim(1);
    const float* bx = boxes.data<float>();
    const float* sc = scores.data<float>();
    auto corners = [&](const float* b, float* c) {
      if (center_point_box_) {
        c[0] = b[1] - b[3] / 2;  // y1
        c[1] = b[0] - b[2] / 2;  // x1
        c[2] = b[1] + b[3] / 2;
        c[3] = b[0] + b[2] / 2;
      } else {
        c[0] = std::min(b[0], b[2]);
        c[1] = std::min(b[1], b[3]);
        c[2] = std::max(b[0], b[2]);
        c[3] = std::max(b[1], b[3]);
      }
    };
    auto iou = [&](const float* a, const float* b) {
      float ca[4], cb[4];
      corners(a, ca);
      corners(b, cb);
      const float ih = std::max(0.0f, std::min(ca[2], cb[2]) - std::max(ca[0], cb[0]));
      const float iw = std::max(0.0f, std::min(ca[3], cb[3]) - std::max(ca[1], cb[1]));
      const float inter = ih * iw;
      const float ua = (ca[2] - ca[0]) * (ca[3] - ca[1]) + (cb[2] - cb[0]) * (cb[3] - cb[1]) - inter;
      return ua > 0 ? inter / ua : 0.0f;
    };
    std::vector<int64_t> cand, kept;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < NC; ++c) {
        const float* s = sc + (b * NC + c) * NB;
        cand.clear();
        for (int64_t i = 0; i < NB; ++i)
          if (!has_score_th || s[i] > score_th) cand.push_back(i);
        std::stable_sort(cand.begin(), cand.end(), [&](int64_t a, int64_t bb) { return s[a] > s[bb]; });
        kept.clear();
        for (int64_t i : cand) {
          if (static_cast<int64_t>(kept.size()) >= max_out) break;
          bool ok = true;
          for (int64_t k : kept)
            if (iou(bx + (b * NB + i) * 4, bx + (b * NB + k) * 4) > iou_th) {
              ok = false;
              break;
            }
          if (!ok) continue;
          kept.push_back(i);
          rows.insert(rows.end(), {b, c, i});
        }
      }
    return Status::ok();
  }
  Status infer(const TensorList& in, std::vector<TensorDesc>& out) const override {
    RETURN_IF_ERROR(check_inputs(in, 2, 5));
    std::vector<int64_t> rows;
    RETURN_IF_ERROR(select(in, rows));
    out.resize(num_outputs_);
    out[0] = {DataType::kInt64, {static_cast<int64_t>(rows.size() / 3), 3}};
    return Status::ok();
  }
  Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext&) const override {
    std::vector<int64_t> rows;
    RETURN_IF_ERROR(select(in, rows));
    std::copy(rows.begin(), rows.end(), out[0]->data<int64_t>());
    return Status::ok();
  }

 private:
  bool center_point_box_ = false;
};

}  // namespace
}  // namespace ref

void register_ref_tensor_movement(KernelRegistry& r) {
  using namespace ref;
  r.add("", "Transpose", "ref", 0, make_factory<TransposeKernel>());
  r.add("", "Concat", "ref", 0, make_factory<ConcatKernel>());
  r.add("", "Split", "ref", 0, make_factory<SplitKernel>());
  r.add("", "Slice", "ref", 0, make_factory<SliceKernel>());
  r.add("", "Gather", "ref", 0, make_factory<GatherKernel>());
  r.add("", "GatherElements", "ref", 0, make_factory<GatherElementsKernel>());
  r.add("", "GatherND", "ref", 0, make_factory<GatherNDKernel>());
  r.add("", "Expand", "ref", 0, make_factory<ExpandKernel>());
  r.add("", "Tile", "ref", 0, make_factory<TileKernel>());
  r.add("", "Pad", "ref", 0, make_factory<PadKernel>());
  r.add("", "DepthToSpace", "ref", 0, make_factory<DepthToSpaceKernel>());
  r.add("", "SpaceToDepth", "ref", 0, make_factory<SpaceToDepthKernel>());
  r.add("", "Trilu", "ref", 0, make_factory<TriluKernel>());
  r.add("", "EyeLike", "ref", 0, make_factory<EyeLikeKernel>());
  r.add("", "NonZero", "ref", 0, make_factory<NonZeroKernel>());
  r.add("", "Scatter", "ref", 0, make_factory<ScatterElementsKernel>());
  r.add("", "ScatterElements", "ref", 0, make_factory<ScatterElementsKernel>());
  r.add("", "ScatterND", "ref", 0, make_factory<ScatterNDKernel>());
  r.add("", "OneHot", "ref", 0, make_factory<OneHotKernel>());
  r.add("", "Compress", "ref", 0, make_factory<CompressKernel>());
  r.add("", "ReverseSequence", "ref", 0, make_factory<ReverseSequenceKernel>());
  r.add("", "Unique", "ref", 0, make_factory<UniqueKernel>());
  r.add("", "NonMaxSuppression", "ref", 0, make_factory<NonMaxSuppressionKernel>());
}

}  // namespace medq
