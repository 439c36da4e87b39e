// oneDNN kernels ("dnnl" backend) against the reference kernels / a naive
// oracle: random Conv configurations (groups, depthwise, strides, pads,
// dilations, 1x1, bias, fused activation and residual sum), pools, Gemm,
// MatMul; a concurrency check; a timing print; and a whole-model comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "kernels/dnnl/dnnl_layout.h"
#include "ops/fused.h"
#include "ref_op_runner.h"
#include "onnx/model_io.h"
#include "runtime/session.h"

// Case tables below list only the leading fields they need.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace medq {
namespace {

using testing_ref::cst;
using testing_ref::in;
using testing_ref::none;
using testing_ref::OpInput;
using testing_ref::OpSpec;
using testing_ref::random_tensor;
using testing_ref::run_op;

// |a - b| <= tol * max(1, max |b|) elementwise.
void expect_close(const Tensor& a, const Tensor& b, float tol, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float scale = 1.f;
  for (int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, std::fabs(pb[i]));
  int bad = 0;
  for (int64_t i = 0; i < a.numel() && bad < 5; ++i) {
    if (!(std::fabs(pa[i] - pb[i]) <= tol * scale)) {
      ADD_FAILURE() << what << ": element " << i << " dnnl " << pa[i] << " ref " << pb[i];
      ++bad;
    }
  }
}

Tensor run_one(OpSpec spec, const std::vector<OpInput>& inputs, const std::vector<std::string>& backends,
               int num_outputs = 1) {
  spec.backends = backends;
  spec.num_outputs = num_outputs;
  auto r = run_op(spec, inputs);
  EXPECT_TRUE(r.is_ok()) << r.status().message();
  if (!r.is_ok()) return Tensor();
  return r.value()[0];
}

void compare(const OpSpec& spec, const std::vector<OpInput>& inputs, const std::string& what, float tol = 1e-4f) {
  Tensor d = run_one(spec, inputs, {"dnnl"});
  Tensor r = run_one(spec, inputs, {"ref"});
  if (!d.defined() || !r.defined()) {
    ADD_FAILURE() << what;
    return;
  }
  expect_close(d, r, tol, what);
}

// ------------------------------------------------------------------ Conv

struct ConvCase {
  Shape x;       // N, C, spatial...
  int64_t m;     // output channels
  Shape k;       // kernel spatial
  int64_t group = 1;
  std::vector<int64_t> strides, pads, dilations;
  std::string auto_pad;
  bool bias = true;
  std::string act;  // "" = plain Conv unless sum
  std::vector<float> act_params;
  bool sum = false;
};

std::string describe(const ConvCase& c) {
  std::string s = "Conv x" + shape_str(c.x) + " m" + std::to_string(c.m) + " k" + shape_str(c.k) + " g" +
                  std::to_string(c.group) + " s" + shape_str(c.strides) + " p" + shape_str(c.pads) + " d" +
                  shape_str(c.dilations) + " " + c.auto_pad + (c.bias ? " bias" : "") + " act=" + c.act +
                  (c.sum ? " sum" : "");
  return s;
}

void check_conv(const ConvCase& c, std::mt19937& rng) {
  OpSpec spec;
  const bool fused = !c.act.empty() || c.sum;
  spec.op_type = fused ? "FusedConv" : "Conv";
  spec.domain = fused ? kMedqDomain : "";
  spec.attrs.push_back(Attribute::make_int("group", c.group));
  spec.attrs.push_back(Attribute::make_ints("kernel_shape", c.k));
  if (!c.strides.empty()) spec.attrs.push_back(Attribute::make_ints("strides", c.strides));
  if (!c.pads.empty()) spec.attrs.push_back(Attribute::make_ints("pads", c.pads));
  if (!c.dilations.empty()) spec.attrs.push_back(Attribute::make_ints("dilations", c.dilations));
  if (!c.auto_pad.empty()) spec.attrs.push_back(Attribute::make_string("auto_pad", c.auto_pad));
  if (fused) {
    spec.attrs.push_back(Attribute::make_string("activation", c.act));
    spec.attrs.push_back(Attribute::make_floats("activation_params", c.act_params));
  }
  Shape ws = {c.m, c.x[1] / c.group};
  ws.insert(ws.end(), c.k.begin(), c.k.end());
  std::vector<OpInput> inputs = {in(random_tensor(c.x, rng)), cst(random_tensor(ws, rng))};
  if (c.bias) inputs.push_back(cst(random_tensor({c.m}, rng)));
  else if (c.sum) inputs.push_back(none());
  if (c.sum) {
    // Output shape from the ref kernel run without the sum.
    OpSpec plain = spec;
    plain.op_type = "Conv";
    plain.domain = "";
    plain.attrs.erase(plain.attrs.end() - 2, plain.attrs.end());
    std::vector<OpInput> pin(inputs.begin(), inputs.begin() + 2);
    Tensor y = run_one(plain, pin, {"ref"});
    ASSERT_TRUE(y.defined());
    inputs.push_back(in(random_tensor(y.shape(), rng)));
  }
  compare(spec, inputs, describe(c));
}

TEST(Dnnl, ConvFixedCases) {
  std::mt19937 rng(1);
  std::vector<ConvCase> cases = {
      {{1, 3, 16, 16}, 8, {3, 3}, 1, {1, 1}, {1, 1, 1, 1}},
      {{2, 16, 12, 10}, 32, {1, 1}},                                         // 1x1
      {{1, 16, 15, 15}, 16, {3, 3}, 16, {2, 2}, {1, 1, 1, 1}},              // depthwise s2
      {{1, 32, 9, 9}, 32, {3, 3}, 32, {}, {1, 1, 1, 1}, {}, "", false, "Clip", {0.f, 6.f}},  // dw relu6
      {{1, 8, 11, 13}, 12, {3, 3}, 4, {1, 2}, {0, 1, 2, 1}, {2, 1}},           // groups, asym pads, dil
      {{1, 4, 10, 10}, 6, {3, 3}, 1, {2, 2}, {}, {}, "SAME_UPPER"},
      {{1, 4, 10, 10}, 6, {2, 2}, 1, {2, 2}, {}, {}, "SAME_LOWER"},
      {{1, 4, 11, 11}, 6, {4, 4}, 1, {3, 3}, {}, {}, "SAME_LOWER"},
      {{1, 4, 10, 9}, 6, {3, 2}, 1, {1, 1}, {}, {}, "VALID", false},
      {{1, 3, 32, 32}, 16, {7, 7}, 1, {2, 2}, {3, 3, 3, 3}, {}, "", true, "Relu"},  // resnet stem
      {{1, 16, 8, 8}, 16, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "Relu", {}, true},  // residual
      {{1, 16, 8, 8}, 16, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", false, "", {}, true},     // sum only
      {{2, 8, 7, 7}, 16, {1, 1}, 1, {2, 2}, {}, {}, "", true, "LeakyRelu", {0.1f}},
      {{1, 8, 7, 7}, 8, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "Sigmoid"},
      {{1, 8, 7, 7}, 8, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "HardSigmoid", {0.2f, 0.5f}},
      {{1, 8, 7, 7}, 8, {3, 3}, 2, {}, {1, 1, 1, 1}, {}, "", true, "HardSwish"},
      {{1, 8, 7, 7}, 8, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "Tanh"},
      {{1, 8, 7, 7}, 8, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "SiLU"},
      {{1, 8, 7, 7}, 8, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "Gelu"},
      {{1, 8, 7, 7}, 8, {3, 3}, 1, {}, {1, 1, 1, 1}, {}, "", true, "Clip", {-0.5f, 0.5f}, true},
      {{2, 6, 20}, 4, {3}, 2, {2}, {1, 0}, {2}},                          // 1-D
      {{1, 4, 6, 7, 5}, 5, {3, 3, 3}, 1, {1, 2, 1}, {1, 1, 1, 1, 1, 1}},  // 3-D
  };
  for (const auto& c : cases) check_conv(c, rng);
}

TEST(Dnnl, ConvRandomCases) {
  std::mt19937 rng(42);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const char* acts[] = {"", "Relu", "Clip"};
  for (int t = 0; t < 40; ++t) {
    ConvCase c;
    const int kind = pick(0, 3);  // 0: dense, 1: grouped, 2: depthwise, 3: 1x1
    int64_t group = 1, cin = pick(1, 12), m = pick(1, 12);
    if (kind == 1) {
      group = pick(2, 4);
      cin = group * pick(1, 4);
      m = group * pick(1, 4);
    } else if (kind == 2) {
      group = cin = m = pick(2, 24);
    }
    const int64_t kh = kind == 3 ? 1 : pick(1, 5), kw = kind == 3 ? 1 : pick(1, 5);
    const int64_t sh = pick(1, 3), sw = pick(1, 3), dh = pick(1, 2), dw = pick(1, 2);
    c.x = {pick(1, 2), cin, pick(6, 20), pick(6, 20)};
    c.m = m;
    c.k = {kh, kw};
    c.group = group;
    c.strides = {sh, sw};
    c.dilations = {dh, dw};
    const int pad_mode = pick(0, 3);
    if (pad_mode == 0) c.pads = {pick(0, 2), pick(0, 2), pick(0, 2), pick(0, 2)};
    else if (pad_mode == 1) c.auto_pad = "SAME_UPPER";
    else if (pad_mode == 2) c.auto_pad = "SAME_LOWER";
    else c.auto_pad = "VALID";
    c.bias = pick(0, 1) == 1;
    c.act = acts[pick(0, 2)];
    if (c.act == "Clip") c.act_params = {-0.3f, 0.7f};
    c.sum = pick(0, 3) == 0;
    check_conv(c, rng);
  }
}

TEST(Dnnl, ConvFallsBackForNonConstantWeights) {
  std::mt19937 rng(3);
  OpSpec spec;
  spec.op_type = "Conv";
  spec.attrs = {Attribute::make_ints("kernel_shape", {3, 3})};
  std::vector<OpInput> inputs = {in(random_tensor({1, 2, 5, 5}, rng)), in(random_tensor({3, 2, 3, 3}, rng))};
  spec.backends = {"dnnl"};
  auto r = run_op(spec, inputs);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << r.status().message();
  spec.backends = {"dnnl", "ref"};
  EXPECT_TRUE(run_op(spec, inputs).is_ok());
}

TEST(Dnnl, ConvErrorsNameTheNode) {
  std::mt19937 rng(3);
  OpSpec spec;
  spec.op_type = "Conv";
  spec.backends = {"dnnl"};
  spec.attrs = {Attribute::make_ints("kernel_shape", {3, 3})};
  auto r = run_op(spec, {in(random_tensor({1, 4, 5, 5}, rng)), cst(random_tensor({3, 2, 3, 3}, rng))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("Conv 'node0'"), std::string::npos) << r.status().message();
}

// ------------------------------------------------------------------ Pools

TEST(Dnnl, Pools) {
  std::mt19937 rng(7);
  struct PoolCase {
    std::string op;
    Shape x;
    std::vector<Attribute> attrs;
  };
  using A = Attribute;
  std::vector<PoolCase> cases = {
      {"MaxPool", {1, 8, 16, 16}, {A::make_ints("kernel_shape", {3, 3}), A::make_ints("strides", {2, 2}),
                                   A::make_ints("pads", {1, 1, 1, 1})}},
      {"MaxPool", {2, 3, 9, 9}, {A::make_ints("kernel_shape", {2, 2}), A::make_ints("strides", {2, 2}),
                                 A::make_int("ceil_mode", 1)}},
      {"MaxPool", {1, 3, 10, 11}, {A::make_ints("kernel_shape", {3, 2}), A::make_string("auto_pad", "SAME_UPPER"),
                                   A::make_ints("strides", {2, 3})}},
      {"MaxPool", {1, 3, 12, 12}, {A::make_ints("kernel_shape", {2, 2}), A::make_ints("dilations", {2, 2})}},
      {"MaxPool", {1, 2, 20}, {A::make_ints("kernel_shape", {3}), A::make_ints("strides", {2})}},
      {"MaxPool", {1, 2, 6, 7, 8}, {A::make_ints("kernel_shape", {2, 2, 2})}},
      {"AveragePool", {1, 4, 9, 9}, {A::make_ints("kernel_shape", {3, 3}), A::make_ints("pads", {1, 1, 1, 1})}},
      {"AveragePool", {1, 4, 9, 9}, {A::make_ints("kernel_shape", {3, 3}), A::make_ints("pads", {1, 0, 2, 1}),
                                     A::make_int("count_include_pad", 1)}},
      {"AveragePool", {1, 4, 10, 10}, {A::make_ints("kernel_shape", {3, 3}), A::make_ints("strides", {2, 2}),
                                       A::make_int("ceil_mode", 1), A::make_ints("pads", {1, 1, 1, 1})}},
      {"AveragePool", {1, 4, 10, 10}, {A::make_ints("kernel_shape", {3, 3}), A::make_string("auto_pad", "SAME_LOWER"),
                                       A::make_ints("strides", {2, 2})}},
      {"GlobalAveragePool", {2, 16, 7, 7}, {}},
      {"GlobalMaxPool", {2, 16, 5, 6}, {}},
      {"GlobalAveragePool", {1, 8, 4, 3, 5}, {}},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.op;
    spec.attrs = c.attrs;
    compare(spec, {in(random_tensor(c.x, rng))}, c.op + " " + shape_str(c.x));
  }
}

TEST(Dnnl, MaxPoolIndicesFallsBack) {
  std::mt19937 rng(8);
  OpSpec spec;
  spec.op_type = "MaxPool";
  spec.attrs = {Attribute::make_ints("kernel_shape", {2, 2})};
  spec.num_outputs = 2;
  spec.backends = {"dnnl"};
  std::vector<OpInput> x = {in(random_tensor({1, 2, 4, 4}, rng))};
  auto r = run_op(spec, x);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  spec.backends = {"dnnl", "ref"};
  EXPECT_TRUE(run_op(spec, x).is_ok());
}

// ------------------------------------------------------------------ Gemm / MatMul

// Naive oracle for Gemm: Y = act(alpha * op(A) op(B) + beta * C).
Tensor naive_gemm(const Tensor& a, const Tensor& b, const Tensor* c, float alpha, float beta, bool ta, bool tb,
                  bool relu) {
  const int64_t M = ta ? a.dim(1) : a.dim(0), K = ta ? a.dim(0) : a.dim(1), N = tb ? b.dim(0) : b.dim(1);
  Tensor y(DataType::kFloat32, {M, N});
  Shape cs = c ? c->shape() : Shape{};
  while (cs.size() < 2) cs.insert(cs.begin(), 1);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += double(a.data<float>()[ta ? k * M + i : i * K + k]) * b.data<float>()[tb ? j * K + k : k * N + j];
      double v = alpha * acc;
      if (c) v += beta * c->data<float>()[(cs[0] == 1 ? 0 : i) * cs[1] + (cs[1] == 1 ? 0 : j)];
      if (relu && v < 0) v = 0;
      y.data<float>()[i * N + j] = float(v);
    }
  return y;
}

TEST(Dnnl, Gemm) {
  std::mt19937 rng(11);
  struct GemmCase {
    int64_t M, K, N;
    bool ta, tb;
    float alpha, beta;
    Shape c;  // empty: no C
    bool const_b, const_c, fused_relu;
  };
  std::vector<GemmCase> cases = {
      {1, 512, 10, false, true, 1.f, 1.f, {10}, true, true, false},  // classifier head
      {4, 64, 33, false, false, 0.5f, 2.f, {4, 33}, true, true, false},
      {5, 17, 9, true, true, 1.f, 1.f, {5, 1}, true, false, false},
      {3, 20, 7, true, false, 1.f, 1.f, {}, false, false, false},
      {6, 8, 5, false, true, 1.f, 1.f, {1, 5}, false, false, true},
      {2, 8, 5, false, false, 1.f, 0.5f, {}, true, false, true},
      {3, 8, 5, false, false, 1.f, 1.f, {1}, true, true, false},
      // Few outputs over a long reduction (constant B): medq's skinny_gemm, several K chunks.
      {8, 40000, 2, false, true, 1.f, 1.f, {2}, true, true, false},
      {1, 25000, 3, false, false, 0.5f, 2.f, {1, 3}, true, true, false},
      {3, 8192, 8, false, true, 1.f, 1.f, {3, 1}, true, false, true},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.fused_relu ? "FusedGemm" : "Gemm";
    spec.domain = c.fused_relu ? kMedqDomain : "";
    spec.attrs = {Attribute::make_float("alpha", c.alpha), Attribute::make_float("beta", c.beta),
                  Attribute::make_int("transA", c.ta), Attribute::make_int("transB", c.tb)};
    if (c.fused_relu) spec.attrs.push_back(Attribute::make_string("activation", "Relu"));
    Tensor a = random_tensor(c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K}, rng);
    Tensor b = random_tensor(c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N}, rng);
    Tensor cc = c.c.empty() ? Tensor() : random_tensor(c.c, rng);
    std::vector<OpInput> inputs = {in(a), c.const_b ? cst(b) : in(b)};
    if (cc.defined()) inputs.push_back(c.const_c ? cst(cc) : in(cc));
    Tensor want = naive_gemm(a, b, cc.defined() ? &cc : nullptr, c.alpha, c.beta, c.ta, c.tb, c.fused_relu);
    Tensor got = run_one(spec, inputs, {"dnnl"});
    if (got.defined()) expect_close(got, want, 1e-4f, "Gemm M" + std::to_string(c.M));
  }
}

// Naive numpy matmul (ranks >= 1, broadcasting batch dims).
Tensor naive_matmul(const Tensor& a0, const Tensor& b0, const Tensor* bias, const Shape& ys) {
  Shape as = a0.shape(), bs = b0.shape();
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const size_t r = std::max(as.size(), bs.size());
  while (as.size() < r) as.insert(as.begin(), 1);
  while (bs.size() < r) bs.insert(bs.begin(), 1);
  const int64_t M = as[r - 2], K = as[r - 1], N = bs[r - 1];
  Shape batch;
  for (size_t i = 0; i + 2 < r; ++i) batch.push_back(std::max(as[i], bs[i]));
  const int64_t nb = shape_numel(batch);
  Tensor y(DataType::kFloat32, ys);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t ao = 0, bo = 0, rem = bi, am = 1, bm = 1;
    for (int d = static_cast<int>(batch.size()) - 1; d >= 0; --d) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      ao += (as[d] == 1 ? 0 : idx) * am;
      bo += (bs[d] == 1 ? 0 : idx) * bm;
      am *= as[d];
      bm *= bs[d];
    }
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = bias ? bias->data<float>()[j] : 0.0;
        for (int64_t k = 0; k < K; ++k)
          acc += double(a0.data<float>()[ao * M * K + i * K + k]) * b0.data<float>()[bo * K * N + k * N + j];
        y.data<float>()[(bi * M + i) * N + j] = float(acc);
      }
  }
  return y;
}

TEST(Dnnl, MatMul) {
  std::mt19937 rng(12);
  struct MMCase {
    Shape a, b, y;
    bool const_b, bias;
  };
  std::vector<MMCase> cases = {
      {{4, 16}, {16, 8}, {4, 8}, true, false},
      {{2, 3, 16}, {16, 8}, {2, 3, 8}, true, true},  // transformer-style, folded to 2-D
      {{2, 3, 16}, {16, 8}, {2, 3, 8}, false, false},
      {{2, 3, 5, 4}, {3, 4, 6}, {2, 3, 5, 6}, false, false},  // batched with broadcast
      {{1, 5, 4}, {3, 4, 6}, {3, 5, 6}, true, false},
      {{16}, {16, 8}, {8}, true, false},
      {{3, 16}, {16}, {3}, false, false},
      {{2, 4, 7}, {7}, {2, 4}, true, false},
      {{7}, {2, 7, 3}, {2, 3}, false, false},
      // Constant B with N % 16 == 0: medq's 6x16 GEMM on CPUs without AVX-512 (M not a
      // multiple of 6, K not of 8, several panels, one row, more rows than one chunk).
      {{2, 7, 24}, {24, 32}, {2, 7, 32}, true, true},
      {{13, 5}, {5, 16}, {13, 16}, true, false},
      {{1, 64}, {64, 48}, {1, 48}, true, true},
      {{3, 197, 24}, {24, 64}, {3, 197, 64}, true, true},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.bias ? "FusedMatMul" : "MatMul";
    spec.domain = c.bias ? kMedqDomain : "";
    Tensor a = random_tensor(c.a, rng), b = random_tensor(c.b, rng);
    std::vector<OpInput> inputs = {in(a), c.const_b ? cst(b) : in(b)};
    Tensor bias;
    if (c.bias) {
      bias = random_tensor({c.b.back()}, rng);
      inputs.push_back(cst(bias));
    }
    Tensor want = naive_matmul(a, b, c.bias ? &bias : nullptr, c.y);
    Tensor got = run_one(spec, inputs, {"dnnl"});
    if (got.defined()) expect_close(got, want, 1e-4f, "MatMul " + shape_str(c.a) + " x " + shape_str(c.b));
  }
}

TEST(Dnnl, SoftmaxMatchesRef) {
  std::mt19937 rng(13);
  struct SCase {
    const char* op;
    Shape x;
    int64_t axis, opset;
  };
  const std::vector<SCase> cases = {
      {"Softmax", {2, 12, 17, 17}, -1, 13},  // attention rows
      {"Softmax", {3, 10}, 1, 13},           {"Softmax", {2, 5, 7}, 1, 13},  // middle axis
      {"Softmax", {2, 5, 7}, 0, 17},         {"LogSoftmax", {4, 33}, -1, 13},
      {"LogSoftmax", {2, 3, 4}, 1, 11},      // opset < 13: softmax over dims[1:] flattened
      {"Softmax", {2, 3, 4}, 1, 11},         {"Softmax", {1, 1000}, -1, 13},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.op;
    spec.opset = c.opset;
    spec.attrs = {Attribute::make_int("axis", c.axis)};
    compare(spec, {in(random_tensor(c.x, rng, -8.f, 8.f))},
            std::string(c.op) + " " + shape_str(c.x) + " axis " + std::to_string(c.axis) + " opset " +
                std::to_string(c.opset),
            1e-5f);
  }
}

TEST(Dnnl, LayerNormalizationMatchesRef) {
  std::mt19937 rng(15);
  struct LCase {
    Shape x, scale;
    int64_t axis;
    bool bias;
  };
  for (const LCase& c : {LCase{{2, 197, 64}, {64}, -1, true}, LCase{{1, 7, 7, 24}, {24}, 3, false},
                         LCase{{2, 3, 5, 8}, {5, 8}, -2, true}, LCase{{3, 16}, {16}, 1, true}}) {
    OpSpec spec;
    spec.op_type = "LayerNormalization";
    spec.attrs = {Attribute::make_int("axis", c.axis), Attribute::make_float("epsilon", 1e-5f)};
    std::vector<OpInput> inputs = {in(random_tensor(c.x, rng, -4.f, 4.f)), cst(random_tensor(c.scale, rng))};
    if (c.bias) inputs.push_back(cst(random_tensor(c.scale, rng)));
    compare(spec, inputs, "LayerNormalization " + shape_str(c.x) + " axis " + std::to_string(c.axis), 1e-5f);
  }
}

TEST(Dnnl, BinaryWithOnlyAReferenceBroadcastDeclines) {
  // [N, H, W, C] / [N, H, W, 1] (LayerNorm decomposed below opset 17): oneDNN 2.6 has only its
  // reference kernel for it, so the dnnl kernel declines and ref runs it (30x faster).
  std::mt19937 rng(14);
  OpSpec spec;
  spec.op_type = "Div";
  spec.attrs = {Attribute::make_ints(kInLayoutsAttr, {0, 0}), Attribute::make_ints(kOutLayoutsAttr, {0})};
  const std::vector<OpInput> inputs = {in(random_tensor({1, 6, 5, 16}, rng)), in(random_tensor({1, 6, 5, 1}, rng, 0.5f, 2.f))};
  spec.backends = {"dnnl"};
  auto r = run_op(spec, inputs);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << r.status().message();
  EXPECT_NE(r.status().message().find("reference kernel"), std::string::npos) << r.status().message();
  spec.backends = {"dnnl", "ref"};
  auto both = run_op(spec, inputs);
  ASSERT_TRUE(both.is_ok()) << both.status().message();
  spec.backends = {"ref"};
  auto ref = run_op(spec, inputs);
  ASSERT_TRUE(ref.is_ok());
  expect_close(both.value()[0], ref.value()[0], 0.f, "Div falls back to ref");
}

// ------------------------------------------------------------------ concurrency

TEST(Dnnl, ConcurrentRunsAreIdentical) {
  std::mt19937 rng(5);
  Graph g;
  Node n;
  n.name = "conv";
  n.op_type = "FusedConv";
  n.domain = kMedqDomain;
  n.attrs = {Attribute::make_ints("kernel_shape", {3, 3}), Attribute::make_ints("pads", {1, 1, 1, 1}),
             Attribute::make_string("activation", "Relu")};
  uint32_t x = g.add_value("x");
  g.value(x).dtype = DataType::kFloat32;
  g.inputs.push_back(x);
  uint32_t s = g.add_value("s");
  g.value(s).dtype = DataType::kFloat32;
  g.inputs.push_back(s);
  n.inputs = {x, g.add_constant("w", random_tensor({32, 16, 3, 3}, rng)), g.add_constant("b", random_tensor({32}, rng)),
              s};
  uint32_t y = g.add_value("y");
  n.outputs = {y};
  g.outputs.push_back(y);
  g.add_node(n);
  ASSERT_TRUE(g.finalize().is_ok());
  auto k = KernelRegistry::global().create(KernelCreateInfo{g.nodes[0], g, 17}, {"dnnl"});
  ASSERT_TRUE(k.is_ok()) << k.status().message();
  const Kernel& kernel = *k.value();
  EXPECT_STREQ(kernel.backend(), "dnnl");

  // Two batch sizes so threads also race on building cache entries.
  Tensor xs[2] = {random_tensor({1, 16, 20, 20}, rng), random_tensor({2, 16, 20, 20}, rng)};
  Tensor ss[2] = {random_tensor({1, 32, 20, 20}, rng), random_tensor({2, 32, 20, 20}, rng)};
  auto run_once = [&](int which) {
    TensorList kin = {&xs[which], nullptr, nullptr, &ss[which]};
    Tensor w = g.value(g.nodes[0].inputs[1]).initializer, b = g.value(g.nodes[0].inputs[2]).initializer;
    kin[1] = &w;
    kin[2] = &b;
    std::vector<TensorDesc> d;
    EXPECT_TRUE(kernel.infer(kin, d).is_ok());
    Tensor out(d[0].dtype, d[0].shape);
    std::vector<Tensor*> kout = {&out};
    RunContext ctx;
    ctx.num_threads = 1;
    Status st = kernel.run(kin, kout, ctx);
    EXPECT_TRUE(st.is_ok()) << st.message();
    return out;
  };
  std::vector<Tensor> results(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 2; ++rep) results[t * 2 + rep] = run_once(t % 2);
    });
  for (auto& th : threads) th.join();
  Tensor want[2] = {run_once(0), run_once(1)};
  for (int t = 0; t < 4; ++t)
    for (int rep = 0; rep < 2; ++rep) {
      const Tensor& r = results[t * 2 + rep];
      const Tensor& w = want[t % 2];
      ASSERT_EQ(r.shape(), w.shape());
      EXPECT_EQ(0, std::memcmp(r.raw(), w.raw(), w.nbytes())) << "thread " << t;
    }
}

// ------------------------------------------------------------------ timing (print only)

// Best-of-`reps` milliseconds of one kernel's run() with `threads` threads
// (the minimum is the least disturbed by other load on a shared machine).
double time_ms(const OpSpec& spec, const std::vector<OpInput>& inputs, const std::vector<std::string>& backends,
               int reps, int threads) {
  // run_op builds a fresh kernel each call; time one kernel directly instead.
  Graph g;
  Node n;
  n.name = "t";
  n.op_type = spec.op_type;
  n.domain = spec.domain;
  n.attrs = spec.attrs;
  std::vector<Tensor> vals;
  for (size_t i = 0; i < inputs.size(); ++i) {
    uint32_t id;
    if (inputs[i].constant) {
      id = g.add_constant("c" + std::to_string(i), inputs[i].t);
    } else {
      id = g.add_value("i" + std::to_string(i));
      g.value(id).dtype = DataType::kFloat32;
      g.inputs.push_back(id);
    }
    n.inputs.push_back(id);
  }
  uint32_t y = g.add_value("y");
  n.outputs = {y};
  g.outputs.push_back(y);
  g.add_node(n);
  if (!g.finalize().is_ok()) return -1;
  auto k = KernelRegistry::global().create(KernelCreateInfo{g.nodes[0], g, 17}, backends);
  if (!k.is_ok()) return -1;
  TensorList kin;
  for (const auto& oi : inputs) kin.push_back(&oi.t);
  std::vector<TensorDesc> d;
  if (!k.value()->infer(kin, d).is_ok()) return -1;
  Tensor out(d[0].dtype, d[0].shape);
  std::vector<Tensor*> kout = {&out};
  RunContext ctx;
  ctx.num_threads = threads;
  k.value()->run(kin, kout, ctx);  // warm-up (builds the primitive)
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    k.value()->run(kin, kout, ctx);
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[0];
}

TEST(Dnnl, TimingResnetConvPrintOnly) {
  std::mt19937 rng(9);
  struct T {
    const char* name;
    Shape x, w;
    int64_t stride, pad, group;
  };
  std::vector<T> layers = {
      {"3x3 64->64 56x56", {1, 64, 56, 56}, {64, 64, 3, 3}, 1, 1, 1},
      {"3x3 128->128 28x28", {1, 128, 28, 28}, {128, 128, 3, 3}, 1, 1, 1},
      {"1x1 64->256 56x56", {1, 64, 56, 56}, {256, 64, 1, 1}, 1, 0, 1},
      {"dw3x3 128 56x56", {1, 128, 56, 56}, {128, 1, 3, 3}, 1, 1, 128},
  };
  for (const auto& l : layers) {
    OpSpec spec;
    spec.op_type = "FusedConv";
    spec.domain = kMedqDomain;
    spec.attrs = {Attribute::make_ints("kernel_shape", {l.w[2], l.w[3]}),
                  Attribute::make_ints("pads", {l.pad, l.pad, l.pad, l.pad}),
                  Attribute::make_ints("strides", {l.stride, l.stride}), Attribute::make_int("group", l.group),
                  Attribute::make_string("activation", "Relu")};
    std::vector<OpInput> inputs = {in(random_tensor(l.x, rng)), cst(random_tensor(l.w, rng)),
                                   cst(random_tensor({l.w[0]}, rng))};
    for (int threads : {1, 2}) {
      const double td = time_ms(spec, inputs, {"dnnl"}, 15, threads);
      const double tr = time_ms(spec, inputs, {"ref"}, 3, threads);
      std::printf("[timing] FusedConv %-20s %d thr: dnnl %.3f ms  ref %.3f ms  speedup %.2fx\n", l.name, threads, td,
                  tr, tr / td);
    }
  }
}

// ------------------------------------------------------------------ blocked layouts
// Kernels run on data stored nhwc / nChw16c (layout markers as set by the
// assign_layouts pass); the test converts inputs and outputs itself and
// compares with the ref kernel on plain data.

constexpr int64_t kNhwc = static_cast<int64_t>(Layout::kNhwc);
constexpr int64_t kB16 = static_cast<int64_t>(Layout::kNChw16c);

// Offset of logical element (n, c, h, w) of an [N,C,H,W] tensor stored in layout l.
int64_t layout_offset(const Shape& s, int64_t l, int64_t n, int64_t c, int64_t h, int64_t w) {
  const int64_t C = s[1], H = s[2], W = s[3];
  if (l == kNhwc) return ((n * H + h) * W + w) * C + c;
  if (l == kB16) return (((n * (C / 16) + c / 16) * H + h) * W + w) * 16 + c % 16;
  if (l == static_cast<int64_t>(Layout::kNChw8c)) return (((n * (C / 8) + c / 8) * H + h) * W + w) * 8 + c % 8;
  return ((n * C + c) * H + h) * W + w;
}

// Plain -> layout l (to_layout) or layout l -> plain (!to_layout); same shape.
Tensor convert(const Tensor& t, int64_t l, bool to_layout) {
  if (l == 0) return t;
  EXPECT_EQ(t.rank(), 4);
  Tensor r(DataType::kFloat32, t.shape());
  const Shape& s = t.shape();
  for (int64_t n = 0; n < s[0]; ++n)
    for (int64_t c = 0; c < s[1]; ++c)
      for (int64_t h = 0; h < s[2]; ++h)
        for (int64_t w = 0; w < s[3]; ++w) {
          const int64_t p = ((n * s[1] + c) * s[2] + h) * s[3] + w, q = layout_offset(s, l, n, c, h, w);
          if (to_layout) r.data<float>()[q] = t.data<float>()[p];
          else r.data<float>()[p] = t.data<float>()[q];
        }
  return r;
}

// Runs spec on dnnl with the given input/output layouts and on ref (plain); compares.
void compare_layouts(const OpSpec& spec, const std::vector<OpInput>& inputs, std::vector<int64_t> in_l,
                     int64_t out_l, const std::string& what, float tol = 1e-4f) {
  OpSpec d = spec;
  in_l.resize(inputs.size(), 0);
  d.attrs.push_back(Attribute::make_ints(kInLayoutsAttr, in_l));
  d.attrs.push_back(Attribute::make_ints(kOutLayoutsAttr, {out_l}));
  std::vector<OpInput> din = inputs;
  for (size_t i = 0; i < din.size(); ++i)
    if (din[i].t.defined() && in_l[i] != 0) din[i].t = convert(din[i].t, in_l[i], true);
  std::string desc = what + " in" + shape_str(in_l) + " out " + std::to_string(out_l);
  Tensor got = run_one(d, din, {"dnnl"});
  Tensor want = run_one(spec, inputs, {"ref"});
  if (!got.defined() || !want.defined()) {
    ADD_FAILURE() << desc;
    return;
  }
  expect_close(convert(got, out_l, false), want, tol, desc);
}

TEST(DnnlLayouts, ConvBlockedSides) {
  std::mt19937 rng(31);
  struct C {
    Shape x;
    int64_t m, k, group, stride;
    bool sum;
    std::string act;
  };
  const std::vector<C> cases = {
      {{1, 16, 9, 9}, 32, 3, 1, 1, false, "Relu"},  {{2, 32, 8, 8}, 16, 1, 1, 1, true, "Relu"},
      {{1, 32, 9, 10}, 32, 3, 32, 2, false, "Clip"}, {{2, 16, 7, 7}, 32, 3, 2, 1, true, ""},
      {{1, 3, 15, 15}, 16, 3, 1, 2, false, "SiLU"},  {{1, 48, 5, 6}, 64, 1, 1, 1, false, ""},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = "FusedConv";
    spec.domain = kMedqDomain;
    spec.attrs = {Attribute::make_int("group", c.group), Attribute::make_ints("kernel_shape", {c.k, c.k}),
                  Attribute::make_ints("strides", {c.stride, c.stride}),
                  Attribute::make_ints("pads", std::vector<int64_t>(4, c.k / 2)),
                  Attribute::make_string("activation", c.act),
                  Attribute::make_floats("activation_params", c.act == "Clip" ? std::vector<float>{0.f, 6.f}
                                                                              : std::vector<float>{})};
    std::vector<OpInput> inputs = {in(random_tensor(c.x, rng)),
                                   cst(random_tensor({c.m, c.x[1] / c.group, c.k, c.k}, rng)),
                                   cst(random_tensor({c.m}, rng))};
    const int64_t oh = (c.x[2] + 2 * (c.k / 2) - c.k) / c.stride + 1, ow = (c.x[3] + 2 * (c.k / 2) - c.k) / c.stride + 1;
    if (c.sum) inputs.push_back(in(random_tensor({c.x[0], c.m, oh, ow}, rng)));
    for (int64_t l : {kNhwc, kB16}) {
      const int64_t xl = c.x[1] % 16 == 0 || l == kNhwc ? l : 0;
      const std::string what = "FusedConv x" + shape_str(c.x) + " m" + std::to_string(c.m);
      compare_layouts(spec, inputs, {xl, 0, 0, c.sum ? l : 0}, l, what);
      compare_layouts(spec, inputs, {xl, 0, 0, 0}, 0, what);      // blocked in, plain out
      compare_layouts(spec, inputs, {0, 0, 0, c.sum ? l : 0}, l, what);  // plain in, blocked out
      if (c.sum) compare_layouts(spec, inputs, {0, 0, 0, l}, 0, what);  // only the sum blocked
    }
  }
}

TEST(DnnlLayouts, PoolsBlocked) {
  std::mt19937 rng(32);
  using A = Attribute;
  struct P {
    std::string op;
    Shape x;
    std::vector<Attribute> attrs;
  };
  const std::vector<P> cases = {
      {"MaxPool", {2, 16, 11, 11}, {A::make_ints("kernel_shape", {3, 3}), A::make_ints("strides", {2, 2}),
                                    A::make_ints("pads", {1, 1, 1, 1})}},
      {"AveragePool", {1, 32, 8, 8}, {A::make_ints("kernel_shape", {2, 2}), A::make_ints("strides", {2, 2})}},
      {"GlobalAveragePool", {2, 32, 7, 7}, {}},
      {"GlobalMaxPool", {1, 16, 5, 6}, {}},
      // medq's nhwc MaxPool: 32-channel register blocks, 8-channel blocks and a scalar tail.
      {"MaxPool", {2, 48, 9, 10}, {A::make_ints("kernel_shape", {2, 2}), A::make_ints("strides", {2, 2})}},
      {"MaxPool", {1, 43, 7, 9}, {A::make_ints("kernel_shape", {3, 3}), A::make_ints("strides", {2, 2}),
                                   A::make_ints("pads", {1, 1, 1, 1})}},
      {"MaxPool", {1, 32, 6, 6}, {A::make_ints("kernel_shape", {3, 2}), A::make_ints("strides", {1, 2}),
                                   A::make_ints("pads", {1, 0, 1, 1})}},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.op;
    spec.attrs = c.attrs;
    std::vector<OpInput> inputs = {in(random_tensor(c.x, rng))};
    for (int64_t l : {kNhwc, kB16}) {
      if (l == kB16 && c.x[1] % 16 != 0) continue;
      compare_layouts(spec, inputs, {l}, c.op.rfind("Global", 0) == 0 ? 0 : l, c.op);
      compare_layouts(spec, inputs, {l}, 0, c.op);
      compare_layouts(spec, inputs, {0}, l, c.op);
    }
  }
}

TEST(DnnlLayouts, TransposeNchwNhwcSides) {
  std::mt19937 rng(37);
  const int64_t kB8 = static_cast<int64_t>(Layout::kNChw8c);
  OpSpec spec;
  spec.op_type = "Transpose";
  // NCHW value stored blocked -> plain NHWC (leaving a convolution chain).
  spec.attrs = {Attribute::make_ints("perm", {0, 2, 3, 1})};
  Tensor x = random_tensor({2, 32, 5, 7}, rng);
  for (int64_t l : {int64_t{0}, kNhwc, kB16, kB8}) compare_layouts(spec, {in(x)}, {l}, 0, "to NHWC");
  // Plain NHWC data -> NCHW value stored blocked (entering a chain).
  spec.attrs = {Attribute::make_ints("perm", {0, 3, 1, 2})};
  Tensor h = random_tensor({2, 5, 7, 32}, rng);
  for (int64_t l : {int64_t{0}, kNhwc, kB16, kB8}) compare_layouts(spec, {in(h)}, {0}, l, "to NCHW");
  // Other permutations and ranks, plain on both sides (a oneDNN reorder over strides).
  spec.attrs = {Attribute::make_ints("perm", {2, 0, 1})};
  compare_layouts(spec, {in(random_tensor({3, 4, 5}, rng))}, {0}, 0, "rank 3");
  spec.attrs = {};  // default: reversed axes
  compare_layouts(spec, {in(random_tensor({2, 3, 4, 5, 6}, rng))}, {0}, 0, "rank 5 reversed");
}

TEST(DnnlLayouts, Eltwise) {
  std::mt19937 rng(33);
  struct E {
    std::string op;
    std::vector<Attribute> attrs;
    int64_t opset;
  };
  const std::vector<E> cases = {
      {"Relu", {}, 17},
      {"LeakyRelu", {Attribute::make_float("alpha", 0.2f)}, 17},
      {"Sigmoid", {}, 17},
      {"Tanh", {}, 17},
      {"HardSwish", {}, 17},
      {"Clip", {}, 13},
      {"Clip", {Attribute::make_float("min", -0.5f), Attribute::make_float("max", 0.25f)}, 6},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.op;
    spec.attrs = c.attrs;
    spec.opset = c.opset;
    Tensor x = random_tensor({2, 32, 5, 7}, rng, -5.f, 5.f);
    std::vector<OpInput> inputs = {in(x)};
    if (c.op == "Clip" && c.opset >= 11)
      inputs = {in(x), cst(testing_ref::f32({0.f}, {})), cst(testing_ref::f32({6.f}, {}))};
    for (int64_t l : {int64_t{0}, kNhwc, kB16}) {
      compare_layouts(spec, inputs, {l}, l, c.op, 1e-5f);
      if (l) compare_layouts(spec, inputs, {l}, 0, c.op, 1e-5f);
    }
    // Plain, other ranks.
    std::vector<OpInput> r3 = inputs;
    r3[0] = in(random_tensor({3, 4, 5}, rng, -5.f, 5.f));
    compare_layouts(spec, r3, {0}, 0, c.op + " rank 3", 1e-5f);
  }
}

TEST(DnnlLayouts, Binary) {
  std::mt19937 rng(34);
  struct B {
    std::string op;
    Shape a, b;
    bool b_const;
  };
  const std::vector<B> cases = {
      {"Add", {2, 32, 6, 6}, {2, 32, 6, 6}, false}, {"Mul", {2, 32, 6, 6}, {2, 32, 1, 1}, false},
      {"Mul", {2, 32, 1, 1}, {2, 32, 6, 6}, false}, {"Sub", {1, 16, 4, 5}, {16, 1, 1}, true},
      {"Div", {1, 16, 4, 5}, {1, 16, 4, 5}, false}, {"Add", {1, 16, 4, 5}, {1}, true},
  };
  for (const auto& c : cases) {
    OpSpec spec;
    spec.op_type = c.op;
    Tensor b = c.op == "Div" ? random_tensor(c.b, rng, 0.5f, 2.f) : random_tensor(c.b, rng);
    std::vector<OpInput> inputs = {in(random_tensor(c.a, rng)), c.b_const ? cst(b) : in(b)};
    const std::string what = c.op + " " + shape_str(c.a) + " " + shape_str(c.b);
    auto full = [](const Shape& s) { return s.size() == 4 && (s[2] > 1 || s[3] > 1); };
    for (int64_t l : {int64_t{0}, kNhwc, kB16}) {
      const int64_t la = full(c.a) ? l : 0, lb = full(c.b) && !c.b_const ? l : 0;
      compare_layouts(spec, inputs, {la, lb}, l, what, 1e-5f);
      if (l) compare_layouts(spec, inputs, {la, 0}, 0, what, 1e-5f);
    }
  }
  // Plain broadcasting of lower ranks.
  OpSpec spec;
  spec.op_type = "Add";
  compare_layouts(spec, {in(random_tensor({3, 4, 5}, rng)), in(random_tensor({4, 1}, rng))}, {0, 0}, 0, "Add r3", 1e-6f);
}

TEST(DnnlLayouts, Concat) {
  std::mt19937 rng(35);
  OpSpec spec;
  spec.op_type = "Concat";
  spec.attrs = {Attribute::make_int("axis", 1)};
  std::vector<OpInput> inputs = {in(random_tensor({2, 32, 5, 5}, rng)), in(random_tensor({2, 16, 5, 5}, rng)),
                                 in(random_tensor({2, 48, 5, 5}, rng))};
  for (int64_t l : {int64_t{0}, kNhwc, kB16}) {
    compare_layouts(spec, inputs, {l, l, l}, l, "Concat", 0.f);
    compare_layouts(spec, inputs, {l, 0, l}, 0, "Concat mixed", 0.f);
  }
  // nhwc with channel counts that are not multiples of 16.
  std::vector<OpInput> odd = {in(random_tensor({1, 24, 3, 4}, rng)), in(random_tensor({1, 8, 3, 4}, rng))};
  compare_layouts(spec, odd, {kNhwc, kNhwc}, kNhwc, "Concat nhwc 24+8", 0.f);
  // Plain, other axis and rank.
  OpSpec s3 = spec;
  s3.attrs = {Attribute::make_int("axis", -1)};
  compare_layouts(s3, {in(random_tensor({2, 3, 4}, rng)), in(random_tensor({2, 3, 1}, rng))}, {0, 0}, 0,
                  "Concat r3", 0.f);
}

TEST(DnnlLayouts, BatchNormalization) {
  std::mt19937 rng(36);
  OpSpec spec;
  spec.op_type = "BatchNormalization";
  spec.attrs = {Attribute::make_float("epsilon", 1e-3f)};
  for (Shape x : {Shape{2, 32, 5, 6}, Shape{1, 16, 7, 7}, Shape{3, 8, 10}}) {
    const int64_t c = x[1];
    std::vector<OpInput> inputs = {in(random_tensor(x, rng)), cst(random_tensor({c}, rng)),
                                   cst(random_tensor({c}, rng)), cst(random_tensor({c}, rng)),
                                   cst(random_tensor({c}, rng, 0.1f, 2.f))};
    for (int64_t l : {int64_t{0}, kNhwc, kB16}) {
      if (l && x.size() != 4) continue;
      compare_layouts(spec, inputs, {l}, l, "BatchNormalization " + shape_str(x), 1e-5f);
      if (l) compare_layouts(spec, inputs, {0}, l, "BatchNormalization " + shape_str(x), 1e-5f);
    }
  }
}

TEST(DnnlLayouts, FusedBatchNormRelu) {
  std::mt19937 rng(39);
  const Shape x = {2, 32, 5, 6};
  std::vector<OpInput> inputs = {in(random_tensor(x, rng)), cst(random_tensor({32}, rng)),
                                 cst(random_tensor({32}, rng)), cst(random_tensor({32}, rng)),
                                 cst(random_tensor({32}, rng, 0.1f, 2.f))};
  OpSpec bn;
  bn.op_type = "BatchNormalization";
  Tensor want = run_one(bn, inputs, {"ref"});
  ASSERT_TRUE(want.defined());
  for (int64_t i = 0; i < want.numel(); ++i) want.data<float>()[i] = std::max(want.data<float>()[i], 0.f);
  for (int64_t l : {int64_t{0}, kNhwc, kB16}) {
    OpSpec f;
    f.op_type = "FusedBatchNorm";
    f.domain = kMedqDomain;
    f.attrs = {Attribute::make_string("activation", "Relu")};
    if (l) f.attrs.push_back(Attribute::make_ints(kInLayoutsAttr, {l})), f.attrs.push_back(Attribute::make_ints(kOutLayoutsAttr, {l}));
    std::vector<OpInput> din = inputs;
    din[0].t = convert(din[0].t, l, true);
    Tensor got = run_one(f, din, {"dnnl"});
    ASSERT_TRUE(got.defined());
    expect_close(convert(got, l, false), want, 1e-5f, "FusedBatchNorm layout " + std::to_string(l));
  }
}

TEST(DnnlLayouts, UnmarkedNodesStayOnRef) {
  // The layout-aware kernels decline nodes without markers (ref keeps running them).
  std::mt19937 rng(37);
  for (const char* op : {"Relu", "Add", "Concat", "BatchNormalization"}) {
    Graph g;
    Node n;
    n.name = "n";
    n.op_type = op;
    const uint32_t x = g.add_value("x");
    g.value(x).dtype = DataType::kFloat32;
    n.inputs = {x};
    n.outputs = {g.add_value("y")};
    g.inputs.push_back(x);
    g.outputs.push_back(n.outputs[0]);
    g.add_node(n);
    ASSERT_TRUE(g.finalize().is_ok());
    auto k = KernelRegistry::global().create(KernelCreateInfo{g.nodes[0], g, 17}, {"dnnl"});
    ASSERT_FALSE(k.is_ok()) << op;
    EXPECT_EQ(k.status().code(), StatusCode::kUnsupported) << op << ": " << k.status().message();
  }
}

TEST(DnnlLayouts, BadBlockedShapeIsAnError) {
  // A tensor that cannot be nChw16c (C = 8) reaching a kernel marked so is reported, not miscomputed.
  std::mt19937 rng(38);
  OpSpec spec;
  spec.op_type = "Relu";
  spec.backends = {"dnnl"};
  spec.attrs = {Attribute::make_ints(kInLayoutsAttr, {kB16}), Attribute::make_ints(kOutLayoutsAttr, {kB16})};
  auto r = run_op(spec, {in(random_tensor({1, 8, 4, 4}, rng))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("nChw16c"), std::string::npos) << r.status().message();
}

// ------------------------------------------------------------------ whole model

TEST(Dnnl, BrainResnet18MatchesRef) {
  const std::string path = std::string(MEDQ_SHARED_DATA) + "/models/brain_resnet18.onnx";
  if (!std::ifstream(path).good()) GTEST_SKIP() << "model not found: " << path;
  auto model = load_model(path);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  std::mt19937 rng(21);
  Tensor x = random_tensor({1, 3, 128, 128}, rng, -2.f, 2.f);
  SessionOptions ref_opts, dnnl_opts;
  ref_opts.backends = {"ref"};
  ref_opts.num_threads = dnnl_opts.num_threads = 1;
  auto ref_s = Session::create(model.value(), ref_opts);
  auto dnnl_s = Session::create(model.value(), dnnl_opts);
  if (!ref_s.is_ok() || !dnnl_s.is_ok())
    GTEST_SKIP() << "session creation failed (ops missing?): "
                 << (ref_s.is_ok() ? dnnl_s.status().message() : ref_s.status().message());
  RunStats stats;
  auto yr = ref_s.value()->run({x});
  auto yd = dnnl_s.value()->run({x}, &stats);
  if (!yr.is_ok() || !yd.is_ok())
    GTEST_SKIP() << "run failed: " << (yr.is_ok() ? yd.status().message() : yr.status().message());
  ASSERT_EQ(yr.value().size(), yd.value().size());
  for (size_t i = 0; i < yr.value().size(); ++i) expect_close(yd.value()[i], yr.value()[i], 1e-4f, "model output");
  int dnnl_nodes = 0;
  std::string others;
  for (const auto& nd : stats.nodes) {
    if (nd.backend == "dnnl") ++dnnl_nodes;
    else others += " " + nd.op_type + "(" + nd.backend + ")";
  }
  std::printf("[model] %d of %zu profiled nodes ran on dnnl; others:%s\n", dnnl_nodes, stats.nodes.size(),
              others.c_str());
  // Best-of-3 single-thread latency (print only).
  auto best_ms = [&](const Session& s) {
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      auto y = s.run({x});
      auto t1 = std::chrono::steady_clock::now();
      if (!y.is_ok()) return -1.0;
      best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return best;
  };
  const double td = best_ms(*dnnl_s.value()), tr = best_ms(*ref_s.value());
  std::printf("[timing] brain_resnet18 1x3x128x128, 1 thread: default %.2f ms  ref %.2f ms  speedup %.2fx\n", td, tr,
              tr / td);
}

}  // namespace
}  // namespace medq
