// Quantized ops: ONNX QuantizeLinear / DequantizeLinear semantics, medq QConv /
// QMatMul (dnnl int8 vs the reference oracle), the QDQ fusion pass (fused vs
// unfused QDQ graphs), a QDQ ResNet-18 end to end and an fp32 vs int8 conv benchmark.
#include <gtest/gtest.h>

#include "core/cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../passes/onnx_test_builder.h"
#include "kernels/dnnl/dnnl_layout.h"
#include "onnx/model_io.h"
#include "ops/fused.h"
#include "quant/quantize.h"
#include "ref_op_runner.h"
#include "runtime/session.h"

namespace medq {
namespace {

using testing_onnx::attr_f;
using testing_onnx::attr_i;
using testing_onnx::attr_ints;
using testing_onnx::count_op;
using testing_onnx::max_abs_diff;
using testing_onnx::OnnxBuilder;
using testing_ref::cst;
using testing_ref::in;
using testing_ref::none;
using testing_ref::OpSpec;
using testing_ref::run_op;

template <class T>
std::vector<int> ints_of(const Tensor& t) {
  std::vector<int> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<int>(t.data<T>()[i]));
  return v;
}

// ---------------------------------------------------------------- Q / DQ semantics

TEST(Quant, QuantizeLinearRoundsHalfToEvenAndSaturates) {
  Tensor x = Tensor::from_vector<float>({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 300.f, -300.f, 3.f, 5.f}, {10});
  OpSpec q{"QuantizeLinear"};
  // uint8, scale 1, zero point 0 (default dtype when the zero point is omitted).
  auto r = run_op(q, {in(x), cst(Tensor::scalar<float>(1.f))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r.value()[0].dtype(), DataType::kUInt8);
  EXPECT_EQ(ints_of<uint8_t>(r.value()[0]), (std::vector<int>{0, 2, 2, 0, 0, 0, 255, 0, 3, 5}));
  // int8, scale 2 (x / 2: 0.25 0.75 1.25 ... 1.5 2.5), zero point 1.
  r = run_op(q, {in(x), cst(Tensor::scalar<float>(2.f)), cst(Tensor::scalar<int8_t>(1))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r.value()[0].dtype(), DataType::kInt8);
  EXPECT_EQ(ints_of<int8_t>(r.value()[0]), (std::vector<int>{1, 2, 2, 1, 0, 0, 127, -128, 3, 3}));
}

TEST(Quant, QuantizeDequantizePerAxis) {
  // x [2, 3, 2], axis 1: scales {1, 2, 4}, zero points {0, 10, 20}.
  Tensor x = testing_ref::iota_f32({2, 3, 2});
  Tensor s = Tensor::from_vector<float>({1.f, 2.f, 4.f}, {3});
  Tensor z = Tensor::from_vector<uint8_t>({0, 10, 20}, {3});
  OpSpec q{"QuantizeLinear", "", {Attribute::make_int("axis", 1)}};
  auto r = run_op(q, {in(x), cst(s), cst(z)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  // x: 0 1 | 2 3 | 4 5 | 6 7 | 8 9 | 10 11
  EXPECT_EQ(ints_of<uint8_t>(r.value()[0]), (std::vector<int>{0, 1, 11, 12, 21, 21, 6, 7, 14, 14, 22, 23}));
  OpSpec dq{"DequantizeLinear", "", {Attribute::make_int("axis", 1)}};
  auto d = run_op(dq, {in(r.value()[0]), cst(s), cst(z)});
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(d.value()[0].to_f32_vector(), (std::vector<float>{0, 1, 2, 4, 4, 4, 6, 7, 8, 8, 8, 12}));
  // Negative axis, int32 input (bias dequantization).
  OpSpec dq32{"DequantizeLinear", "", {Attribute::make_int("axis", -1)}};
  auto b = run_op(dq32, {in(Tensor::from_vector<int32_t>({-100000, 7, 3}, {3})), cst(s)});
  ASSERT_TRUE(b.is_ok()) << b.status().message();
  EXPECT_EQ(b.value()[0].to_f32_vector(), (std::vector<float>{-100000.f, 14.f, 12.f}));
}

TEST(Quant, QdqErrors) {
  Tensor x = testing_ref::iota_f32({2, 3});
  OpSpec q{"QuantizeLinear", "", {Attribute::make_int("axis", 1)}};
  auto r = run_op(q, {in(x), cst(Tensor::from_vector<float>({1.f, 2.f}, {2}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("QuantizeLinear 'node0'"), std::string::npos) << r.status().message();
  q.opset = 10;  // per-axis needs opset 13
  r = run_op(q, {in(x), cst(Tensor::from_vector<float>({1.f, 2.f, 3.f}, {3}))});
  EXPECT_FALSE(r.is_ok());
  OpSpec dq{"DequantizeLinear"};
  r = run_op(dq, {in(x), cst(Tensor::scalar<float>(1.f))});  // float input
  EXPECT_FALSE(r.is_ok());
}

TEST(Quant, DynamicQuantizeLinear) {
  Tensor x = Tensor::from_vector<float>({0.f, 2.f, -3.f, -2.5f, 1.34f, 0.5f}, {6});
  auto r = run_op(OpSpec{"DynamicQuantizeLinear", "", {}, 17, 3}, {in(x)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const float scale = r.value()[1].data<float>()[0];
  EXPECT_FLOAT_EQ(scale, 5.f / 255.f);
  EXPECT_EQ(r.value()[2].data<uint8_t>()[0], 153);
  EXPECT_EQ(ints_of<uint8_t>(r.value()[0]), (std::vector<int>{153, 255, 0, 26, 221, 179}));
}

// ---------------------------------------------------------------- QConv / QMatMul: dnnl vs ref

Tensor random_q(DataType dt, Shape s, std::mt19937& rng) {
  Tensor t(dt, std::move(s));
  std::uniform_int_distribution<int> d(dt == DataType::kUInt8 ? 0 : -128, dt == DataType::kUInt8 ? 255 : 127);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dt == DataType::kUInt8) t.data<uint8_t>()[i] = static_cast<uint8_t>(d(rng));
    else t.data<int8_t>()[i] = static_cast<int8_t>(d(rng));
  }
  return t;
}

struct QConvCase {
  int64_t n, c, o, h, w, k, stride, pad, group;
  DataType xdt, ydt;
  bool bias, per_channel;
  std::string act;
};

// Max |dnnl - ref| (in output units: integers, or floats relative to y scale).
void check_qconv(const QConvCase& cc, std::mt19937& rng) {
  Tensor x = random_q(cc.xdt, {cc.n, cc.c, cc.h, cc.w}, rng);
  Tensor w = random_q(DataType::kInt8, {cc.o, cc.c / cc.group, cc.k, cc.k}, rng);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::vector<float> ws(cc.per_channel ? cc.o : 1);
  for (auto& s : ws) s = 0.002f * u(rng);
  const float xs = 0.02f;
  const int32_t xzp = cc.xdt == DataType::kUInt8 ? 120 : 3;
  // y scale: about 4 standard deviations of the result over the 8-bit range.
  const float sd = xs * 70.f * 0.002f * 73.f * std::sqrt(static_cast<float>(cc.c / cc.group * cc.k * cc.k));
  const float ys = 8.f * sd / 255.f;
  const int32_t yzp = cc.ydt == DataType::kUInt8 ? (cc.act.empty() ? 128 : 0) : (cc.act.empty() ? 0 : -128);
  std::vector<Attribute> attrs = {Attribute::make_ints("kernel_shape", {cc.k, cc.k}),
                                  Attribute::make_ints("strides", {cc.stride, cc.stride}),
                                  Attribute::make_ints("pads", {cc.pad, cc.pad, cc.pad, cc.pad}),
                                  Attribute::make_int("group", cc.group),
                                  Attribute::make_float("x_scale", xs),
                                  Attribute::make_int("x_zero_point", xzp),
                                  Attribute::make_floats("w_scales", ws),
                                  Attribute::make_float("y_scale", ys),
                                  Attribute::make_int("y_zero_point", yzp),
                                  Attribute::make_int("output_dtype", static_cast<int64_t>(cc.ydt))};
  if (!cc.act.empty()) {
    attrs.push_back(Attribute::make_string("activation", cc.act));
    if (cc.act == "Clip") attrs.push_back(Attribute::make_floats("activation_params", {-2.f * sd, 2.f * sd}));
  }
  std::vector<testing_ref::OpInput> ins = {in(x), cst(w)};
  if (cc.bias) {
    Tensor b(DataType::kFloat32, {cc.o});
    for (int64_t i = 0; i < cc.o; ++i) b.data<float>()[i] = (u(rng) - 1.f) * sd;
    ins.push_back(cst(b));
  }
  OpSpec spec{"QConv", kMedqDomain, attrs};
  auto ref = run_op(spec, ins);
  ASSERT_TRUE(ref.is_ok()) << ref.status().message();
  spec.backends = {"dnnl"};
  auto dn = run_op(spec, ins);
  ASSERT_TRUE(dn.is_ok()) << dn.status().message();
  const Tensor& a = ref.value()[0];
  const Tensor& b = dn.value()[0];
  ASSERT_EQ(a.shape(), b.shape());
  ASSERT_EQ(a.dtype(), cc.ydt);
  ASSERT_EQ(b.dtype(), cc.ydt);
  const std::string what = "case c=" + std::to_string(cc.c) + " o=" + std::to_string(cc.o) + " k=" +
                           std::to_string(cc.k) + " s=" + std::to_string(cc.stride) + " p=" + std::to_string(cc.pad) +
                           " g=" + std::to_string(cc.group) + " x=" + dtype_name(cc.xdt) + " y=" +
                           dtype_name(cc.ydt) + " act=" + cc.act;
  double maxd = 0;
  int64_t ndiff = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double d;
    if (cc.ydt == DataType::kFloat32) d = std::fabs(a.data<float>()[i] - b.data<float>()[i]) / ys;
    else d = std::fabs(a.get_f64(i) - b.get_f64(i));
    maxd = std::max(maxd, d);
    ndiff += d > 1e-3;
  }
  EXPECT_LE(maxd, cc.ydt == DataType::kFloat32 ? 1e-3 : 1.0) << what;
  EXPECT_LE(ndiff, a.numel() / 100 + 1) << what;  // one-step differences only at float ties
}

TEST(QConv, DnnlMatchesReference) {
  if (!cpu_has_vnni()) GTEST_SKIP() << "CPU has no VNNI: the dnnl int8 kernels decline (QConv.DnnlDeclinesWithoutVnni)";
  std::mt19937 rng(7);
  const DataType u8 = DataType::kUInt8, s8 = DataType::kInt8, f32 = DataType::kFloat32;
  const std::vector<QConvCase> cases = {
      {1, 16, 32, 9, 9, 3, 1, 1, 1, u8, u8, true, true, ""},
      {2, 16, 16, 8, 7, 3, 2, 1, 1, u8, u8, true, true, "Relu"},
      {1, 32, 32, 8, 8, 3, 1, 1, 32, u8, u8, true, true, "Relu"},   // depthwise
      {1, 24, 36, 7, 7, 3, 1, 0, 3, s8, s8, false, true, ""},       // groups, s8 -> s8
      {1, 8, 16, 10, 10, 1, 1, 0, 1, s8, u8, true, false, "Clip"},  // 1x1, per-tensor scale
      {1, 3, 16, 15, 15, 7, 2, 3, 1, u8, f32, true, true, "Relu"},  // stem-like, float output
      {1, 16, 8, 6, 6, 5, 1, 2, 1, s8, f32, false, true, ""},
      {2, 64, 64, 14, 14, 3, 1, 1, 1, u8, s8, true, true, "Clip"},
  };
  for (const auto& c : cases) check_qconv(c, rng);
}

// Without VNNI oneDNN's u8s8 convolution saturates int16 pair sums: the dnnl QConv/QMatMul
// kernels must decline (naming the reason) so that the exact reference kernel runs the node.
TEST(QConv, DnnlDeclinesWithoutVnni) {
  if (cpu_has_vnni()) GTEST_SKIP() << "CPU has VNNI: the dnnl int8 kernels run (QConv.DnnlMatchesReference)";
  std::mt19937 rng(9);
  Tensor x = random_q(DataType::kUInt8, {1, 16, 6, 6}, rng);
  Tensor w = random_q(DataType::kInt8, {16, 16, 3, 3}, rng);
  std::vector<Attribute> attrs = {Attribute::make_ints("kernel_shape", {3, 3}),
                                  Attribute::make_float("x_scale", 0.05f),
                                  Attribute::make_int("x_zero_point", 0),
                                  Attribute::make_floats("w_scales", std::vector<float>(16, 0.01f)),
                                  Attribute::make_float("y_scale", 0.5f),
                                  Attribute::make_int("y_zero_point", 0),
                                  Attribute::make_int("output_dtype", static_cast<int64_t>(DataType::kUInt8))};
  OpSpec spec{"QConv", kMedqDomain, attrs};
  auto ref = run_op(spec, {in(x), cst(w)});
  ASSERT_TRUE(ref.is_ok()) << ref.status().message();
  EXPECT_EQ(ref.value()[0].shape(), (Shape{1, 16, 4, 4}));
  spec.backends = {"dnnl"};
  auto dn = run_op(spec, {in(x), cst(w)});
  ASSERT_FALSE(dn.is_ok());
  EXPECT_NE(dn.status().message().find("VNNI"), std::string::npos) << dn.status().message();
}

TEST(QMatMul, DnnlMatchesReference) {
  if (!cpu_has_vnni()) GTEST_SKIP() << "CPU has no VNNI: the dnnl int8 kernels decline (QConv.DnnlDeclinesWithoutVnni)";
  std::mt19937 rng(3);
  for (DataType adt : {DataType::kUInt8, DataType::kInt8})
    for (DataType ydt : {DataType::kUInt8, DataType::kFloat32}) {
      Tensor a = random_q(adt, {2, 5, 48}, rng);
      Tensor b = random_q(DataType::kInt8, {48, 24}, rng);
      std::vector<float> ws(24);
      for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.001f * (1 + i % 4);
      Tensor bias = testing_ref::random_tensor({24}, rng, -0.5f, 0.5f);
      std::vector<Attribute> attrs = {Attribute::make_float("x_scale", 0.05f),
                                      Attribute::make_int("x_zero_point", adt == DataType::kUInt8 ? 100 : -2),
                                      Attribute::make_floats("w_scales", ws),
                                      Attribute::make_float("y_scale", 0.08f),
                                      Attribute::make_int("y_zero_point", 10),
                                      Attribute::make_int("output_dtype", static_cast<int64_t>(ydt)),
                                      Attribute::make_string("activation", "Relu")};
      OpSpec spec{"QMatMul", kMedqDomain, attrs};
      auto r = run_op(spec, {in(a), cst(b), cst(bias)});
      ASSERT_TRUE(r.is_ok()) << r.status().message();
      spec.backends = {"dnnl"};
      auto d = run_op(spec, {in(a), cst(b), cst(bias)});
      ASSERT_TRUE(d.is_ok()) << d.status().message();
      ASSERT_EQ(r.value()[0].shape(), (Shape{2, 5, 24}));
      ASSERT_EQ(d.value()[0].shape(), (Shape{2, 5, 24}));
      for (int64_t i = 0; i < r.value()[0].numel(); ++i)
        ASSERT_NEAR(r.value()[0].get_f64(i), d.value()[0].get_f64(i), ydt == DataType::kFloat32 ? 1e-4 : 1.0) << i;
    }
}

TEST(QMaxPool, DnnlUint8MatchesReference) {
  std::mt19937 rng(4);
  struct Case {
    int64_t k, s, p;
    bool ceil;
    DataType dt;
  };
  for (const Case& c : {Case{3, 2, 1, false, DataType::kUInt8}, Case{2, 2, 0, true, DataType::kInt8},
                        Case{3, 1, 0, false, DataType::kUInt8}, Case{3, 2, 0, true, DataType::kUInt8}}) {
    Tensor x = random_q(c.dt, {2, 5, 11, 9}, rng);
    OpSpec spec{"MaxPool", "", {Attribute::make_ints("kernel_shape", {c.k, c.k}),
                               Attribute::make_ints("strides", {c.s, c.s}),
                               Attribute::make_ints("pads", {c.p, c.p, c.p, c.p}),
                               Attribute::make_int("ceil_mode", c.ceil)}};
    auto r = run_op(spec, {in(x)});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    spec.backends = {"dnnl"};
    auto d = run_op(spec, {in(x)});
    ASSERT_TRUE(d.is_ok()) << d.status().message();
    ASSERT_EQ(r.value()[0].shape(), d.value()[0].shape());
    ASSERT_EQ(d.value()[0].dtype(), c.dt);
    for (int64_t i = 0; i < r.value()[0].numel(); ++i)
      ASSERT_EQ(r.value()[0].get_i64(i), d.value()[0].get_i64(i)) << i << " k" << c.k << " s" << c.s << " p" << c.p;
  }
}

TEST(QConv, Errors) {
  std::mt19937 rng(1);
  Tensor x = random_q(DataType::kUInt8, {1, 4, 5, 5}, rng);
  Tensor w = random_q(DataType::kInt8, {8, 4, 3, 3}, rng);
  std::vector<Attribute> attrs = {Attribute::make_float("x_scale", 0.1f), Attribute::make_floats("w_scales", {0.1f, 0.2f}),
                                  Attribute::make_int("output_dtype", 2), Attribute::make_float("y_scale", 0.1f)};
  for (auto be : {"ref", "dnnl"}) {
    OpSpec spec{"QConv", kMedqDomain, attrs};
    spec.backends = {be};
    auto r = run_op(spec, {in(x), cst(w)});  // 2 scales for 8 channels
    ASSERT_FALSE(r.is_ok()) << be;
    EXPECT_NE(r.status().message().find("w_scales"), std::string::npos) << r.status().message();
  }
  attrs[1] = Attribute::make_floats("w_scales", {0.1f});
  attrs.push_back(Attribute::make_int("group", 3));  // 4 channels, group 3
  auto r = run_op(OpSpec{"QConv", kMedqDomain, attrs}, {in(x), cst(w)});
  EXPECT_FALSE(r.is_ok());
}

// ---------------------------------------------------------------- QDQ fusion

// Adds int8 weights [dims] with per-channel scales along `axis` and a DequantizeLinear.
void add_weight(OnnxBuilder& b, const std::string& name, Shape dims, int axis, float base_scale, std::mt19937& rng) {
  Tensor w = random_q(DataType::kInt8, dims, rng);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<int8_t>()[i] = std::max<int8_t>(w.data<int8_t>()[i], -127);
  std::vector<float> s(dims[axis]);
  for (size_t i = 0; i < s.size(); ++i) s[i] = base_scale * (1.f + 0.25f * (i % 4));
  b.init(name + "_q", w).init(name + "_s", Tensor::from_vector(s, {dims[axis]}));
  attr_i(b.node("DequantizeLinear", {name + "_q", name + "_s"}, {name}), "axis", axis);
}

// int32 bias with scale x_scale * w_scale[o] (as quantizers write it).
void add_bias(OnnxBuilder& b, const std::string& name, int64_t n, float xs, float base_scale, std::mt19937& rng) {
  std::vector<int32_t> v(n);
  std::vector<float> s(n);
  std::uniform_int_distribution<int> d(-2000, 2000);
  for (int64_t i = 0; i < n; ++i) {
    v[i] = d(rng);
    s[i] = xs * base_scale * (1.f + 0.25f * (i % 4));
  }
  b.init(name + "_q", Tensor::from_vector(v, {n})).init(name + "_s", Tensor::from_vector(s, {n}));
  attr_i(b.node("DequantizeLinear", {name + "_q", name + "_s"}, {name}), "axis", 0);
}

void add_qdq(OnnxBuilder& b, const std::string& x, const std::string& out, float s, int zp, bool s8) {
  b.init(out + "_ys", Tensor::scalar<float>(s));
  if (s8) b.init(out + "_yz", Tensor::scalar<int8_t>(static_cast<int8_t>(zp)));
  else b.init(out + "_yz", Tensor::scalar<uint8_t>(static_cast<uint8_t>(zp)));
  b.node("QuantizeLinear", {x, out + "_ys", out + "_yz"}, {out + "_q"});
  b.node("DequantizeLinear", {out + "_q", out + "_ys", out + "_yz"}, {out});
}

onnx::NodeProto* conv(OnnxBuilder& b, std::vector<std::string> ins, const std::string& out, int64_t k) {
  auto* n = b.node("Conv", std::move(ins), {out}, out + "_conv");
  attr_ints(n, "kernel_shape", {k, k});
  attr_ints(n, "pads", {k / 2, k / 2, k / 2, k / 2});
  return n;
}

// x -> QDQ -> Conv+Relu -> QDQ(u8) -> Conv -> QDQ(s8) -> Add(x) -> Relu -> QDQ -> y
//                                       \-> Conv (s8 input, float output) -> z
// y -> GlobalAveragePool -> Flatten -> QDQ -> Gemm(transB) -> logits
Model qdq_block_model() {
  std::mt19937 rng(11);
  OnnxBuilder b(13);
  b.input("x", {1, 16, 10, 10});
  add_qdq(b, "x", "xd", 2.f / 255, 128, false);
  add_weight(b, "w1", {16, 16, 3, 3}, 0, 0.002f, rng);
  add_bias(b, "b1", 16, 2.f / 255, 0.002f, rng);
  conv(b, {"xd", "w1", "b1"}, "c1", 3);
  b.node("Relu", {"c1"}, {"r1"});
  add_qdq(b, "r1", "d1", 3.f / 255, 0, false);
  add_weight(b, "w2", {16, 16, 3, 3}, 0, 0.002f, rng);
  conv(b, {"d1", "w2"}, "c2", 3);
  add_qdq(b, "c2", "d2", 4.f / 255, 0, true);
  b.node("Add", {"d2", "xd"}, {"a"});
  b.node("Relu", {"a"}, {"ar"});
  add_qdq(b, "ar", "y", 5.f / 255, 0, false);
  add_weight(b, "w3", {8, 16, 1, 1}, 0, 0.004f, rng);
  add_bias(b, "b3", 8, 4.f / 255, 0.004f, rng);
  conv(b, {"d2", "w3", "b3"}, "z", 1);
  b.node("GlobalAveragePool", {"y"}, {"gp"});
  b.node("Flatten", {"gp"}, {"fl"});
  add_qdq(b, "fl", "fld", 2.f / 255, 0, false);
  add_weight(b, "w4", {10, 16}, 0, 0.004f, rng);
  add_bias(b, "b4", 10, 2.f / 255, 0.004f, rng);
  auto* g = b.node("Gemm", {"fld", "w4", "b4"}, {"logits"});
  attr_i(g, "transB", 1);
  b.output("y").output("z").output("logits");
  auto m = b.build("qdq_block.onnx");
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.is_ok() ? std::move(m).value() : Model();
}

TEST(FuseQdq, ResNetBlockFusedMatchesUnfused) {
  Model m = qdq_block_model();
  ASSERT_FALSE(m.graph.nodes.empty());
  SessionOptions fo;
  fo.num_threads = 2;
  fo.verify_passes = true;
  auto fused = Session::create(m, fo);
  ASSERT_TRUE(fused.is_ok()) << fused.status().message();
  const Graph& g = fused.value()->graph();
  EXPECT_EQ(count_op(g, "QConv"), 3);
  EXPECT_EQ(count_op(g, "QMatMul"), 1);
  EXPECT_EQ(count_op(g, "QAdd"), 1);
  EXPECT_EQ(count_op(g, "Conv") + count_op(g, "FusedConv") + count_op(g, "Gemm") + count_op(g, "Add"), 0);
  // conv2 reads conv1's uint8 output directly (int8 end to end).
  for (const auto& n : g.nodes)
    if (n.op_type == "QConv" && n.name == "c2_conv")
      EXPECT_EQ(g.value(n.inputs[0]).producer != kNoNode ? g.nodes[g.value(n.inputs[0]).producer].op_type : "", "QConv");
  SessionOptions uo = fo;
  uo.optimize = false;
  auto unfused = Session::create(m, uo);
  ASSERT_TRUE(unfused.is_ok()) << unfused.status().message();
  EXPECT_EQ(count_op(unfused.value()->graph(), "QConv"), 0);
  EXPECT_EQ(count_op(unfused.value()->graph(), "Conv"), 3);
  const float steps[3] = {5.f / 255, 0.f, 0.f};
  for (uint32_t seed : {1u, 2u, 3u}) {
    Tensor x = testing_onnx::random_f32({1, 16, 10, 10}, seed);
    auto a = fused.value()->run({x});
    auto b = unfused.value()->run({x});
    ASSERT_TRUE(a.is_ok()) << a.status().message();
    ASSERT_TRUE(b.is_ok()) << b.status().message();
    for (int o = 0; o < 3; ++o) {
      const Tensor& ta = a.value()[o];
      const Tensor& tb = b.value()[o];
      ASSERT_EQ(ta.shape(), tb.shape());
      double maxd = 0, maxv = 0;
      for (int64_t i = 0; i < ta.numel(); ++i) {
        maxd = std::max(maxd, static_cast<double>(std::fabs(ta.data<float>()[i] - tb.data<float>()[i])));
        maxv = std::max(maxv, static_cast<double>(std::fabs(tb.data<float>()[i])));
      }
      // y: quantized output, within one step. z / logits (float outputs): an input
      // step flip moves them by a fraction of their range.
      const double tol = o == 0 ? steps[0] * 1.001 : 0.02 * maxv + 1e-5;
      EXPECT_LE(maxd, tol) << "output " << o << " seed " << seed;
      if (seed == 1)
        std::printf("[ qdq block ] output %d: fused vs unfused max |diff| %.3g (tolerance %.3g, max |y| %.3f)\n", o,
                    maxd, tol, maxv);
    }
  }
}

// DequantizeLinear inside the int8 nhwc chains (dnnl_int8.cc DnnlQdqKernel): after a QConv it
// reads nhwc; into a dnnl GlobalAveragePool it stays nhwc (element-wise, no reorder), into a
// graph output it transposes to nchw. Both must equal the reference-only session exactly.
TEST(FuseQdq, DequantizeInNhwcChains) {
  std::mt19937 rng(5);
  OnnxBuilder b(13);
  b.input("x", {2, 16, 10, 10});
  add_qdq(b, "x", "xd", 2.f / 255, 128, false);
  add_weight(b, "w1", {16, 16, 3, 3}, 0, 0.002f, rng);
  conv(b, {"xd", "w1"}, "c1", 3);
  add_qdq(b, "c1", "d1", 4.f / 255, 128, false);
  b.node("GlobalAveragePool", {"d1"}, {"gp"});
  add_weight(b, "w2", {8, 16, 3, 3}, 0, 0.002f, rng);
  conv(b, {"xd", "w2"}, "c2", 3);
  add_qdq(b, "c2", "d2", 4.f / 255, 10, true);
  b.output("gp").output("d2");
  auto m = b.build("qdq_nhwc_dq.onnx");
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  SessionOptions o;
  o.num_threads = 2;
  auto s = Session::create(m.value(), o);
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  const Graph& g = s.value()->graph();
  int nhwc_in = 0, to_plain = 0;
  for (const auto& n : g.nodes) {
    if (n.op_type != "DequantizeLinear" || !n.has_attr(kInLayoutsAttr)) continue;
    const auto in = n.attr_ints(kInLayoutsAttr), out = n.attr_ints(kOutLayoutsAttr);
    if (in[0] == static_cast<int64_t>(Layout::kNhwc)) ++nhwc_in;
    if (in[0] == static_cast<int64_t>(Layout::kNhwc) && out[0] == static_cast<int64_t>(Layout::kPlain)) ++to_plain;
  }
  if (preferred_blocked_layout() == Layout::kNhwc && cpu_has_vnni()) {  // without VNNI QConv runs on ref: plain
    EXPECT_EQ(nhwc_in, 2);
    EXPECT_EQ(to_plain, 1);  // d2 is a graph output
  }
  SessionOptions r = o;
  r.backends = {"ref"};
  auto ref = Session::create(m.value(), r);
  ASSERT_TRUE(ref.is_ok()) << ref.status().message();
  Tensor x = testing_onnx::random_f32({2, 16, 10, 10}, 9);
  auto a = s.value()->run({x});
  auto c = ref.value()->run({x});
  ASSERT_TRUE(a.is_ok() && c.is_ok());
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(a.value()[k].shape(), c.value()[k].shape());
    EXPECT_LT(max_abs_diff(a.value()[k], c.value()[k]), 1e-5) << "output " << k;
  }
}

TEST(FuseQdq, TunedInt8ConvolutionsGiveTheSameResults) {
  Model m = qdq_block_model();
  ASSERT_FALSE(m.graph.nodes.empty());
  SessionOptions plain, tuned;
  plain.num_threads = tuned.num_threads = 2;
  tuned.tune_kernels = true;
  auto a = Session::create(m, plain);
  auto b = Session::create(m, tuned);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  Tensor x = testing_onnx::random_f32({1, 16, 10, 10}, 4);
  auto ya = a.value()->run({x});
  auto yb = b.value()->run({x});
  ASSERT_TRUE(ya.is_ok() && yb.is_ok());
  // Integer accumulation is exact whatever the implementation; the int8 output y must match
  // exactly, the float outputs to rounding.
  for (int o = 0; o < 3; ++o) EXPECT_LT(max_abs_diff(ya.value()[o], yb.value()[o]), o == 0 ? 1e-7 : 1e-4) << o;
}

TEST(FuseQdq, LeavesNonMatchingPatterns) {
  // Conv whose weight is float (not DQ'd): stays a float conv; the Q/DQ pair stays.
  std::mt19937 rng(5);
  OnnxBuilder b(13);
  b.input("x", {1, 4, 6, 6});
  add_qdq(b, "x", "xd", 2.f / 255, 128, false);
  b.init("w", testing_ref::random_tensor({4, 4, 3, 3}, rng));
  conv(b, {"xd", "w"}, "y", 3);
  b.output("y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  SessionOptions o;
  o.verify_passes = true;
  auto s = Session::create(m.value(), o);
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(count_op(s.value()->graph(), "QConv"), 0);
  EXPECT_EQ(count_op(s.value()->graph(), "QuantizeLinear"), 1);
  auto r = s.value()->run({testing_onnx::random_f32({1, 4, 6, 6}, 1)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
}

// ---------------------------------------------------------------- real model

TEST(FuseQdq, QuantizedResNet18) {
  const std::string dir = std::string(MEDQ_SHARED_DATA) + "/models/";
  auto m = load_model(dir + "brain_resnet18.onnx");
  if (!m.is_ok()) GTEST_SKIP() << "model not available: " << m.status().message();
  auto x = load_tensor_pb(dir + "brain_resnet18_test_data/test_data_set_0/input_0.pb");
  ASSERT_TRUE(x.is_ok()) << x.status().message();
  SessionOptions so;
  so.num_threads = 2;
  auto fp32 = Session::create(m.value(), so);
  ASSERT_TRUE(fp32.is_ok()) << fp32.status().message();
  auto ref = fp32.value()->run({x.value()});
  ASSERT_TRUE(ref.is_ok()) << ref.status().message();

  Model q = m.value();
  QuantizeOptions qo;
  bool given = false;
  auto rep = quantize_static(q, qo, [&](std::vector<Tensor>& inputs) -> Result<bool> {
    if (given) return false;
    given = true;
    inputs = {x.value()};
    return true;
  });
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  auto s8 = Session::create(q, so);
  ASSERT_TRUE(s8.is_ok()) << s8.status().message();
  const Graph& g = s8.value()->graph();
  const int nq = count_op(g, "QConv");
  EXPECT_GE(nq, 20);  // resnet18: 20 convolutions
  EXPECT_EQ(count_op(g, "Conv") + count_op(g, "FusedConv"), 0);
  // The 8 residual adds stay int8, fused into the preceding QConv as a oneDNN sum
  // post-op (passes/fuse_qsum.cc).
  int nsum = 0;
  for (const auto& n : g.nodes) nsum += n.op_type == "QConv" && n.has_input(3);
  EXPECT_EQ(count_op(g, "QAdd") + nsum, 8);
  if (cpu_has_vnni()) EXPECT_EQ(nsum, 8);  // the sum post-op is the dnnl kernel's (ref: QAdd)
  for (const auto& n : g.nodes)  // MaxPool runs on the quantized stem output
    if (n.op_type == "MaxPool") EXPECT_EQ(g.value(n.inputs[0]).dtype, DataType::kUInt8);
  auto out = s8.value()->run({x.value()});
  ASSERT_TRUE(out.is_ok()) << out.status().message();
  const Tensor& a = ref.value()[0];
  const Tensor& b = out.value()[0];
  ASSERT_EQ(a.shape(), b.shape());
  const int64_t batch = a.dim(0), k = a.numel() / batch;
  double maxd = 0, maxv = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* pa = a.data<float>() + i * k;
    const float* pb = b.data<float>() + i * k;
    EXPECT_EQ(std::max_element(pa, pa + k) - pa, std::max_element(pb, pb + k) - pb) << "image " << i;
    for (int64_t j = 0; j < k; ++j) {
      maxd = std::max(maxd, static_cast<double>(std::fabs(pa[j] - pb[j])));
      maxv = std::max(maxv, static_cast<double>(std::fabs(pa[j])));
    }
  }
  std::printf("[ resnet18 ] %d QConv, %d QMatMul; int8 vs fp32 logits: max |diff| %.4f (max |logit| %.3f)\n", nq,
              count_op(g, "QMatMul"), maxd, maxv);
  // Fused (oneDNN, QConv + sum) vs the unfused reference kernels (QConv, QAdd):
  // the fusion skips one 8-bit rounding of the conv output, so logits may move
  // by a few output steps, never more; the top-1 stays.
  SessionOptions ro = so;
  ro.backends = {"ref"};
  auto sref = Session::create(q, ro);
  ASSERT_TRUE(sref.is_ok()) << sref.status().message();
  EXPECT_EQ(count_op(sref.value()->graph(), "QAdd"), 8);
  auto outr = sref.value()->run({x.value()});
  ASSERT_TRUE(outr.is_ok()) << outr.status().message();
  const Tensor& c = outr.value()[0];
  double maxf = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* pb = b.data<float>() + i * k;
    const float* pc = c.data<float>() + i * k;
    EXPECT_EQ(std::max_element(pb, pb + k) - pb, std::max_element(pc, pc + k) - pc) << "image " << i;
    for (int64_t j = 0; j < k; ++j) maxf = std::max(maxf, static_cast<double>(std::fabs(pb[j] - pc[j])));
  }
  std::printf("[ resnet18 ] fused vs unfused int8 logits: max |diff| %.4f\n", maxf);
  EXPECT_LT(maxf, 0.05 * maxv);
  // Timing (print only).
  auto time_ms = [&](const Session& s) {  // best of 4 (the machine is shared)
    double best = 1e30;
    for (int i = 0; i < 4; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      s.run({x.value()});
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  std::printf("[ resnet18 ] batch %lld, 2 threads, best of 4: fp32 %.1f ms, int8 %.1f ms\n", static_cast<long long>(batch),
              time_ms(*fp32.value()), time_ms(*s8.value()));
  // Per-op-type time of the int8 graph (print only).
  RunStats st;
  s8.value()->run({x.value()}, &st);
  std::map<std::string, double> by_op;
  for (const auto& np : st.nodes) by_op[np.op_type + "/" + np.backend] += np.total_ms;
  std::string line;
  for (const auto& kv : by_op) line += " " + kv.first + "=" + std::to_string(kv.second).substr(0, 5);
  std::printf("[ resnet18 ] int8 profile (ms):%s\n", line.c_str());
}

// ---------------------------------------------------------------- benchmark (print only)

TEST(QConv, BenchmarkFp32VsInt8) {
  std::mt19937 rng(9);
  const int64_t C = 64, H = 56;
  // fp32 conv model.
  OnnxBuilder fb(13);
  fb.input("x", {1, C, H, H});
  fb.init("w", testing_ref::random_tensor({C, C, 3, 3}, rng, -0.05f, 0.05f));
  fb.init("b", testing_ref::random_tensor({C}, rng));
  conv(fb, {"x", "w", "b"}, "c", 3);
  fb.node("Relu", {"c"}, {"y"});
  fb.output("y");
  // int8: u8 in -> QConv -> u8 out (the QDQ pattern with a uint8 graph input).
  OnnxBuilder qb(13);
  qb.input("xq", {1, C, H, H}, onnx::TensorProto::UINT8);
  qb.init("xs", Tensor::scalar<float>(0.02f)).init("xz", Tensor::scalar<uint8_t>(128));
  qb.node("DequantizeLinear", {"xq", "xs", "xz"}, {"xd"});
  add_weight(qb, "w", {C, C, 3, 3}, 0, 0.0005f, rng);
  add_bias(qb, "b", C, 0.02f, 0.0005f, rng);
  conv(qb, {"xd", "w", "b"}, "c", 3);
  qb.node("Relu", {"c"}, {"r"});
  qb.init("ys", Tensor::scalar<float>(0.05f)).init("yz", Tensor::scalar<uint8_t>(0));
  qb.node("QuantizeLinear", {"r", "ys", "yz"}, {"y"});
  qb.output("y", onnx::TensorProto::UINT8);
  auto fm = fb.build();
  auto qm = qb.build();
  ASSERT_TRUE(fm.is_ok()) << fm.status().message();
  ASSERT_TRUE(qm.is_ok()) << qm.status().message();
  SessionOptions so;
  so.num_threads = 2;
  auto fs = Session::create(fm.value(), so);
  auto qs = Session::create(qm.value(), so);
  ASSERT_TRUE(fs.is_ok()) << fs.status().message();
  ASSERT_TRUE(qs.is_ok()) << qs.status().message();
  EXPECT_EQ(count_op(qs.value()->graph(), "QConv"), 1);
  Tensor xf = testing_onnx::random_f32({1, C, H, H}, 1);
  Tensor xq = random_q(DataType::kUInt8, {1, C, H, H}, rng);
  auto bench = [](const Session& s, const Tensor& x) {  // best of 30 (the machine is shared)
    s.run({x});
    double best = 1e30;
    for (int i = 0; i < 30; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      s.run({x});
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const double tf = bench(*fs.value(), xf), tq = bench(*qs.value(), xq);
  std::printf("[ bench ] conv 3x3 %lldch %lldx%lld (+bias+relu), 2 threads, best of 30: fp32 %.3f ms, int8 %.3f ms, speedup %.2fx\n",
              static_cast<long long>(C), static_cast<long long>(H), static_cast<long long>(H), tf, tq, tf / tq);
}

}  // namespace
}  // namespace medq
