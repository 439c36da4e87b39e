// QDQ fusion: rewrites the standard QDQ patterns of quantized models (ONNX
// Runtime's QDQ format, medq's quantizer) into medq int8 ops (ops/fused.h):
//
//   DQ(x_q) -> Conv(W = DQ(int8 const, per tensor or per channel axis 0),
//                   B = DQ(int32 const) | float const)
//           -> [Relu | Clip(const)] -> [QuantizeLinear]
//     => QConv(x_q, W_q, B_f32) producing the quantized tensor (uint8/int8),
//        or float32 when no QuantizeLinear follows.
//   DQ(a_q) -> MatMul(B = DQ(int8 const 2-D, per tensor or per column axis 1)) -> [act] -> [Q]
//   DQ(a_q) -> Gemm(transA=0, alpha=1, B = DQ(int8 const), C = DQ(int32)|float [N], beta=1) -> [act] -> [Q]
//     => QMatMul(a_q, B_q [K, N], bias_f32)
//   DQ(a_q) + DQ(b_q) (same shape) -> [act] -> Q   => QAdd(a_q, b_q)     (int8 residual add)
//   DQ(x_q) -> MaxPool | Reshape | Flatten | Transpose | Squeeze | Unsqueeze -> Q (same
//     scale, zero point and dtype)  => the op on x_q (ONNX Runtime's DropQDQNodes)
//
// Consecutive convolutions thus stay int8 end to end (QConv -> QConv); the
// DequantizeLinear nodes that lose all their consumers are removed by dce.
// Requirements: activation quantization per tensor with constant scale/zero
// point, weight zero points 0, and every intermediate float value (conv
// output, activation output) used once and not a graph output. The fused
// result equals the QDQ graph's float semantics up to float rounding (at most
// one quantization step on outputs).
//
// Runs before constant folding (which would otherwise fold DQ(weights) into
// float initializers).
#include <cmath>
#include <string>
#include <vector>

#include "ops/fused.h"
#include "passes/pass.h"

namespace medq {
namespace {

bool is_op(const Node* n, const char* op) { return n && !n->dead && n->domain.empty() && n->op_type == op; }

Node* producer(Graph& g, uint32_t v) {
  if (v == kNoValue) return nullptr;
  const uint32_t p = g.value(v).producer;
  return p == kNoNode ? nullptr : &g.nodes[p];
}

// Constant behind value v: an initializer or the output of a Constant node.
const Tensor* const_of(Graph& g, uint32_t v) {
  if (v == kNoValue) return nullptr;
  const Value& val = g.value(v);
  if (val.is_constant()) return &val.initializer;
  Node* p = producer(g, v);
  if (is_op(p, "Constant")) {
    const Attribute* a = p->attr("value");
    if (a && a->type == Attribute::Type::kTensor && a->t.defined()) return &a->t;
  }
  return nullptr;
}

// A DequantizeLinear's parameters.
struct Dq {
  Node* node = nullptr;
  uint32_t x = kNoValue;      // quantized input
  const Tensor* scale = nullptr;
  const Tensor* zp = nullptr;  // nullptr: 0
  int64_t axis = 1;
};

bool match_dq(Graph& g, uint32_t v, Dq* d) {
  Node* n = producer(g, v);
  if (!is_op(n, "DequantizeLinear") || n->inputs.size() < 2 || !n->has_input(0)) return false;
  d->node = n;
  d->x = n->inputs[0];
  d->scale = const_of(g, n->inputs[1]);
  d->zp = n->has_input(2) ? const_of(g, n->inputs[2]) : nullptr;
  if (!d->scale || d->scale->dtype() != DataType::kFloat32 || (n->has_input(2) && !d->zp)) return false;
  d->axis = n->attr_i("axis", 1);
  return true;
}

bool all_zero(const Tensor* t) {
  if (!t) return true;
  for (int64_t i = 0; i < t->numel(); ++i)
    if (t->get_i64(i) != 0) return false;
  return true;
}

bool positive_finite(const Tensor& s) {
  for (int64_t i = 0; i < s.numel(); ++i) {
    const double v = s.get_f64(i);
    if (!(v > 0) || !std::isfinite(v)) return false;
  }
  return true;
}

// An activation DQ: per tensor, uint8/int8 non-constant input.
bool activation_dq(Graph& g, const Dq& d, DataType* dt, float* scale, int32_t* zp) {
  if (d.scale->numel() != 1 || (d.zp && d.zp->numel() != 1) || !positive_finite(*d.scale)) return false;
  if (const_of(g, d.x)) return false;
  DataType t = d.zp ? d.zp->dtype() : g.value(d.x).dtype;
  if (t == DataType::kUndefined) t = DataType::kUInt8;
  if (t != DataType::kUInt8 && t != DataType::kInt8) return false;
  const DataType vt = g.value(d.x).dtype;
  if (vt != DataType::kUndefined && vt != t) return false;
  *dt = t;
  *scale = static_cast<float>(d.scale->get_f64(0));
  *zp = d.zp ? static_cast<int32_t>(d.zp->get_i64(0)) : 0;
  return true;
}

// A weight DQ: int8 constant, zero point 0, scales per tensor or per `axis` with `channels` entries.
bool weight_dq(Graph& g, const Dq& d, int weight_axis, int64_t channels, const Tensor** w, std::vector<float>* scales) {
  const Tensor* t = const_of(g, d.x);
  if (!t || t->dtype() != DataType::kInt8 || !all_zero(d.zp) || !positive_finite(*d.scale)) return false;
  if (d.scale->numel() != 1) {
    const int64_t ax = d.axis < 0 ? d.axis + t->rank() : d.axis;
    if (ax != weight_axis || d.scale->numel() != channels) return false;
  }
  *w = t;
  scales->clear();
  for (int64_t i = 0; i < d.scale->numel(); ++i) scales->push_back(static_cast<float>(d.scale->get_f64(i)));
  return true;
}

// Bias as float32 [n]: DQ(int32 const) computed as DequantizeLinear does, or a float constant.
bool bias_of(Graph& g, uint32_t v, int64_t n, std::vector<float>* out) {
  Dq d;
  if (match_dq(g, v, &d)) {
    const Tensor* b = const_of(g, d.x);
    if (!b || (b->dtype() != DataType::kInt32 && b->dtype() != DataType::kInt8 && b->dtype() != DataType::kUInt8) ||
        b->numel() != n)
      return false;
    if (d.scale->numel() != 1 && d.scale->numel() != n) return false;
    if (d.zp && d.zp->numel() != 1 && d.zp->numel() != n) return false;
    out->resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t z = d.zp ? d.zp->get_i64(d.zp->numel() == 1 ? 0 : i) : 0;
      const float s = static_cast<float>(d.scale->get_f64(d.scale->numel() == 1 ? 0 : i));
      (*out)[i] = static_cast<float>(static_cast<int32_t>(b->get_i64(i) - z)) * s;
    }
    return true;
  }
  const Tensor* b = const_of(g, v);
  if (!b || b->dtype() != DataType::kFloat32 || (b->numel() != n && b->numel() != 1)) return false;
  out->resize(n);
  for (int64_t i = 0; i < n; ++i) (*out)[i] = b->data<float>()[b->numel() == 1 ? 0 : i];
  return true;
}

// Optional Relu / Clip(const) then optional per-tensor QuantizeLinear after value y.
struct Tail {
  std::string act;
  std::vector<float> act_params;
  std::vector<Node*> absorbed;
  uint32_t out = kNoValue;                // the value the fused node produces
  DataType out_dtype = DataType::kFloat32;
  float y_scale = 1.f;
  int32_t y_zp = 0;
};

bool match_tail(Graph& g, uint32_t y, Tail* t) {
  t->out = y;
  Node* c = single_consumer(g, y);
  if (is_op(c, "Relu") && c->inputs[0] == y) {
    t->act = "Relu";
  } else if (is_op(c, "Clip") && c->inputs[0] == y) {
    float lo = -INFINITY, hi = INFINITY;
    if (c->has_attr("min")) lo = c->attr_f("min", lo);
    if (c->has_attr("max")) hi = c->attr_f("max", hi);
    for (size_t i = 1; i < c->inputs.size(); ++i) {
      if (!c->has_input(i)) continue;
      const Tensor* b = const_of(g, c->inputs[i]);
      if (!b || b->numel() != 1) return false;
      (i == 1 ? lo : hi) = static_cast<float>(b->get_f64(0));
    }
    t->act = "Clip";
    t->act_params = {lo, hi};
  }
  if (!t->act.empty()) {
    t->absorbed.push_back(c);
    t->out = c->outputs[0];
    c = single_consumer(g, t->out);
  }
  if (is_op(c, "QuantizeLinear") && c->inputs.size() >= 2 && c->inputs[0] == t->out) {
    const Tensor* s = const_of(g, c->inputs[1]);
    const Tensor* z = c->has_input(2) ? const_of(g, c->inputs[2]) : nullptr;
    const bool ok = s && s->dtype() == DataType::kFloat32 && s->numel() == 1 && positive_finite(*s) &&
                    (!c->has_input(2) || (z && z->numel() == 1 &&
                                          (z->dtype() == DataType::kUInt8 || z->dtype() == DataType::kInt8)));
    if (ok) {
      t->absorbed.push_back(c);
      t->out = c->outputs[0];
      t->out_dtype = z ? z->dtype() : DataType::kUInt8;
      t->y_scale = static_cast<float>(s->get_f64(0));
      t->y_zp = z ? static_cast<int32_t>(z->get_i64(0)) : 0;
    }
  }
  return true;
}

class FuseQdqPass : public Pass {
 public:
  const char* name() const override { return "qdq"; }

  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    const size_t n0 = g.nodes.size();
    for (size_t i = 0; i < n0; ++i) {
      Node& n = g.nodes[i];
      if (n.dead || !n.domain.empty()) continue;
      bool done = false;
      if (n.op_type == "Conv") done = try_conv(g, i, ctx);
      else if (n.op_type == "MatMul" || n.op_type == "Gemm") done = try_matmul(g, i, ctx);
      else if (n.op_type == "Add") done = try_add(g, i, ctx);
      else if (is_passthrough(n)) done = try_passthrough(g, i, ctx);
      changed |= done;
    }
    return Status::ok();
  }

 private:
  // Quantization attributes of the fused node.
  static void set_q_attrs(Node& q, float xs, int32_t xzp, const std::vector<float>& ws, const Tail& t) {
    q.set_attr(Attribute::make_float("x_scale", xs));
    q.set_attr(Attribute::make_int("x_zero_point", xzp));
    q.set_attr(Attribute::make_floats("w_scales", ws));
    q.set_attr(Attribute::make_float("y_scale", t.y_scale));
    q.set_attr(Attribute::make_int("y_zero_point", t.y_zp));
    q.set_attr(Attribute::make_int("output_dtype", static_cast<int64_t>(t.out_dtype)));
    if (!t.act.empty()) {
      q.set_attr(Attribute::make_string("activation", t.act));
      q.set_attr(Attribute::make_floats("activation_params", t.act_params));
    }
  }

  // Adds the fused node (replacing `orig`, whose output is replaced by t.out).
  static void commit(Graph& g, size_t orig, Node q, const Tail& t, PassContext& ctx, const std::string& what) {
    std::string absorbed;
    for (Node* a : t.absorbed) {
      absorbed += ", " + a->label();
      a->dead = true;
    }
    q.outputs = {t.out};
    g.nodes[orig].dead = true;
    const std::string label = g.nodes[orig].label();
    g.add_node(std::move(q));
    ctx.log.push_back("fused " + label + absorbed + " into " + what);
  }

  uint32_t constant_value(Graph& g, const std::string& base, Tensor t) {
    return g.add_constant(g.unique_name(base), std::move(t));
  }

  bool try_conv(Graph& g, size_t ci, PassContext& ctx) {
    Node& conv = g.nodes[ci];
    if (conv.inputs.size() < 2 || conv.outputs.empty() || conv.outputs[0] == kNoValue) return false;
    Dq dx, dw;
    if (!match_dq(g, conv.inputs[0], &dx) || !match_dq(g, conv.inputs[1], &dw)) return false;
    DataType xdt;
    float xs;
    int32_t xzp;
    if (!activation_dq(g, dx, &xdt, &xs, &xzp)) return false;
    const Tensor* wq = const_of(g, dw.x);
    if (!wq || wq->rank() < 3) return false;
    const int64_t O = wq->dim(0);
    const Tensor* w;
    std::vector<float> ws;
    if (!weight_dq(g, dw, 0, O, &w, &ws)) return false;
    std::vector<float> bias;
    if (conv.has_input(2) && !bias_of(g, conv.inputs[2], O, &bias)) return false;
    Tail t;
    if (!match_tail(g, conv.outputs[0], &t)) return false;

    Node q;
    q.name = conv.name;
    q.op_type = "QConv";
    q.domain = kMedqDomain;
    for (const char* a : {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
      if (const Attribute* at = conv.attr(a)) q.set_attr(*at);
    set_q_attrs(q, xs, xzp, ws, t);
    q.inputs = {dx.x, g.value(dw.x).is_constant() ? dw.x : constant_value(g, conv.name + "_wq", *w)};
    if (!bias.empty()) q.inputs.push_back(constant_value(g, conv.name + "_bias", Tensor::from_vector(bias, {O})));
    commit(g, ci, std::move(q), t, ctx, "QConv");
    return true;
  }

  bool try_matmul(Graph& g, size_t mi, PassContext& ctx) {
    Node& mm = g.nodes[mi];
    const bool gemm = mm.op_type == "Gemm";
    if (mm.inputs.size() < 2 || mm.outputs.empty() || mm.outputs[0] == kNoValue) return false;
    if (gemm && (mm.attr_i("transA", 0) != 0 || mm.attr_f("alpha", 1.f) != 1.f ||
                 (mm.has_input(2) && mm.attr_f("beta", 1.f) != 1.f)))
      return false;
    Dq da, db;
    if (!match_dq(g, mm.inputs[0], &da) || !match_dq(g, mm.inputs[1], &db)) return false;
    DataType adt;
    float as;
    int32_t azp;
    if (!activation_dq(g, da, &adt, &as, &azp)) return false;
    const Tensor* bq = const_of(g, db.x);
    if (!bq || bq->rank() != 2) return false;
    const bool tb = gemm && mm.attr_i("transB", 0) != 0;
    const int64_t K = tb ? bq->dim(1) : bq->dim(0), N = tb ? bq->dim(0) : bq->dim(1);
    const Tensor* b;
    std::vector<float> bs;
    if (!weight_dq(g, db, tb ? 0 : 1, N, &b, &bs)) return false;
    // A must be 2-D for Gemm; MatMul's A is [..., K] (checked by the kernel at run time).
    const Value& av = g.value(da.x);
    if (gemm && av.has_shape && av.shape.size() != 2) return false;
    if (!gemm && av.has_shape && (av.shape.empty() || (av.shape.back() >= 0 && av.shape.back() != K))) return false;
    std::vector<float> bias;
    if (gemm && mm.has_input(2)) {
      const Value& cv = g.value(mm.inputs[2]);
      if (cv.has_shape && cv.shape.size() > 1) return false;
      if (!bias_of(g, mm.inputs[2], N, &bias)) return false;
    }
    Tail t;
    if (!match_tail(g, mm.outputs[0], &t)) return false;

    Node q;
    q.name = mm.name;
    q.op_type = "QMatMul";
    q.domain = kMedqDomain;
    set_q_attrs(q, as, azp, bs, t);
    uint32_t bid;
    if (tb) {
      Tensor bt(DataType::kInt8, {K, N});
      const int8_t* src = b->data<int8_t>();
      int8_t* dst = bt.data<int8_t>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < N; ++j) dst[k * N + j] = src[j * K + k];
      bid = constant_value(g, mm.name + "_wq", bt);
    } else {
      bid = g.value(db.x).is_constant() ? db.x : constant_value(g, mm.name + "_wq", *b);
    }
    q.inputs = {da.x, bid};
    if (!bias.empty()) q.inputs.push_back(constant_value(g, mm.name + "_bias", Tensor::from_vector(bias, {N})));
    commit(g, mi, std::move(q), t, ctx, "QMatMul");
    return true;
  }
  // Ops that commute with a per-tensor (monotonic) dequantization and run on 8-bit data.
  static bool is_passthrough(const Node& n) {
    static const char* const kOps[] = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"};
    for (const char* op : kOps)
      if (n.op_type == op) return true;
    return false;
  }

  // DQ(x_q) -> op -> Q with the same scale / zero point / dtype  =>  op(x_q).
  bool try_passthrough(Graph& g, size_t ni, PassContext& ctx) {
    Node& n = g.nodes[ni];
    if (n.inputs.empty() || n.outputs.empty() || n.outputs[0] == kNoValue) return false;
    for (size_t o = 1; o < n.outputs.size(); ++o)
      if (n.outputs[o] != kNoValue && use_count(g, n.outputs[o]) > 0) return false;  // MaxPool Indices
    if (n.op_type == "MaxPool" && n.attr_i("storage_order", 0) != 0) return false;
    Dq dx;
    if (!match_dq(g, n.inputs[0], &dx)) return false;
    DataType xdt;
    float xs;
    int32_t xzp;
    if (!activation_dq(g, dx, &xdt, &xs, &xzp) || g.value(dx.x).dtype != xdt) return false;
    Tail t;
    Node* c = single_consumer(g, n.outputs[0]);
    if (!is_op(c, "QuantizeLinear") || c->inputs[0] != n.outputs[0] || !match_tail(g, n.outputs[0], &t)) return false;
    if (!t.act.empty() || t.out_dtype != xdt || t.y_scale != xs || t.y_zp != xzp) return false;
    n.inputs[0] = dx.x;
    n.outputs[0] = t.out;
    n.outputs.resize(1);
    c->dead = true;
    ctx.log.push_back("ran " + n.label() + " on 8-bit data (dropped " + dx.node->label() + " / " + c->label() + ")");
    return true;
  }

  // DQ(a_q) + DQ(b_q) -> [Relu | Clip] -> Q  =>  QAdd(a_q, b_q) (same static shapes only).
  bool try_add(Graph& g, size_t ai, PassContext& ctx) {
    Node& add = g.nodes[ai];
    if (add.inputs.size() != 2 || add.outputs.empty() || add.outputs[0] == kNoValue) return false;
    Dq da, db;
    if (!match_dq(g, add.inputs[0], &da) || !match_dq(g, add.inputs[1], &db)) return false;
    DataType adt, bdt;
    float as, bs;
    int32_t az, bz;
    if (!activation_dq(g, da, &adt, &as, &az) || !activation_dq(g, db, &bdt, &bs, &bz)) return false;
    const Value& va = g.value(add.inputs[0]);
    const Value& vb = g.value(add.inputs[1]);
    if (!va.has_shape || !vb.has_shape || va.shape != vb.shape) return false;
    for (size_t d = 1; d < va.shape.size(); ++d)
      if (va.shape[d] < 0) return false;  // only the batch dim may be symbolic
    if (!va.shape.empty() && va.shape[0] < 0 &&
        (va.dim_params.empty() || vb.dim_params.empty() || va.dim_params[0].empty() ||
         va.dim_params[0] != vb.dim_params[0]))
      return false;
    Tail t;
    if (!match_tail(g, add.outputs[0], &t) || t.out_dtype == DataType::kFloat32) return false;
    Node q;
    q.name = add.name;
    q.op_type = "QAdd";
    q.domain = kMedqDomain;
    q.set_attr(Attribute::make_float("a_scale", as));
    q.set_attr(Attribute::make_int("a_zero_point", az));
    q.set_attr(Attribute::make_float("b_scale", bs));
    q.set_attr(Attribute::make_int("b_zero_point", bz));
    q.set_attr(Attribute::make_float("y_scale", t.y_scale));
    q.set_attr(Attribute::make_int("y_zero_point", t.y_zp));
    q.set_attr(Attribute::make_int("output_dtype", static_cast<int64_t>(t.out_dtype)));
    if (!t.act.empty()) {
      q.set_attr(Attribute::make_string("activation", t.act));
      q.set_attr(Attribute::make_floats("activation_params", t.act_params));
    }
    q.inputs = {da.x, db.x};
    commit(g, ai, std::move(q), t, ctx, "QAdd");
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_qdq_pass() { return std::make_unique<FuseQdqPass>(); }

}  // namespace medq
