// Calibration observes a session whose activations are stored nhwc between oneDNN kernels
// (SessionOptions::assign_layouts, as calibrate_static runs it): every observed range, histogram
// and per-channel mean must equal those of the plain NCHW session it replaced.
#include <gtest/gtest.h>

#include <cmath>

#include "../passes/onnx_test_builder.h"
#include "quant/calibration.h"
#include "runtime/session.h"

namespace medq {
namespace {

using namespace testing_onnx;

// image[N,1,30,26] -> Conv 3x3 (8) -> Relu -> MaxPool 2 -> Conv 3x3 (16) -> Relu -> MaxPool 2 ->
// GlobalAveragePool -> Flatten -> Gemm (3): a small 240x240-single-channel-style classifier.
Model conv_pool_model() {
  OnnxBuilder b(13);
  b.input("image", {-1, 1, 30, 26}, kF32, "N");
  b.init("W1", random_f32({8, 1, 3, 3}, 1));
  b.init("B1", random_f32({8}, 2));
  b.init("W2", random_f32({16, 8, 3, 3}, 3, -0.5f, 0.5f));
  b.init("B2", random_f32({16}, 4));
  b.init("W3", random_f32({3, 16}, 5));
  b.node("Conv", {"image", "W1", "B1"}, {"c1"}, "conv1");
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto* p1 = b.node("MaxPool", {"r1"}, {"p1"}, "pool1");
  attr_ints(p1, "kernel_shape", {2, 2});
  attr_ints(p1, "strides", {2, 2});
  b.node("Conv", {"p1", "W2", "B2"}, {"c2"}, "conv2");
  b.node("Relu", {"c2"}, {"r2"}, "relu2");
  auto* p2 = b.node("MaxPool", {"r2"}, {"p2"}, "pool2");
  attr_ints(p2, "kernel_shape", {2, 2});
  attr_ints(p2, "strides", {2, 2});
  b.node("GlobalAveragePool", {"p2"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"f"}, "flatten");
  b.node("Gemm", {"f", "W3"}, {"logits"}, "fc");
  attr_i(b.proto().mutable_graph()->mutable_node(8), "transB", 1);
  b.output("logits");
  auto m = b.build();
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.value();
}

std::map<std::string, StreamingHistogram> calibrate(const Model& m, bool layouts, std::vector<Layout>* seen) {
  SessionOptions so;
  so.optimize = false;
  so.assign_layouts = layouts;
  so.layout = "nhwc";
  so.num_threads = 2;
  auto s = Session::create(m, so);
  EXPECT_TRUE(s.is_ok()) << s.status().message();
  Calibrator cal({"c1", "r1", "p1", "c2", "r2", "p2"}, /*histograms=*/true, 512, /*channel_means=*/true);
  RunStats rs;
  rs.observer = [&](const Value& v, const Tensor& t, Layout l) {
    if (seen && v.name != "image") seen->push_back(l);
    cal.observe(v, t, l);
  };
  for (uint32_t seed = 10; seed < 13; ++seed) {
    auto r = s.value()->run({random_f32({5, 1, 30, 26}, seed, 0.f, 1.f)}, &rs);
    EXPECT_TRUE(r.is_ok()) << r.status().message();
  }
  EXPECT_FALSE(cal.channel_layout_error());
  return cal.stats();
}

TEST(CalibrationLayouts, NhwcSessionObservesWhatThePlainSessionDid) {
  Model m = conv_pool_model();
  std::vector<Layout> seen;
  auto plain = calibrate(m, false, nullptr);
  auto nhwc = calibrate(m, true, &seen);
  // The layout pass did store activations nhwc (else the test compares plain with plain).
  EXPECT_NE(std::count(seen.begin(), seen.end(), Layout::kNhwc), 0);
  ASSERT_EQ(plain.size(), 6u);
  for (const auto& [name, h] : plain) {
    SCOPED_TRACE(name);
    const StreamingHistogram& g = nhwc.at(name);
    EXPECT_NEAR(g.min(), h.min(), 1e-5);
    EXPECT_NEAR(g.max(), h.max(), 1e-5);
    EXPECT_EQ(g.count(), h.count());
    // Histogram mass: the same values (up to kernel rounding at bin edges).
    const auto a = h.abs_bins(), b = g.abs_bins();
    ASSERT_EQ(a.size(), b.size());
    double diff = 0, total = 0;
    for (size_t i = 0; i < a.size(); ++i) diff += std::fabs(a[i] - b[i]), total += a[i];
    EXPECT_LE(diff, 1e-3 * total);
    const auto ma = h.channel_means(), mb = g.channel_means();
    ASSERT_EQ(ma.size(), mb.size());
    ASSERT_FALSE(ma.empty());
    for (size_t c = 0; c < ma.size(); ++c) EXPECT_NEAR(ma[c], mb[c], 1e-5 * (1 + std::fabs(ma[c]))) << c;
  }
}

TEST(CalibrationLayouts, ChannelMeansMatchAPlainLoop) {
  // add_channels / add_channels_last against the obvious double loop, NaN and inf skipped.
  const int64_t n = 3, c = 5, hw = 700;
  Tensor t = random_f32({n, c, hw}, 7, -2.f, 3.f);
  float* x = t.data<float>();
  x[17] = NAN;
  x[400] = INFINITY;
  std::vector<double> want(c, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t j = 0; j < hw; ++j) {
        float v = x[(i * c + k) * hw + j];
        if (std::isfinite(v)) want[k] += v;
      }
  StreamingHistogram a(64), b(64);
  a.add_channels(x, n, c, hw);
  std::vector<float> last(static_cast<size_t>(n * c * hw));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t j = 0; j < hw; ++j) last[(i * hw + j) * c + k] = x[(i * c + k) * hw + j];
  b.add_channels_last(last.data(), n * hw, c);
  for (int64_t k = 0; k < c; ++k) {
    EXPECT_NEAR(a.channel_means()[k], want[k] / (n * hw), 1e-5) << k;
    EXPECT_NEAR(b.channel_means()[k], want[k] / (n * hw), 1e-5) << k;
  }
}

}  // namespace
}  // namespace medq
