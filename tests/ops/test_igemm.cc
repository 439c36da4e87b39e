// medq's implicit-GEMM convolution (kernels/dnnl/igemm_conv.h): against a double-precision
// direct convolution over kernel sizes, strides, dilations, asymmetric pads, pixel counts that
// are not a multiple of the 6-row microkernel, bias, residual sum (separate and in place),
// activations and thread counts; then inside a session (nhwc layouts), forced on, by default
// and timed by kernel tuning, against the ref backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../passes/onnx_test_builder.h"
#include "kernels/dnnl/igemm_conv.h"
#include "runtime/session.h"

namespace medq {
namespace {

using dnnl_k::IgemmConv;
using namespace testing_onnx;

struct Case {
  int64_t N, H, W, C, K, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr;
  int64_t OH() const { return (H + pt + pb - (kh - 1) * dh - 1) / sh + 1; }
  int64_t OW() const { return (W + pl + pr - (kw - 1) * dw - 1) / sw + 1; }
};

std::vector<float> uniform(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// act(conv(x, w) + b + s) in double; x nhwc, w OIHW, s/y nhwc.
std::vector<float> direct(const Case& c, const std::vector<float>& x, const std::vector<float>& w, const float* b,
                          const float* s, ActKind act, const std::vector<float>& params) {
  const int64_t OH = c.OH(), OW = c.OW();
  std::vector<float> y(c.N * OH * OW * c.K);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t k = 0; k < c.K; ++k) {
          const int64_t o = ((n * OH + oy) * OW + ox) * c.K + k;
          double a = (b ? b[k] : 0.0) + (s ? s[o] : 0.0);
          for (int64_t ky = 0; ky < c.kh; ++ky)
            for (int64_t kx = 0; kx < c.kw; ++kx) {
              const int64_t iy = oy * c.sh - c.pt + ky * c.dh, ix = ox * c.sw - c.pl + kx * c.dw;
              if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) continue;
              for (int64_t ch = 0; ch < c.C; ++ch)
                a += static_cast<double>(x[((n * c.H + iy) * c.W + ix) * c.C + ch]) *
                     w[((k * c.C + ch) * c.kh + ky) * c.kw + kx];
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
  EXPECT_LE(worst, 1e-5 * scale) << what << " (max |diff| " << worst << ", scale " << scale << ")";
}

TEST(Igemm, Eligibility) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) GTEST_SKIP() << "no AVX2/FMA";
  EXPECT_TRUE(IgemmConv::eligible(64, 64, 3, 3, 1, ActKind::kRelu));
  EXPECT_TRUE(IgemmConv::eligible(8, 16, 7, 7, 1, ActKind::kNone));
  EXPECT_TRUE(IgemmConv::eligible(8, 16, 1, 3, 1, ActKind::kSiLU));
  EXPECT_FALSE(IgemmConv::eligible(64, 64, 1, 1, 1, ActKind::kNone));  // 1x1: oneDNN's jit_1x1
  EXPECT_FALSE(IgemmConv::eligible(64, 64, 3, 3, 4, ActKind::kNone));  // grouped
  EXPECT_FALSE(IgemmConv::eligible(3, 64, 7, 7, 1, ActKind::kNone));   // C % 8 (stems)
  EXPECT_FALSE(IgemmConv::eligible(64, 40, 3, 3, 1, ActKind::kNone));  // K % 16
  EXPECT_FALSE(IgemmConv::eligible(64, 64, 3, 3, 1, ActKind::kTanh));  // activation
}

TEST(Igemm, MatchesDirectConvolution) {
  if (!IgemmConv::eligible(8, 16, 3, 3, 1, ActKind::kNone)) GTEST_SKIP() << "no AVX2/FMA";
  // N, H, W, C, K, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr
  const std::vector<Case> cases = {
      {1, 14, 14, 64, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},   // resnet's stride-2 3x3 (7x7 = 49 pixels)
      {2, 9, 7, 16, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},     // odd sizes, 2 images
      {1, 8, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},      // stride 1
      {1, 11, 13, 8, 48, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3},    // 7x7 stem-like
      {1, 10, 10, 16, 16, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2},   // dilated
      {3, 6, 5, 24, 32, 3, 2, 2, 1, 1, 1, 0, 1, 1, 0},     // non-square kernel, asymmetric pads
      {1, 1, 1, 8, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},      // 1x1 image: every tap but one in the pad
      {1, 4, 4, 512, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},    // long reduction
      {1, 5, 30, 8, 16, 1, 3, 1, 3, 1, 1, 0, 0, 0, 0},     // 1x3, stride 3 in W
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const int64_t OH = c.OH(), OW = c.OW();
    const std::vector<float> x = uniform(c.N * c.H * c.W * c.C, seed++, 1.f);
    const std::vector<float> w = uniform(c.K * c.C * c.kh * c.kw, seed++, 0.3f);
    const std::vector<float> b = uniform(c.K, seed++, 1.f);
    const std::vector<float> s = uniform(c.N * OH * OW * c.K, seed++, 1.f);
    const std::string name = "N" + std::to_string(c.N) + " " + std::to_string(c.H) + "x" + std::to_string(c.W) +
                             " C" + std::to_string(c.C) + " K" + std::to_string(c.K) + " k" + std::to_string(c.kh) +
                             "x" + std::to_string(c.kw) + " s" + std::to_string(c.sh) + std::to_string(c.sw) + " d" +
                             std::to_string(c.dh) + " pads " + std::to_string(c.pt) + std::to_string(c.pb) +
                             std::to_string(c.pl) + std::to_string(c.pr);
    const IgemmConv::Geometry g{c.N, c.H, c.W, OH, OW, c.sh, c.sw, c.dh, c.dw, c.pt, c.pl};
    struct Act {
      ActKind kind;
      std::vector<float> params;
    };
    for (const Act& act : {Act{ActKind::kNone, {}}, Act{ActKind::kRelu, {}}, Act{ActKind::kClip, {-0.5f, 0.75f}},
                           Act{ActKind::kSiLU, {}}, Act{ActKind::kHardSwish, {}}}) {
      IgemmConv ig(w.data(), c.K, c.C, c.kh, c.kw, act.kind, act.params);
      for (int threads : {1, 2, 3}) {
        const std::string what = name + " act " + std::to_string(static_cast<int>(act.kind)) + " threads " +
                                 std::to_string(threads);
        std::vector<float> y(s.size(), NAN);
        ig.run(x.data(), y.data(), nullptr, nullptr, g, threads);
        expect_close(y, direct(c, x, w, nullptr, nullptr, act.kind, act.params), what + " plain");
        ig.run(x.data(), y.data(), b.data(), s.data(), g, threads);
        const std::vector<float> want = direct(c, x, w, b.data(), s.data(), act.kind, act.params);
        expect_close(y, want, what + " bias+sum");
        std::vector<float> inplace = s;  // residual sum read from the output buffer itself
        ig.run(x.data(), inplace.data(), b.data(), inplace.data(), g, threads);
        expect_close(inplace, want, what + " in-place sum");
      }
    }
  }
}

// resnet's downsampling block: 1x1 conv -> relu -> 3x3 stride-2 conv (+ a stride-2 1x1
// shortcut) -> relu -> GAP, all between nhwc values.
Model downsample_block() {
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 13, 12});
  auto conv = [&](const std::string& x, const std::string& y, int64_t cin, int64_t cout, int64_t k, int64_t s,
                  uint32_t seed) {
    b.init(y + "_W", random_f32({cout, cin, k, k}, seed, -0.2f, 0.2f));
    b.init(y + "_B", random_f32({cout}, seed + 1));
    auto* n = b.node("Conv", {x, y + "_W", y + "_B"}, {y}, y + "_conv");
    attr_ints(n, "kernel_shape", {k, k});
    attr_ints(n, "strides", {s, s});
    attr_ints(n, "pads", std::vector<int64_t>(4, k / 2));
  };
  conv("X", "c0", 16, 32, 1, 1, 1);
  b.node("Relu", {"c0"}, {"r0"});
  conv("r0", "c1", 32, 32, 3, 2, 3);
  conv("r0", "sc", 32, 32, 1, 2, 5);
  b.node("Add", {"c1", "sc"}, {"a"});
  b.node("Relu", {"a"}, {"r"});
  b.node("GlobalAveragePool", {"r"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.value();
}

std::vector<Tensor> run_with(const Model& m, const Tensor& x, const char* igemm, bool tune,
                             std::vector<std::string> backends = {}) {
  setenv("MEDQ_IGEMM", igemm, 1);
  SessionOptions o;
  o.num_threads = 2;
  o.tune_kernels = tune;
  o.layout = "nhwc";
  o.backends = std::move(backends);
  std::vector<Tensor> y;
  const Status st = run_session_twice(m, {x}, o, &y);
  EXPECT_TRUE(st.is_ok()) << st.message();
  unsetenv("MEDQ_IGEMM");
  return y;
}

TEST(Igemm, SessionResultsMatchReference) {
  if (!IgemmConv::eligible(32, 32, 3, 3, 1, ActKind::kRelu)) GTEST_SKIP() << "no AVX2/FMA";
  Model m = downsample_block();
  for (int64_t batch : {1, 3}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    Tensor x = random_f32({batch, 16, 13, 12}, 40 + static_cast<uint32_t>(batch));
    const std::vector<Tensor> ref = run_with(m, x, "off", false, {"ref"});
    const std::vector<Tensor> dnnl = run_with(m, x, "off", false);
    const std::vector<Tensor> own = run_with(m, x, "on", false);
    const std::vector<Tensor> tuned = run_with(m, x, "auto", true);
    const std::vector<Tensor> deflt = run_with(m, x, "auto", false);
    ASSERT_TRUE(ref.size() == 1 && dnnl.size() == 1 && own.size() == 1 && tuned.size() == 1 && deflt.size() == 1);
    EXPECT_LE(max_abs_diff(dnnl[0], ref[0]), 1e-4);
    EXPECT_LE(max_abs_diff(own[0], ref[0]), 1e-4);
    EXPECT_LE(max_abs_diff(tuned[0], ref[0]), 1e-4);
    EXPECT_LE(max_abs_diff(deflt[0], ref[0]), 1e-4);
    // Without tuning the strided 3x3 runs medq's kernel exactly where the CPU has no AVX-512.
    if (!__builtin_cpu_supports("avx512f")) EXPECT_EQ(max_abs_diff(deflt[0], own[0]), 0.0);
    else EXPECT_EQ(max_abs_diff(deflt[0], dnnl[0]), 0.0);
  }
}

}  // namespace
}  // namespace medq
