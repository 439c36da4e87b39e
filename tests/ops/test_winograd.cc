// medq's Winograd F(2x2, 3x3) convolution (kernels/dnnl/winograd.h): against a double-precision
// direct convolution over odd and even sizes, every pad combination, tiny images, bias, residual
// sum (separate and in place), activations and thread counts; then inside a session (nhwc
// layouts chosen by the pass), forced on, by default and timed by kernel tuning, against the ref backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../passes/onnx_test_builder.h"
#include "kernels/dnnl/dnnl_layout.h"
#include "kernels/dnnl/winograd.h"

namespace medq {
namespace {

using dnnl_k::Winograd3x3;
using namespace testing_onnx;

struct Case {
  int64_t N, H, W, C, K, pt, pb, pl, pr;
};

std::vector<float> uniform(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// act(conv(x, w) + b + s) in double; x nhwc, w OIHW, s/y nhwc.
std::vector<float> direct(const Case& c, const std::vector<float>& x, const std::vector<float>& w,
                          const float* b, const float* s, ActKind act, const std::vector<float>& params) {
  const int64_t OH = c.H + c.pt + c.pb - 2, OW = c.W + c.pl + c.pr - 2;
  std::vector<float> y(c.N * OH * OW * c.K);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t k = 0; k < c.K; ++k) {
          const int64_t o = ((n * OH + oy) * OW + ox) * c.K + k;
          double a = (b ? b[k] : 0.0) + (s ? s[o] : 0.0);
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
              const int64_t iy = oy - c.pt + ky, ix = ox - c.pl + kx;
              if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) continue;
              for (int64_t ch = 0; ch < c.C; ++ch)
                a += static_cast<double>(x[((n * c.H + iy) * c.W + ix) * c.C + ch]) * w[((k * c.C + ch) * 3 + ky) * 3 + kx];
            }
          y[o] = apply_activation(act, static_cast<float>(a), params.empty() ? nullptr : params.data());
        }
  return y;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1, worst = 0;
  for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
  EXPECT_LE(worst, 1e-5 * scale * 10) << what << " (max |diff| " << worst << ", scale " << scale << ")";
}

TEST(Winograd, Eligibility) {
  EXPECT_TRUE(Winograd3x3::eligible(64, 64, 3, 3, 1, 1, 1, 1, 1, ActKind::kRelu));
  EXPECT_FALSE(Winograd3x3::eligible(64, 64, 3, 3, 2, 2, 1, 1, 1, ActKind::kRelu));   // stride 2
  EXPECT_FALSE(Winograd3x3::eligible(64, 64, 3, 3, 1, 1, 2, 2, 1, ActKind::kNone));   // dilated
  EXPECT_FALSE(Winograd3x3::eligible(64, 64, 1, 1, 1, 1, 1, 1, 1, ActKind::kNone));   // 1x1
  EXPECT_FALSE(Winograd3x3::eligible(64, 64, 3, 3, 1, 1, 1, 1, 4, ActKind::kNone));   // grouped
  EXPECT_FALSE(Winograd3x3::eligible(12, 64, 3, 3, 1, 1, 1, 1, 1, ActKind::kNone));   // C % 8
  EXPECT_FALSE(Winograd3x3::eligible(64, 40, 3, 3, 1, 1, 1, 1, 1, ActKind::kNone));   // K % 16
  EXPECT_FALSE(Winograd3x3::eligible(64, 64, 3, 3, 1, 1, 1, 1, 1, ActKind::kTanh));   // activation
}

TEST(Winograd, MatchesDirectConvolution) {
  const std::vector<Case> cases = {
      {1, 8, 8, 8, 16, 1, 1, 1, 1},    {2, 7, 9, 16, 32, 1, 1, 1, 1},  {1, 5, 6, 8, 16, 0, 0, 0, 0},
      {1, 1, 1, 8, 16, 1, 1, 1, 1},    {3, 13, 11, 24, 48, 0, 1, 1, 0}, {1, 2, 3, 64, 16, 2, 0, 0, 2},
      {2, 14, 14, 72, 64, 1, 1, 1, 1}, {1, 3, 3, 512, 32, 1, 1, 1, 1},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const int64_t OH = c.H + c.pt + c.pb - 2, OW = c.W + c.pl + c.pr - 2;
    const std::vector<float> x = uniform(c.N * c.H * c.W * c.C, seed++, 1.f);
    const std::vector<float> w = uniform(c.K * c.C * 9, seed++, 0.3f);
    const std::vector<float> b = uniform(c.K, seed++, 1.f);
    const std::vector<float> s = uniform(c.N * OH * OW * c.K, seed++, 1.f);
    const std::string name = "N" + std::to_string(c.N) + " " + std::to_string(c.H) + "x" + std::to_string(c.W) +
                             " C" + std::to_string(c.C) + " K" + std::to_string(c.K) + " pads " +
                             std::to_string(c.pt) + std::to_string(c.pb) + std::to_string(c.pl) + std::to_string(c.pr);
    struct Act {
      ActKind kind;
      std::vector<float> params;
    };
    for (const Act& act : {Act{ActKind::kNone, {}}, Act{ActKind::kRelu, {}}, Act{ActKind::kClip, {-0.5f, 0.75f}},
                           Act{ActKind::kLeakyRelu, {0.1f}}, Act{ActKind::kSiLU, {}}, Act{ActKind::kSigmoid, {}},
                           Act{ActKind::kHardSwish, {}}, Act{ActKind::kHardSigmoid, {0.2f, 0.5f}}}) {
      Winograd3x3 wg(w.data(), c.K, c.C, act.kind, act.params);
      for (int threads : {1, 2, 3}) {
        const std::string what = name + " act " + std::to_string(static_cast<int>(act.kind)) + " threads " +
                                 std::to_string(threads);
        std::vector<float> y(s.size(), NAN);
        wg.run(x.data(), y.data(), nullptr, nullptr, c.N, c.H, c.W, OH, OW, c.pt, c.pl, threads);
        expect_close(y, direct(c, x, w, nullptr, nullptr, act.kind, act.params), what + " plain");
        wg.run(x.data(), y.data(), b.data(), s.data(), c.N, c.H, c.W, OH, OW, c.pt, c.pl, threads);
        const std::vector<float> want = direct(c, x, w, b.data(), s.data(), act.kind, act.params);
        expect_close(y, want, what + " bias+sum");
        std::vector<float> inplace = s;  // residual sum read from the output buffer itself
        wg.run(x.data(), inplace.data(), b.data(), inplace.data(), c.N, c.H, c.W, OH, OW, c.pt, c.pl, threads);
        expect_close(inplace, want, what + " in-place sum");
      }
    }
  }
}

// conv3x3 -> relu -> conv3x3 (+ residual) -> relu -> GAP: the 3x3 convolutions get nhwc layouts.
Model two_conv_block(int64_t C) {
  OnnxBuilder b(13);
  b.input("X", {-1, C, 10, 9});
  auto conv = [&](const std::string& x, const std::string& y, uint32_t seed) {
    b.init(y + "_W", random_f32({C, C, 3, 3}, seed, -0.2f, 0.2f));
    b.init(y + "_B", random_f32({C}, seed + 1));
    auto* n = b.node("Conv", {x, y + "_W", y + "_B"}, {y}, y + "_conv");
    attr_ints(n, "kernel_shape", {3, 3});
    attr_ints(n, "pads", {1, 1, 1, 1});
  };
  conv("X", "c0", 1);  // from the plain graph input
  b.node("Relu", {"c0"}, {"r0"});
  conv("r0", "c1", 3);
  b.node("Relu", {"c1"}, {"r1"});
  conv("r1", "c2", 5);
  b.node("Add", {"c2", "r0"}, {"a2"});
  b.node("Relu", {"a2"}, {"r2"});
  b.node("GlobalAveragePool", {"r2"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.value();
}

std::vector<Tensor> run_with(const Model& m, const Tensor& x, const char* winograd, bool tune,
                             std::vector<std::string> backends = {}) {
  setenv("MEDQ_WINOGRAD", winograd, 1);
  SessionOptions o;
  o.num_threads = 2;
  o.tune_kernels = tune;
  o.backends = std::move(backends);
  std::vector<Tensor> y;
  const Status st = run_session_twice(m, {x}, o, &y);
  EXPECT_TRUE(st.is_ok()) << st.message();
  unsetenv("MEDQ_WINOGRAD");
  return y;
}

TEST(Winograd, SessionResultsMatchReference) {
  if (preferred_blocked_layout() != Layout::kNhwc) GTEST_SKIP() << "Winograd runs on nhwc layouts only";
  if (!Winograd3x3::eligible(32, 32, 3, 3, 1, 1, 1, 1, 1, ActKind::kRelu)) GTEST_SKIP() << "no AVX2/FMA";
  Model m = two_conv_block(32);
  for (int64_t batch : {1, 3}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor x = random_f32({batch, 32, 10, 9}, 40 + static_cast<uint32_t>(batch));
    const std::vector<Tensor> ref = run_with(m, x, "off", false, {"ref"});
    const std::vector<Tensor> direct = run_with(m, x, "off", false);
    const std::vector<Tensor> wino = run_with(m, x, "on", false);
    const std::vector<Tensor> tuned = run_with(m, x, "auto", true);
    const std::vector<Tensor> deflt = run_with(m, x, "auto", false);
    ASSERT_TRUE(ref.size() == 1 && direct.size() == 1 && wino.size() == 1 && tuned.size() == 1 && deflt.size() == 1);
    EXPECT_LE(max_abs_diff(direct[0], ref[0]), 1e-4);
    EXPECT_LE(max_abs_diff(wino[0], ref[0]), 1e-4);
    EXPECT_LE(max_abs_diff(tuned[0], ref[0]), 1e-4);
    EXPECT_LE(max_abs_diff(deflt[0], ref[0]), 1e-4);
    // Without tuning, the default is Winograd exactly where the CPU has no AVX-512.
    if (!__builtin_cpu_supports("avx512f")) EXPECT_EQ(max_abs_diff(deflt[0], wino[0]), 0.0);
    else EXPECT_EQ(max_abs_diff(deflt[0], direct[0]), 0.0);
    // Winograd really ran: its rounding differs from oneDNN's direct convolution.
    EXPECT_GT(max_abs_diff(wino[0], direct[0]), 0.0);
  }
}

}  // namespace
}  // namespace medq
