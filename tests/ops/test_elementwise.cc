// Reference elementwise kernels (kernels/ref/elementwise.cc): broadcasting,
// variadic ops, integer edge cases, Clip across opsets, Cast, Where, the
// polynomial activations against libm, and errors that name the node. The
// ONNX backend suite covers the op semantics more widely.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "ref_op_runner.h"

namespace medq {
namespace {

using testing_ref::cst;
using testing_ref::f32;
using testing_ref::in;
using testing_ref::iota_f32;
using testing_ref::none;
using testing_ref::OpSpec;
using testing_ref::random_tensor;
using testing_ref::run_op;

std::vector<float> vals(const Tensor& t) { return t.to_f32_vector(); }

OpSpec spec(const std::string& op, std::vector<Attribute> attrs = {}, int64_t opset = 17) {
  OpSpec s;
  s.op_type = op;
  s.attrs = std::move(attrs);
  s.opset = opset;
  return s;
}

// Index of a flat output position into an input of (numpy-broadcast) shape `s`.
int64_t bcast_index(int64_t flat, const Shape& out, const Shape& s) {
  int64_t idx = 0, stride = 1;
  const int off = static_cast<int>(out.size() - s.size());
  for (int d = static_cast<int>(out.size()) - 1; d >= 0; --d) {
    const int64_t c = flat % out[d];
    flat /= out[d];
    if (d >= off && s[d - off] != 1) idx += c * stride;
    if (d >= off) stride *= s[d - off];
  }
  return idx;
}

void expect_binary(const std::string& op, const Shape& sa, const Shape& sb, const Shape& so,
                   float (*f)(float, float), int threads = 2) {
  std::mt19937 rng(7);
  Tensor a = random_tensor(sa, rng, 0.5f, 2.f), b = random_tensor(sb, rng, 0.5f, 2.f);
  auto r = run_op(spec(op), {in(a), in(b)}, threads);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Tensor& y = r.value()[0];
  ASSERT_EQ(y.shape(), so);
  for (int64_t i = 0; i < y.numel(); ++i) {
    float e = f(a.data<float>()[bcast_index(i, so, sa)], b.data<float>()[bcast_index(i, so, sb)]);
    ASSERT_FLOAT_EQ(y.data<float>()[i], e) << op << " at " << i;
  }
}

TEST(Elementwise, BinaryBroadcastShapes) {
  auto add = [](float x, float y) { return x + y; };
  auto sub = [](float x, float y) { return x - y; };
  auto mul = [](float x, float y) { return x * y; };
  auto div = [](float x, float y) { return x / y; };
  expect_binary("Add", {2, 3, 4, 5}, {2, 3, 4, 5}, {2, 3, 4, 5}, add);
  expect_binary("Add", {2, 3, 4, 5}, {3, 1, 1}, {2, 3, 4, 5}, add);  // per channel
  expect_binary("Sub", {3, 1}, {1, 4}, {3, 4}, sub);                  // outer product
  expect_binary("Mul", {}, {2, 3}, {2, 3}, mul);                      // scalar
  expect_binary("Div", {2, 1, 5}, {4, 1}, {2, 4, 5}, div);
  expect_binary("Mul", {2, 3, 4, 5}, {1, 3, 1, 5}, {2, 3, 4, 5}, mul);
  // Large enough for the OpenMP path, with a channel broadcast.
  expect_binary("Add", {2, 16, 48, 48}, {1, 16, 1, 1}, {2, 16, 48, 48}, add, 2);
  expect_binary("Sub", {2, 16, 48, 48}, {2, 16, 48, 48}, {2, 16, 48, 48}, sub, 2);
}

TEST(Elementwise, MismatchedBroadcastNamesNode) {
  auto r = run_op(spec("Add"), {in(iota_f32({2, 3})), in(iota_f32({4}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("Add 'node0'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("cannot be broadcast"), std::string::npos) << r.status().message();
  auto m = run_op(spec("Mul"), {in(iota_f32({2})), in(Tensor::from_vector<int64_t>({1, 2}, {2}))});
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("Mul 'node0'"), std::string::npos) << m.status().message();
  auto p = run_op(spec("PRelu"), {in(iota_f32({2, 3})), in(iota_f32({2, 2, 3}))});
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.status().message().find("PRelu 'node0'"), std::string::npos) << p.status().message();
}

TEST(Elementwise, VariadicSumMeanMax) {
  Tensor a = f32({1, 2, 3}, {3}), b = f32({10, 20}, {2, 1}), c = f32({100}, {1});
  auto s = run_op(spec("Sum"), {in(a), in(b), in(c)});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s.value()[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(vals(s.value()[0]), (std::vector<float>{111, 112, 113, 121, 122, 123}));
  auto m = run_op(spec("Mean"), {in(a), in(f32({3, 2, 1}, {3}))});
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(vals(m.value()[0]), (std::vector<float>{2, 2, 2}));
  auto x = run_op(spec("Max"), {in(a)});
  ASSERT_TRUE(x.is_ok()) << x.status().message();
  EXPECT_EQ(vals(x.value()[0]), (std::vector<float>{1, 2, 3}));
  auto n = run_op(spec("Min"), {in(Tensor::from_vector<int32_t>({5, -3, 7}, {3})),
                                in(Tensor::from_vector<int32_t>({4}, {1}))});
  ASSERT_TRUE(n.is_ok()) << n.status().message();
  EXPECT_EQ(n.value()[0].to_i64_vector(), (std::vector<int64_t>{4, -3, 4}));
}

TEST(Elementwise, IntegerDivModEdgeCases) {
  Tensor a = Tensor::from_vector<int32_t>({7, -7, 7, -7, std::numeric_limits<int32_t>::min()}, {5});
  Tensor b = Tensor::from_vector<int32_t>({3, 3, -3, 0, -1}, {5});
  auto d = run_op(spec("Div"), {in(a), in(b)});
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(d.value()[0].to_i64_vector(),
            (std::vector<int64_t>{2, -2, -2, 0, std::numeric_limits<int32_t>::min()}));
  auto m = run_op(spec("Mod"), {in(a), in(b)});  // sign of the divisor
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m.value()[0].to_i64_vector(), (std::vector<int64_t>{1, 2, -2, 0, 0}));
  auto f = run_op(spec("Mod", {Attribute::make_int("fmod", 1)}), {in(a), in(b)});  // sign of the dividend
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  EXPECT_EQ(f.value()[0].to_i64_vector(), (std::vector<int64_t>{1, -1, 1, 0, 0}));
  auto s = run_op(spec("BitShift", {Attribute::make_string("direction", "LEFT")}),
                  {in(Tensor::from_vector<uint8_t>({1, 3, 255}, {3})), in(Tensor::from_vector<uint8_t>({2, 1, 9}, {3}))});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s.value()[0].to_i64_vector(), (std::vector<int64_t>{4, 6, 0}));
}

TEST(Elementwise, PowScalarExponentsAndMixedTypes) {
  Tensor x = f32({0.25f, 4.f, 9.f}, {3});
  auto check = [&](float e, std::vector<float> want) {
    auto r = run_op(spec("Pow"), {in(x), in(Tensor::scalar<float>(e))});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    std::vector<float> got = vals(r.value()[0]);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5f * std::fabs(want[i]));
  };
  check(2.f, {0.0625f, 16.f, 81.f});
  check(0.5f, {0.5f, 2.f, 3.f});
  check(1.5f, {0.125f, 8.f, 27.f});
  auto i = run_op(spec("Pow"), {in(Tensor::from_vector<int32_t>({2, 3, -2}, {3})), in(Tensor::scalar<float>(2.f))});
  ASSERT_TRUE(i.is_ok()) << i.status().message();
  EXPECT_EQ(i.value()[0].dtype(), DataType::kInt32);
  EXPECT_EQ(i.value()[0].to_i64_vector(), (std::vector<int64_t>{4, 9, 4}));
  auto j = run_op(spec("Pow"), {in(Tensor::from_vector<int64_t>({2, 3}, {2})),
                                in(Tensor::from_vector<int64_t>({10, -1}, {2}))});
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  EXPECT_EQ(j.value()[0].to_i64_vector(), (std::vector<int64_t>{1024, 0}));
}

TEST(Elementwise, ClipAttributesBeforeOpset11InputsAfter) {
  Tensor x = f32({-5, -1, 0, 1, 5}, {5});
  auto a = run_op(spec("Clip", {Attribute::make_float("min", -2), Attribute::make_float("max", 2)}, 6), {in(x)});
  ASSERT_TRUE(a.is_ok()) << a.status().message();
  EXPECT_EQ(vals(a.value()[0]), (std::vector<float>{-2, -1, 0, 1, 2}));
  auto d = run_op(spec("Clip", {}, 6), {in(x)});  // no bounds
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(vals(d.value()[0]), vals(x));
  auto b = run_op(spec("Clip", {}, 13), {in(x), cst(Tensor::scalar<float>(-2)), cst(Tensor::scalar<float>(2))});
  ASSERT_TRUE(b.is_ok()) << b.status().message();
  EXPECT_EQ(vals(b.value()[0]), (std::vector<float>{-2, -1, 0, 1, 2}));
  auto c = run_op(spec("Clip", {}, 13), {in(x), none(), in(Tensor::scalar<float>(0.5f))});  // max only
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(vals(c.value()[0]), (std::vector<float>{-5, -1, 0, 0.5f, 0.5f}));
  auto e = run_op(spec("Clip", {}, 13), {in(x), in(Tensor::scalar<float>(3)), in(Tensor::scalar<float>(1))});
  ASSERT_TRUE(e.is_ok()) << e.status().message();  // min > max: everything becomes max
  EXPECT_EQ(vals(e.value()[0]), (std::vector<float>{1, 1, 1, 1, 1}));
  auto i = run_op(spec("Clip", {}, 13), {in(Tensor::from_vector<int8_t>({-100, 5, 100}, {3})),
                                         in(Tensor::scalar<int8_t>(-10))});
  ASSERT_TRUE(i.is_ok()) << i.status().message();
  EXPECT_EQ(i.value()[0].to_i64_vector(), (std::vector<int64_t>{-10, 5, 100}));
  auto bad = run_op(spec("Clip", {}, 13), {in(x), in(Tensor::scalar<double>(0))});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("Clip 'node0'"), std::string::npos) << bad.status().message();
}

TEST(Elementwise, CastFloatHalfFloat) {
  Tensor x = f32({1.f, -2.5f, 65504.f, 1e-8f, 0.1f, 70000.f}, {2, 3});
  auto h = run_op(spec("Cast", {Attribute::make_int("to", static_cast<int64_t>(DataType::kFloat16))}), {in(x)});
  ASSERT_TRUE(h.is_ok()) << h.status().message();
  EXPECT_EQ(h.value()[0].dtype(), DataType::kFloat16);
  EXPECT_EQ(h.value()[0].shape(), (Shape{2, 3}));
  auto f = run_op(spec("Cast", {Attribute::make_int("to", static_cast<int64_t>(DataType::kFloat32))}),
                  {in(h.value()[0])});
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  std::vector<float> v = vals(f.value()[0]);
  EXPECT_EQ(v[0], 1.f);
  EXPECT_EQ(v[1], -2.5f);
  EXPECT_EQ(v[2], 65504.f);
  EXPECT_EQ(v[3], 0.f);
  EXPECT_NEAR(v[4], 0.1f, 1e-4f);
  EXPECT_TRUE(std::isinf(v[5]));
  // CastLike takes the dtype of its second input; float -> uint8 / bool.
  auto u = run_op(spec("CastLike"), {in(f32({3.7f, 255.f, 0.f}, {3})), in(Tensor::from_vector<uint8_t>({0}, {1}))});
  ASSERT_TRUE(u.is_ok()) << u.status().message();
  EXPECT_EQ(u.value()[0].dtype(), DataType::kUInt8);
  EXPECT_EQ(u.value()[0].to_i64_vector(), (std::vector<int64_t>{3, 255, 0}));
  auto b = run_op(spec("Cast", {Attribute::make_int("to", static_cast<int64_t>(DataType::kBool))}),
                  {in(f32({0.f, -0.5f, 2.f}, {3}))});
  ASSERT_TRUE(b.is_ok()) << b.status().message();
  EXPECT_EQ(b.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 1, 1}));
}

TEST(Elementwise, WhereBroadcastAndHalf) {
  Tensor c = Tensor::from_vector<bool>({true, false, true}, {3});
  auto r = run_op(spec("Where"), {in(c), in(f32({1, 2}, {2, 1})), in(f32({-1, -2, -3}, {3}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(vals(r.value()[0]), (std::vector<float>{1, -2, 1, 2, -2, 2}));
  Tensor h1 = f32({1, 2, 3}, {3}).cast(DataType::kFloat16), h2 = f32({4, 5, 6}, {3}).cast(DataType::kFloat16);
  auto h = run_op(spec("Where"), {in(c), in(h1), in(h2)});
  ASSERT_TRUE(h.is_ok()) << h.status().message();
  EXPECT_EQ(h.value()[0].dtype(), DataType::kFloat16);
  EXPECT_EQ(vals(h.value()[0]), (std::vector<float>{1, 5, 3}));
  auto bad = run_op(spec("Where"), {in(f32({1}, {1})), in(h1), in(h2)});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("Where 'node0'"), std::string::npos);
}

TEST(Elementwise, Float16ComputedInFloat32) {
  Tensor a = f32({1.5f, 2.f}, {2}).cast(DataType::kFloat16), b = f32({0.25f, -4.f}, {2}).cast(DataType::kFloat16);
  auto r = run_op(spec("Add"), {in(a), in(b)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].dtype(), DataType::kFloat16);
  EXPECT_EQ(vals(r.value()[0]), (std::vector<float>{1.75f, -2.f}));
  auto e = run_op(spec("Less"), {in(a), in(b)});
  ASSERT_TRUE(e.is_ok()) << e.status().message();
  EXPECT_EQ(e.value()[0].dtype(), DataType::kBool);
  EXPECT_EQ(e.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 0}));
}

TEST(Elementwise, ActivationsMatchLibm) {
  std::vector<float> xs;
  for (float x = -30.f; x <= 30.f; x += 0.0173f) xs.push_back(x);
  Tensor x = f32(xs, {static_cast<int64_t>(xs.size())});
  auto check = [&](const char* op, double (*ref)(double), std::vector<Attribute> attrs = {}) {
    auto r = run_op(spec(op, attrs), {in(x)});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    const float* y = r.value()[0].data<float>();
    for (size_t i = 0; i < xs.size(); ++i) {
      double e = ref(xs[i]);
      ASSERT_NEAR(y[i], e, 1e-6 + 2e-6 * std::fabs(e)) << op << "(" << xs[i] << ")";
    }
  };
  check("Sigmoid", [](double v) { return 1.0 / (1.0 + std::exp(-v)); });
  check("Erf", [](double v) { return std::erf(v); });
  check("Gelu", [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); });
  check("Tanh", [](double v) { return std::tanh(v); });
  check("Softplus", [](double v) { return std::log1p(std::exp(-std::fabs(v))) + std::max(v, 0.0); });
  check("Elu", [](double v) { return v < 0 ? std::expm1(v) : v; });
  check("HardSwish", [](double v) { return v * std::min(1.0, std::max(0.0, v / 6 + 0.5)); });
  check("Relu", [](double v) { return std::max(v, 0.0); });
  // Tails stay accurate in relative terms.
  auto t = run_op(spec("Sigmoid"), {in(f32({-80.f, -20.f, 20.f}, {3}))});
  ASSERT_TRUE(t.is_ok());
  EXPECT_NEAR(t.value()[0].data<float>()[0] / std::exp(-80.0), 1.0, 1e-5);
  EXPECT_NEAR(t.value()[0].data<float>()[1] / (1 / (1 + std::exp(20.0))), 1.0, 1e-5);
  EXPECT_EQ(t.value()[0].data<float>()[2], 1.f);
}

TEST(Elementwise, RoundIsInfSignNot) {
  auto r = run_op(spec("Round"), {in(f32({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.6f}, {6}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(vals(r.value()[0]), (std::vector<float>{0, 2, 2, -0.f, -2, 3}));
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = f32({inf, -inf, 1.f, std::nanf("")}, {4});
  auto a = run_op(spec("IsInf", {Attribute::make_int("detect_positive", 0)}), {in(x)});
  ASSERT_TRUE(a.is_ok()) << a.status().message();
  EXPECT_EQ(a.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 1, 0, 0}));
  auto n = run_op(spec("IsNaN"), {in(x)});
  ASSERT_TRUE(n.is_ok()) << n.status().message();
  EXPECT_EQ(n.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 0, 0, 1}));
  auto s = run_op(spec("Sign"), {in(Tensor::from_vector<int64_t>({-7, 0, 9}, {3}))});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s.value()[0].to_i64_vector(), (std::vector<int64_t>{-1, 0, 1}));
  auto o = run_op(spec("Not"), {in(Tensor::from_vector<bool>({true, false}, {2}))});
  ASSERT_TRUE(o.is_ok()) << o.status().message();
  EXPECT_EQ(o.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 1}));
  auto bad = run_op(spec("Sqrt"), {in(Tensor::from_vector<int32_t>({4}, {1}))});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("Sqrt 'node0'"), std::string::npos) << bad.status().message();
}

TEST(Elementwise, PReluChannelSlope) {
  Tensor x = f32({-1, 2, -3, 4, -5, 6, -7, 8}, {1, 2, 2, 2});
  auto r = run_op(spec("PRelu"), {in(x), cst(f32({0.5f, 0.1f}, {2, 1, 1}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  std::vector<float> got = vals(r.value()[0]);
  std::vector<float> want = {-0.5f, 2, -1.5f, 4, -0.5f, 6, -0.7f, 8};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]);
}

}  // namespace
}  // namespace medq
