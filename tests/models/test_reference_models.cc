// The reference fp32 models in ../shared/data/models against PyTorch:
//  * test_data_set_0 (4 preprocessed inputs, PyTorch outputs): within 1e-4 of the logit range;
//  * every test image, decoded and preprocessed by medq: top-1 agrees with *_test_logits.csv
//    on >= 99.9% of images (and logits stay close).
#include <gtest/gtest.h>

#include <cstdlib>

#include <fstream>
#include <sstream>

#include "data/image.h"
#include "data/preprocess.h"
#include "model_test_util.h"
#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq {
namespace {

using testing_models::compare_f32;
using testing_models::path_exists;
using testing_models::shared_data;

struct RefModel {
  const char* name;     // file stem in models/
  const char* dataset;  // dataset folder the CSV paths are relative to
};

class ReferenceModel : public ::testing::TestWithParam<RefModel> {
 protected:
  void SetUp() override {
    dir_ = shared_data() + "/models";
    model_path_ = dir_ + "/" + GetParam().name + ".onnx";
    if (!path_exists(model_path_)) GTEST_SKIP() << "shared data absent: " << model_path_ << " not found";
  }
  std::string dir_, model_path_;
};

TEST_P(ReferenceModel, MatchesPyTorchTestDataSet) {
  auto m = load_model(model_path_);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = Session::create(m.value());
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  std::string td = dir_ + "/" + GetParam().name + "_test_data/test_data_set_0/";
  auto x = load_tensor_pb(td + "input_0.pb");
  auto y = load_tensor_pb(td + "output_0.pb");
  ASSERT_TRUE(x.is_ok() && y.is_ok());
  // Third run: every eligible 3x3 convolution on medq's Winograd kernel (what --tune picks
  // where it is faster), which must meet the same tolerance.
  for (int variant : {0, 1, 2}) {
    const int threads = variant == 0 ? 1 : 2;
    const bool winograd = variant == 2;
    if (winograd) setenv("MEDQ_WINOGRAD", "on", 1);
    SessionOptions so;
    so.num_threads = threads;
    auto st = Session::create(m.value(), so);
    ASSERT_TRUE(st.is_ok()) << st.status().message();
    auto out = st.value()->run({x.value()});
    if (winograd) unsetenv("MEDQ_WINOGRAD");
    ASSERT_TRUE(out.is_ok()) << out.status().message();
    ASSERT_EQ(out.value()[0].shape(), y.value().shape());
    auto d = compare_f32(out.value()[0], y.value());
    std::printf("%s threads=%d%s: max |diff| %.3g, logit range %.3g, relative %.3g\n", GetParam().name, threads,
                winograd ? " winograd" : "", d.max_abs, d.range, d.rel());
    EXPECT_LE(d.rel(), 1e-4) << "max abs diff " << d.max_abs << " over range " << d.range;
  }
  // The reference (unoptimized, ref-kernel) path agrees too: a check of the passes and dnnl kernels.
  SessionOptions ref_opts;
  ref_opts.optimize = false;
  ref_opts.backends = {"ref"};
  auto rs = Session::create(m.value(), ref_opts);
  ASSERT_TRUE(rs.is_ok()) << rs.status().message();
  auto rout = rs.value()->run({x.value()});
  ASSERT_TRUE(rout.is_ok()) << rout.status().message();
  auto d = compare_f32(rout.value()[0], y.value());
  std::printf("%s ref kernels, no passes: relative %.3g\n", GetParam().name, d.rel());
  EXPECT_LE(d.rel(), 1e-4);
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> f;
  std::stringstream ss(line);
  std::string c;
  while (std::getline(ss, c, ',')) f.push_back(c);
  return f;
}

TEST_P(ReferenceModel, TestSplitTop1AgreesWithPyTorchLogits) {
  std::string csv = dir_ + "/" + GetParam().name + "_test_logits.csv";
  std::string data_dir = shared_data() + "/" + GetParam().dataset;
  if (!path_exists(csv)) GTEST_SKIP() << csv << " not found";
  auto m = load_model(model_path_);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto cfg = parse_preprocess_json(m.value().meta("preprocess"));
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  auto s = Session::create(m.value());
  ASSERT_TRUE(s.is_ok()) << s.status().message();

  std::ifstream f(csv);
  std::string line;
  std::getline(f, line);
  const int64_t classes = static_cast<int64_t>(split_csv(line).size()) - 2;
  std::vector<std::string> paths;
  std::vector<std::vector<float>> ref_logits;
  while (std::getline(f, line)) {
    auto c = split_csv(line);
    ASSERT_EQ(static_cast<int64_t>(c.size()), classes + 2) << line;
    paths.push_back(c[0]);
    std::vector<float> l;
    for (int64_t k = 0; k < classes; ++k) l.push_back(std::stof(c[2 + k]));
    ref_logits.push_back(l);
  }
  ASSERT_FALSE(paths.empty());
  const int64_t batch = 16;
  const int64_t per = 3LL * cfg.value().resize_h * cfg.value().resize_w;
  int64_t agree = 0, n = static_cast<int64_t>(paths.size());
  double max_abs = 0, range = 0;
  for (int64_t start = 0; start < n; start += batch) {
    int64_t b = std::min(batch, n - start);
    Tensor x(DataType::kFloat32, {b, 3, cfg.value().resize_h, cfg.value().resize_w});
    for (int64_t i = 0; i < b; ++i) {
      auto img = decode_image_file(data_dir + "/" + paths[start + i]);
      ASSERT_TRUE(img.is_ok()) << img.status().message();
      auto v = preprocess_image(img.value(), cfg.value());
      ASSERT_TRUE(v.is_ok()) << v.status().message();
      ASSERT_EQ(static_cast<int64_t>(v.value().size()), per);
      std::copy(v.value().begin(), v.value().end(), x.data<float>() + i * per);
    }
    auto out = s.value()->run({x});
    ASSERT_TRUE(out.is_ok()) << out.status().message();
    const float* y = out.value()[0].data<float>();
    for (int64_t i = 0; i < b; ++i) {
      const auto& r = ref_logits[start + i];
      const float* g = y + i * classes;
      agree += testing_models::argmax_row(g, classes) == testing_models::argmax_row(r.data(), classes);
      auto [lo, hi] = std::minmax_element(r.begin(), r.end());
      range = std::max(range, static_cast<double>(*hi - *lo));
      for (int64_t k = 0; k < classes; ++k) max_abs = std::max(max_abs, static_cast<double>(std::fabs(g[k] - r[k])));
    }
  }
  double rate = static_cast<double>(agree) / n;
  std::printf("%s: top-1 agreement with PyTorch on %lld test images: %lld/%lld = %.4f; max |logit diff| %.3g\n",
              GetParam().name, static_cast<long long>(n), static_cast<long long>(agree), static_cast<long long>(n),
              rate, max_abs);
  EXPECT_GE(rate, 0.999);
  // Preprocessing is bit-exact, so logits differ only by float summation order.
  EXPECT_LE(max_abs, 1e-3 * std::max(1.0, range));
}

INSTANTIATE_TEST_SUITE_P(Shared, ReferenceModel,
                         ::testing::Values(RefModel{"brain_resnet18", "brain_mri"},
                                           RefModel{"skin_mobilenet_v2", "skin_ham10000"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace medq
