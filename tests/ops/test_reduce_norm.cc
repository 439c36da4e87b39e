// Tests of the reference reduction / softmax / normalisation / MatMul-Gemm-
// Einsum kernels (kernels/ref/reduce.cc, norm.cc, matmul.cc): small hand-made
// cases, a naive-GEMM comparison over random shapes, expected errors, and the
// ONNX backend node cases of these ops run through a Session on the ref
// backend.
#include <gtest/gtest.h>

#include <cmath>
#include <dirent.h>
#include <random>
#include <string>
#include <vector>

#include "onnx/model_io.h"
#include "ops/fused.h"
#include "ref_op_runner.h"
#include "runtime/session.h"

namespace medq {
namespace {

using testing_ref::cst;
using testing_ref::f32;
using testing_ref::i64;
using testing_ref::in;
using testing_ref::OpSpec;
using testing_ref::run_op;

OpSpec spec(const std::string& op, const std::string& domain = "") {
  OpSpec s;
  s.op_type = op;
  s.domain = domain;
  return s;
}

void expect_near(const Tensor& got, const std::vector<float>& want, float tol = 1e-5f) {
  std::vector<float> g = got.to_f32_vector();
  ASSERT_EQ(g.size(), want.size());
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[i], tol * (1 + std::fabs(want[i]))) << "at " << i;
}

TEST(RefReduce, SumAxesInputAndKeepdims) {
  Tensor x = testing_ref::iota_f32({2, 3, 4});
  OpSpec s = spec("ReduceSum");
  s.attrs = {Attribute::make_int("keepdims", 0)};
  auto r = run_op(s, {in(x), cst(i64({0, 2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].shape(), (Shape{3}));
  expect_near(r.value()[0], {60, 92, 124});
  // Empty axes + noop_with_empty_axes: identity.
  s.attrs = {Attribute::make_int("noop_with_empty_axes", 1)};
  r = run_op(s, {in(x), cst(Tensor(DataType::kInt64, {0}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].shape(), x.shape());
}

TEST(RefReduce, AttributeAxesOldOpsetAndKinds) {
  Tensor x = f32({1, -2, 3, -4, 5, -6}, {2, 3});
  struct Case {
    const char* op;
    std::vector<float> want;
  } cases[] = {{"ReduceMean", {2.f / 3, -5.f / 3}}, {"ReduceMax", {3, 5}},        {"ReduceMin", {-2, -6}},
               {"ReduceProd", {-6, 120}},            {"ReduceL1", {6, 15}},        {"ReduceL2", {std::sqrt(14.f), std::sqrt(77.f)}},
               {"ReduceSumSquare", {14, 77}},        {"ReduceLogSumExp", {std::log(std::exp(1.f) + std::exp(-2.f) + std::exp(3.f)),
                                                                          std::log(std::exp(-4.f) + std::exp(5.f) + std::exp(-6.f))}}};
  for (const auto& c : cases) {
    OpSpec s = spec(c.op);
    s.opset = 13;
    s.attrs = {Attribute::make_ints("axes", {-1}), Attribute::make_int("keepdims", 1)};
    auto r = run_op(s, {in(x)});
    ASSERT_TRUE(r.is_ok()) << c.op << ": " << r.status().message();
    EXPECT_EQ(r.value()[0].shape(), (Shape{2, 1})) << c.op;
    expect_near(r.value()[0], c.want, 1e-5f);
  }
}

TEST(RefReduce, MiddleAxisLargeParallel) {
  // Kept innermost group + reduced middle axis, big enough for the parallel path.
  std::mt19937 rng(1);
  Tensor x = testing_ref::random_tensor({3, 50, 1000}, rng);
  OpSpec s = spec("ReduceMean");
  s.opset = 13;
  s.attrs = {Attribute::make_ints("axes", {1}), Attribute::make_int("keepdims", 0)};
  auto r = run_op(s, {in(x)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const float* p = x.data<float>();
  std::vector<float> want(3000);
  for (int a = 0; a < 3; ++a)
    for (int c = 0; c < 1000; ++c) {
      double acc = 0;
      for (int b = 0; b < 50; ++b) acc += p[(a * 50 + b) * 1000 + c];
      want[a * 1000 + c] = static_cast<float>(acc / 50);
    }
  expect_near(r.value()[0], want);
}

TEST(RefReduce, ArgMaxSelectLastIndex) {
  Tensor x = f32({1, 3, 3, 0, 2, 2}, {2, 3});
  OpSpec s = spec("ArgMax");
  s.attrs = {Attribute::make_int("axis", 1), Attribute::make_int("select_last_index", 1)};
  auto r = run_op(s, {in(x)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{2, 2}));
}

TEST(RefSoftmax, LegacyCoercesTo2D) {
  Tensor x = f32({0, 1, 2, 3, 4, 5, 6, 7}, {2, 2, 2});
  OpSpec s = spec("Softmax");
  s.opset = 11;  // axis=1 default: softmax over the last 4 values of each batch row
  auto r = run_op(s, {in(x)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  double z = 0;
  for (int i = 0; i < 4; ++i) z += std::exp(i);
  std::vector<float> want;
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 4; ++i) want.push_back(static_cast<float>(std::exp(i) / z));
  expect_near(r.value()[0], want);
  s.opset = 13;  // axis=-1: pairs
  r = run_op(s, {in(x)});
  ASSERT_TRUE(r.is_ok());
  const float e = static_cast<float>(1 / (1 + std::exp(1.0)));
  expect_near(r.value()[0], {e, 1 - e, e, 1 - e, e, 1 - e, e, 1 - e});
}

TEST(RefSoftmax, Float16Promotes) {
  Tensor x = f32({1, 2, 3, 4}, {2, 2}).cast(DataType::kFloat16);
  auto r = run_op(spec("LogSoftmax"), {in(x)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].dtype(), DataType::kFloat16);
  const float l = static_cast<float>(-std::log(1 + std::exp(1.0)));
  expect_near(r.value()[0], {l, l + 1, l, l + 1}, 2e-3f);
}

TEST(RefReduce, TopKAndCumSum) {
  Tensor x = f32({3, 1, 3, 2, 5, 4}, {2, 3});
  OpSpec s = spec("TopK");
  s.num_outputs = 2;
  auto r = run_op(s, {in(x), cst(i64({2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  expect_near(r.value()[0], {3, 3, 5, 4});
  EXPECT_EQ(r.value()[1].to_i64_vector(), (std::vector<int64_t>{0, 2, 1, 2}));
  OpSpec c = spec("CumSum");
  c.attrs = {Attribute::make_int("reverse", 1), Attribute::make_int("exclusive", 1)};
  auto rc = run_op(c, {in(x), cst(Tensor::scalar<int64_t>(1))});
  ASSERT_TRUE(rc.is_ok()) << rc.status().message();
  expect_near(rc.value()[0], {4, 3, 0, 9, 4, 0});
}

TEST(RefNorm, LayerNormOutputs) {
  Tensor x = f32({1, 2, 3, 4, 2, 2, 2, 2}, {2, 4});
  OpSpec s = spec("LayerNormalization");
  s.num_outputs = 3;
  auto r = run_op(s, {in(x), cst(f32({1, 1, 1, 1}, {4})), cst(f32({0, 0, 0, 1}, {4}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const float k = 1.f / std::sqrt(1.25f + 1e-5f);
  expect_near(r.value()[0], {-1.5f * k, -0.5f * k, 0.5f * k, 1.5f * k + 1, 0, 0, 0, 1}, 1e-5f);
  EXPECT_EQ(r.value()[1].shape(), (Shape{2, 1}));
  expect_near(r.value()[1], {2.5f, 2});
  expect_near(r.value()[2], {k, 1.f / std::sqrt(1e-5f)}, 1e-4f);
}

TEST(RefNorm, BatchNormInference) {
  Tensor x = f32({1, 2, 3, 4}, {1, 2, 2, 1});
  auto r = run_op(spec("BatchNormalization"),
                  {in(x), cst(f32({2, 1}, {2})), cst(f32({0, 1}, {2})), cst(f32({1, 3}, {2})), cst(f32({4, 1}, {2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const float a = 2 / std::sqrt(4 + 1e-5f), b = 1 / std::sqrt(1 + 1e-5f);
  expect_near(r.value()[0], {0, a, 0 + 1, b + 1}, 1e-5f);
}

// Naive reference for MatMul checks.
std::vector<float> naive_mm(const float* a, const float* b, int64_t m, int64_t n, int64_t k) {
  std::vector<float> c(m * n, 0.f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t q = 0; q < k; ++q) s += static_cast<double>(a[i * k + q]) * b[q * n + j];
      c[i * n + j] = static_cast<float>(s);
    }
  return c;
}

TEST(RefMatMul, BatchedBroadcastAgainstNaive) {
  std::mt19937 rng(7);
  struct Case {
    Shape a, b;
  } cases[] = {{{3, 17, 9}, {9, 5}},         {{2, 1, 4, 8}, {3, 8, 6}}, {{8}, {2, 8, 3}},
               {{2, 5, 8}, {8}},             {{1, 130, 70}, {70, 90}},  {{12, 20, 16}, {12, 16, 20}}};
  for (const auto& c : cases) {
    Tensor a = testing_ref::random_tensor(c.a, rng), b = testing_ref::random_tensor(c.b, rng);
    auto r = run_op(spec("MatMul"), {in(a), in(b)});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    const Tensor& y = r.value()[0];
    // Expected via explicit broadcasting with numpy rules.
    Shape as = c.a, bs = c.b;
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
    Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
    Shape ob = broadcast_shapes(ab, bb).value();
    const int64_t nb = shape_numel(ob);
    std::vector<float> want;
    for (int64_t i = 0; i < nb; ++i) {
      auto index = [&](const Shape& s) {
        int64_t rem = i, off = 0, mul = 1;
        for (int d = static_cast<int>(ob.size()) - 1, sd = static_cast<int>(s.size()) - 1; d >= 0; --d, --sd) {
          const int64_t v = rem % ob[d];
          rem /= ob[d];
          if (sd >= 0) {
            off += (s[sd] == 1 ? 0 : v) * mul;
            mul *= s[sd];
          }
        }
        return off;
      };
      auto part = naive_mm(a.data<float>() + index(ab) * M * K, b.data<float>() + index(bb) * K * N, M, N, K);
      want.insert(want.end(), part.begin(), part.end());
    }
    EXPECT_EQ(y.numel(), static_cast<int64_t>(want.size()));
    expect_near(y, want, 1e-4f);
  }
}

TEST(RefMatMul, FusedMatMulBiasActivation) {
  Tensor a = f32({1, 2, 3, 4}, {2, 2}), b = f32({1, 0, 0, 1}, {2, 2});
  OpSpec s = spec("FusedMatMul", kMedqDomain);
  s.attrs = {Attribute::make_string("activation", "Clip"), Attribute::make_floats("activation_params", {0.f, 3.5f})};
  auto r = run_op(s, {in(a), cst(b), cst(f32({-1.5f, 0.f}, {2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  expect_near(r.value()[0], {0, 2, 1.5f, 3.5f});
}

TEST(RefMatMul, GemmAndFusedGemm) {
  Tensor a = f32({1, 2, 3, 4, 5, 6}, {3, 2});  // transA -> 2x3
  Tensor b = f32({1, 1, 1, 1, 1, 1}, {2, 3});  // transB -> 3x2
  OpSpec s = spec("FusedGemm", kMedqDomain);
  s.attrs = {Attribute::make_int("transA", 1),         Attribute::make_int("transB", 1),
             Attribute::make_float("alpha", 0.5f),     Attribute::make_float("beta", 2.f),
             Attribute::make_string("activation", "Relu")};
  auto r = run_op(s, {in(a), in(b), in(f32({-10.f, 1.f}, {1, 2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  // op(A) rows: [1,3,5], [2,4,6]; sums 9, 12; *0.5 -> 4.5, 6; + 2*C.
  expect_near(r.value()[0], {0, 6.5f, 0, 8});
}

TEST(RefMatMul, MatMulIntegerPerRowZeroPoint) {
  Tensor a = Tensor::from_vector<uint8_t>({10, 11, 20, 22}, {2, 2});
  Tensor b = Tensor::from_vector<int8_t>({1, -1, 2, 3}, {2, 2});
  auto r = run_op(spec("MatMulInteger"),
                  {in(a), in(b), in(Tensor::from_vector<uint8_t>({10, 20}, {2})), in(Tensor::from_vector<int8_t>({1}, {}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  // A-za = [[0,1],[0,2]], B-zb = [[0,-2],[1,2]].
  EXPECT_EQ(r.value()[0].dtype(), DataType::kInt32);
  EXPECT_EQ(r.value()[0].cast(DataType::kInt64).to_i64_vector(), (std::vector<int64_t>{1, 2, 2, 4}));
}

TEST(RefMatMul, EinsumPatterns) {
  Tensor a = testing_ref::iota_f32({2, 3}), b = testing_ref::iota_f32({3, 2});
  OpSpec s = spec("Einsum");
  s.attrs = {Attribute::make_string("equation", "ij,jk->ik")};
  auto r = run_op(s, {in(a), in(b)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  expect_near(r.value()[0], naive_mm(a.data<float>(), b.data<float>(), 2, 2, 3));
  s.attrs = {Attribute::make_string("equation", "ij->ji")};
  r = run_op(s, {in(a)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  expect_near(r.value()[0], {0, 3, 1, 4, 2, 5});
  s.attrs = {Attribute::make_string("equation", "ii")};  // trace
  r = run_op(s, {in(testing_ref::iota_f32({3, 3}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  expect_near(r.value()[0], {12});
}

TEST(RefMatMul, ErrorsNameTheNode) {
  auto r = run_op(spec("MatMul"), {in(testing_ref::iota_f32({2, 3})), in(testing_ref::iota_f32({4, 5}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("MatMul 'node0'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("K=3"), std::string::npos) << r.status().message();
  OpSpec g = spec("Gemm");
  r = run_op(g, {in(testing_ref::iota_f32({2, 3})), in(testing_ref::iota_f32({3, 4})), in(testing_ref::iota_f32({3, 4}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("Gemm 'node0'"), std::string::npos) << r.status().message();
  OpSpec red = spec("ReduceSum");
  r = run_op(red, {in(testing_ref::iota_f32({2, 3})), cst(i64({2}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("ReduceSum 'node0'"), std::string::npos) << r.status().message();
  OpSpec ln = spec("LayerNormalization");
  r = run_op(ln, {in(testing_ref::iota_f32({2, 3})), cst(testing_ref::iota_f32({4}))});
  ASSERT_FALSE(r.is_ok());
  OpSpec fg = spec("FusedGemm", kMedqDomain);
  fg.attrs = {Attribute::make_string("activation", "Swish2")};
  r = run_op(fg, {in(testing_ref::iota_f32({2, 3})), in(testing_ref::iota_f32({3, 4}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("Swish2"), std::string::npos) << r.status().message();
}

TEST(RefMatMul, EinsumGemmPathMatchesGeneral) {
  // float32 two-operand equations take the GEMM path; float64 the general loop.
  std::mt19937 rng(3);
  struct Case {
    const char* eq;
    Shape a, b;
  } cases[] = {{"bhqd,bhkd->bhqk", {2, 3, 4, 5}, {2, 3, 6, 5}},
               {"...ij,...jk", {2, 3, 4}, {2, 4, 5}},
               {"ik,kj->ji", {3, 4}, {4, 2}},
               {"bn,anm->bam", {2, 3}, {4, 3, 5}},
               {"ij,ij->i", {3, 4}, {3, 4}},
               {"ij,jk", {3, 4}, {1, 2}}};
  for (const auto& c : cases) {
    Tensor a = testing_ref::random_tensor(c.a, rng), b = testing_ref::random_tensor(c.b, rng);
    OpSpec s = spec("Einsum");
    s.attrs = {Attribute::make_string("equation", c.eq)};
    auto r32 = run_op(s, {in(a), in(b)});
    auto r64 = run_op(s, {in(a.cast(DataType::kFloat64)), in(b.cast(DataType::kFloat64))});
    if (std::string(c.eq) == "ij,jk") {  // mismatched j: an error naming the node
      ASSERT_FALSE(r32.is_ok());
      EXPECT_NE(r32.status().message().find("Einsum 'node0'"), std::string::npos) << r32.status().message();
      continue;
    }
    ASSERT_TRUE(r32.is_ok()) << c.eq << ": " << r32.status().message();
    ASSERT_TRUE(r64.is_ok()) << c.eq << ": " << r64.status().message();
    EXPECT_EQ(r32.value()[0].shape(), r64.value()[0].shape()) << c.eq;
    expect_near(r32.value()[0], r64.value()[0].to_f32_vector(), 1e-5f);
  }
}

TEST(RefMatMul, OutputGarbageIsOverwritten) {
  // Arena outputs hold stale data: beta = 0 GEMMs must not read it.
  std::mt19937 rng(5);
  Graph g;
  Node n;
  n.name = "mm";
  n.op_type = "MatMul";
  uint32_t a = g.add_value("a"), b = g.add_value("b"), y = g.add_value("y");
  g.inputs = {a, b};
  g.outputs = {y};
  n.inputs = {a, b};
  n.outputs = {y};
  g.add_node(n);
  ASSERT_TRUE(g.finalize().is_ok());
  auto k = KernelRegistry::global().create(KernelCreateInfo{g.nodes[0], g, 17}, {"ref"});
  ASSERT_TRUE(k.is_ok()) << k.status().message();
  Tensor ta = testing_ref::random_tensor({3, 33, 40}, rng), tb = testing_ref::random_tensor({40, 50}, rng);
  TensorList kin{&ta, &tb};
  std::vector<TensorDesc> d(1);
  ASSERT_TRUE(k.value()->infer(kin, d).is_ok());
  Tensor ty(d[0].dtype, d[0].shape);
  for (int64_t i = 0; i < ty.numel(); ++i) ty.data<float>()[i] = NAN;
  std::vector<Tensor*> kout{&ty};
  RunContext ctx;
  ctx.num_threads = 2;
  ASSERT_TRUE(k.value()->run(kin, kout, ctx).is_ok());
  expect_near(ty, naive_mm(ta.data<float>(), tb.data<float>(), 99, 50, 40), 1e-4f);
}

// ---------------------------------------------------------------- ONNX node conformance

bool tensors_close(const Tensor& got, const Tensor& want, std::string* why) {
  if (got.dtype() != want.dtype()) {
    *why = std::string("dtype ") + dtype_name(got.dtype()) + " vs " + dtype_name(want.dtype());
    return false;
  }
  if (got.shape() != want.shape()) {
    *why = "shape " + shape_str(got.shape()) + " vs " + shape_str(want.shape());
    return false;
  }
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get_f64(i), w = want.get_f64(i);
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && g == w) continue;
    if (!(std::fabs(g - w) <= 1e-4 + 1e-4 * std::fabs(w))) {
      *why = "element " + std::to_string(i) + ": " + std::to_string(g) + " vs " + std::to_string(w);
      return false;
    }
  }
  return true;
}

// Runs one backend test case; empty string on success.
std::string run_case(const std::string& dir) {
  auto m = load_model(dir + "/model.onnx");
  if (!m.is_ok()) return "load: " + m.status().message();
  SessionOptions opts;
  opts.optimize = false;
  opts.num_threads = 2;
  opts.backends = {"ref"};
  auto s = Session::create(m.value(), opts);
  if (!s.is_ok()) return "create: " + s.status().message();
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < s.value()->input_names().size(); ++i) {
    auto t = load_tensor_pb(dir + "/test_data_set_0/input_" + std::to_string(i) + ".pb");
    if (!t.is_ok()) return "input: " + t.status().message();
    inputs.push_back(t.value());
  }
  auto out = s.value()->run(inputs);
  if (!out.is_ok()) return "run: " + out.status().message();
  for (size_t i = 0; i < out.value().size(); ++i) {
    auto w = load_tensor_pb(dir + "/test_data_set_0/output_" + std::to_string(i) + ".pb");
    if (!w.is_ok()) return "output: " + w.status().message();
    std::string why;
    if (!tensors_close(out.value()[i], w.value(), &why)) return "output " + std::to_string(i) + ": " + why;
  }
  return "";
}

TEST(RefReduceNormConformance, OnnxNodeCases) {
  const std::string root = std::string(MEDQ_ONNX_TESTDATA) + "/node";
  DIR* d = opendir(root.c_str());
  if (!d) GTEST_SKIP() << "no ONNX test data at " << root;
  const char* prefixes[] = {"test_reduce_",   "test_argmax",       "test_argmin",     "test_softmax",
                            "test_logsoftmax", "test_hardmax",      "test_batchnorm",  "test_instancenorm",
                            "test_layer_normalization", "test_lpnorm", "test_lrn",      "test_mvn",
                            "test_matmul",     "test_gemm",         "test_einsum",     "test_cumsum",
                            "test_top_k"};
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.find("_expanded") != std::string::npos) continue;  // decomposed into other ops
    for (const char* p : prefixes)
      if (n.rfind(p, 0) == 0) names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  int passed = 0, skipped = 0;
  for (const auto& n : names) {
    const std::string err = run_case(root + "/" + n);
    if (err.find("model uses opset") != std::string::npos) {
      ++skipped;  // opset < 7 models are rejected by the loader
      continue;
    }
    if (err.empty()) ++passed;
    else ADD_FAILURE() << n << ": " << err;
  }
  std::printf("reduce/norm/matmul node cases: %d / %zu passed, %d skipped (opset < 7)\n", passed,
              names.size() - skipped, skipped);
}

}  // namespace
}  // namespace medq
