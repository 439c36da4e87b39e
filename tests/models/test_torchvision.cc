// Architecture coverage: torchvision classifiers exported with random (but
// de-degenerated) weights by tests/models/gen_torchvision.py at opsets 13 and
// 17 must reproduce PyTorch's outputs. scripts/test.sh generates the fixtures
// into build/fixtures/torchvision (or MEDQ_TORCHVISION_FIXTURES).
#include <gtest/gtest.h>

#include "model_test_util.h"
#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq {
namespace {

class TorchvisionArch : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchvisionArch, MatchesPyTorch) {
  std::string dir = testing_models::torchvision_fixtures();
  if (dir.empty())
    GTEST_SKIP() << "torchvision fixtures absent: run scripts/test.sh (needs python3-torch) or set "
                    "MEDQ_TORCHVISION_FIXTURES";
  std::string name = GetParam();
  std::string model_path = dir + "/" + name + ".onnx";
  if (!testing_models::path_exists(model_path)) GTEST_SKIP() << model_path << " was not generated";
  auto m = load_model(model_path);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = Session::create(m.value());
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  auto x = load_tensor_pb(dir + "/" + name + "/test_data_set_0/input_0.pb");
  auto y = load_tensor_pb(dir + "/" + name + "/test_data_set_0/output_0.pb");
  ASSERT_TRUE(x.is_ok()) << x.status().message();
  ASSERT_TRUE(y.is_ok()) << y.status().message();
  auto out = s.value()->run({x.value()});
  ASSERT_TRUE(out.is_ok()) << out.status().message();
  ASSERT_EQ(out.value()[0].shape(), y.value().shape());
  auto d = testing_models::compare_f32(out.value()[0], y.value());
  std::printf("%s: max |diff| %.3g, output range %.3g, relative %.3g\n", name.c_str(), d.max_abs, d.range, d.rel());
  EXPECT_LE(d.rel(), 1e-4) << "max abs diff " << d.max_abs << " over range " << d.range;
  const Tensor& g = out.value()[0];
  const Tensor& r = y.value();
  int64_t classes = g.dim(-1);
  for (int64_t i = 0; i < g.dim(0); ++i)
    EXPECT_EQ(testing_models::argmax_row(g.data<float>() + i * classes, classes),
              testing_models::argmax_row(r.data<float>() + i * classes, classes))
        << "sample " << i;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchvisionArch,
                         ::testing::Values("resnet18_op13", "resnet50_op13", "mobilenet_v2_op13",
                                           "mobilenet_v3_large_op13", "mobilenet_v3_large_op17",
                                           "efficientnet_b0_op13", "densenet121_op13", "convnext_tiny_op13",
                                           "convnext_tiny_op17", "vit_b_16_op13", "vit_b_16_op17"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace medq
