// `medq preprocess` end to end: the .npy has one row per sample in dataset order, each row is
// bit-identical to what `medq run` feeds the model for the same image (checked both against the
// preprocessing functions and by running the model on the rows vs on the images), the labels CSV
// matches the manifest, and bad input gives a one-line error with no output file left behind.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "../passes/onnx_test_builder.h"
#include "cli_test_util.h"
#include "core/npy.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "onnx/model_io.h"

namespace medq {
namespace {

using namespace testing_onnx;
using namespace testing_cli;

const char* kPre =
    R"({"color": "RGB", "resize": [8, 8], "interpolation": "bilinear", "scale": 0.00392156862745098,)"
    R"( "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW"})";



class PreprocessCli : public testing_cli::CliWorkdir {
 protected:
  void SetUp() override {
    if (!make_workdir("precli")) GTEST_SKIP() << kMedq << " not built";
    write_model();
    // Mixed formats (grey/RGB/RGBA/16-bit PNG, JPEG subsamplings), two splits, a quoted label.
    std::string csv = "path,dx,split\n";
    for (size_t i = 0; i < images_.size(); ++i)
      csv += src_image(images_[i]) + "," + (i % 2 ? "malignant" : "benign") + "," + (i < 6 ? "test" : "train") + "\n";
    write_text(file("data.csv"), csv);
  }
  static std::string src_image(const std::string& n) { return std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + n; }

  void write_model() {
    write_bytes(file("tiny.onnx"), tiny_image_classifier(2, R"(["benign", "malignant"])", 7, -0.05f, 0.05f, kPre));
  }


  // Files in the work folder other than the inputs (to catch temp/partial outputs).
  std::vector<std::string> outputs() const {
    std::vector<std::string> r;
    DIR* d = ::opendir(dir_.c_str());
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != ".." && n != "tiny.onnx" && n != "data.csv" && n != "bad.csv" && n[0] != '.') r.push_back(n);
    }
    ::closedir(d);
    return r;
  }

  void expect_error(const CmdResult& r, const std::vector<std::string>& needles, int code = 2) {
    EXPECT_EQ(r.exit_code, code) << r.err;
    EXPECT_EQ(r.err.rfind("medq: error: ", 0), 0u) << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "'" << n << "' not in: " << r.err;
    EXPECT_TRUE(outputs().empty()) << "left behind: " << outputs()[0];
  }

  std::vector<std::string> images_{"gray8.png",     "rgb8.png",      "rgba16.png",     "synth_420.jpg",
                                   "synth_444.jpg", "synth_gray.jpg", "la8.png",        "palette4.png"};
};

TEST_F(PreprocessCli, WritesOneRowPerSampleAndLabels) {
  CmdResult r = run("preprocess data.csv --model tiny.onnx --label-column dx -o x.npy --labels-out l.csv --batch 4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("preprocess: 6/6"), std::string::npos) << r.err;  // progress line
  auto t = load_npy(file("x.npy"));
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  EXPECT_EQ(t.value().dtype(), DataType::kFloat32);
  EXPECT_EQ(t.value().shape(), (Shape{6, 3, 8, 8}));  // split 'test' only
  std::string csv = slurp(file("l.csv"));
  std::istringstream ls(csv);
  std::string line;
  std::getline(ls, line);
  EXPECT_EQ(line, "index,id,path,label,label_index");
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(std::getline(ls, line));
    std::string want_label = i % 2 ? "malignant" : "benign";
    EXPECT_EQ(line.rfind(std::to_string(i) + ",", 0), 0u) << line;
    EXPECT_NE(line.find(images_[i]), std::string::npos) << line;
    EXPECT_NE(line.find("," + want_label + "," + std::to_string(i % 2)), std::string::npos) << line;
  }
  EXPECT_FALSE(std::getline(ls, line));
  EXPECT_EQ(outputs().size(), 2u);  // x.npy, l.csv; no temp file

  // --split all, --limit, NHWC override.
  r = run("preprocess data.csv --model tiny.onnx --label-column dx --split all --limit 7 --layout NHWC -o y.npy --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("preprocess:"), std::string::npos) << r.err;  // --quiet
  auto y = load_npy(file("y.npy"));
  ASSERT_TRUE(y.is_ok());
  EXPECT_EQ(y.value().shape(), (Shape{7, 8, 8, 3}));
  // NHWC row 0 is the transpose of NCHW row 0.
  const float* a = t.value().data<float>();
  const float* b = y.value().data<float>();
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 64; ++p) ASSERT_EQ(a[c * 64 + p], b[p * 3 + c]);
}

TEST_F(PreprocessCli, RowsEqualWhatRunFeedsTheModel) {
  CmdResult r = run("preprocess data.csv --model tiny.onnx --label-column dx -o x.npy --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto t = load_npy(file("x.npy"));
  ASSERT_TRUE(t.is_ok());
  // 1) Against the pipeline `medq run` uses for an image file: decode_image_file + preprocess_image.
  auto cfg = parse_preprocess_json(kPre);
  ASSERT_TRUE(cfg.is_ok());
  for (int i = 0; i < 6; ++i) {
    auto img = decode_image_file(src_image(images_[i]));
    ASSERT_TRUE(img.is_ok()) << images_[i];
    auto v = preprocess_image(img.value(), cfg.value());
    ASSERT_TRUE(v.is_ok());
    ASSERT_EQ(v.value().size(), 192u);
    EXPECT_EQ(std::memcmp(v.value().data(), t.value().data<float>() + i * 192, 192 * sizeof(float)), 0)
        << "row " << i << " (" << images_[i] << ") differs";
  }
  // 2) End to end: the model's outputs on the images and on the rows (as .npy inputs) are identical.
  std::string imgs, rows;
  for (int i = 0; i < 6; ++i) {
    imgs += " '" + src_image(images_[i]) + "'";
    Tensor row = Tensor::from_vector(std::vector<float>(t.value().data<float>() + i * 192, t.value().data<float>() + (i + 1) * 192),
                                     {3, 8, 8});
    ASSERT_TRUE(save_npy(row, file("row" + std::to_string(i) + ".npy")).is_ok());
    rows += " row" + std::to_string(i) + ".npy";
  }
  r = run("run tiny.onnx" + imgs + " --batch 4 --save-output from_images.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run("run tiny.onnx" + rows + " --batch 4 --save-output from_rows.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto oi = load_npy(file("from_images.npy")), orow = load_npy(file("from_rows.npy"));
  ASSERT_TRUE(oi.is_ok() && orow.is_ok());
  ASSERT_EQ(oi.value().shape(), (Shape{6, 2}));
  ASSERT_EQ(orow.value().shape(), oi.value().shape());
  EXPECT_EQ(std::memcmp(oi.value().raw(), orow.value().raw(), oi.value().nbytes()), 0);
}

TEST_F(PreprocessCli, BadInputsGiveOneLineErrorsAndNoOutput) {
  expect_error(run("preprocess data.csv -o x.npy"), {"--model"});
  expect_error(run("preprocess data.csv --model tiny.onnx"), {"-o OUT.npy"});
  expect_error(run("preprocess data.csv --model missing.onnx -o x.npy"), {"missing.onnx"});
  expect_error(run("preprocess nowhere.csv --model tiny.onnx -o x.npy"), {"nowhere.csv"});
  expect_error(run("preprocess data.csv --model tiny.onnx --label-column nope -o x.npy"), {"nope"});
  expect_error(run("preprocess data.csv --model tiny.onnx --label-column dx -o nodir/x.npy"), {"nodir"});
  expect_error(run("preprocess data.csv --model tiny.onnx --label-column dx --limit 0 -o x.npy"), {"--limit"});
  expect_error(run("preprocess data.csv --model tiny.onnx --label-column dx --frobnicate -o x.npy"), {"--frobnicate"});
  // A corrupt image in the middle of the stream: named, and neither the .npy, the labels nor a
  // temp file is left behind.
  write_text(file("corrupt.png"), "\x89PNG\r\n\x1a\nnot really a png");
  write_text(file("bad.csv"), "path,dx,split\n" + src_image("gray8.png") + ",benign,test\n" + file("corrupt.png") +
                                  ",benign,test\n" + src_image("rgb8.png") + ",benign,test\n");
  CmdResult r = run("preprocess bad.csv --model tiny.onnx --label-column dx -o x.npy --labels-out l.csv --batch 1 --quiet");
  std::remove(file("corrupt.png").c_str());
  expect_error(r, {"corrupt.png"}, r.exit_code == 1 ? 1 : 2);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err;
}

// Real data: the first test images of the brain MRI set, at the reference model's 128x128.
TEST_F(PreprocessCli, SharedBrainTestImages) {
  const std::string data = std::string(MEDQ_SHARED_DATA);
  const std::string model = data + "/models/brain_resnet18.onnx", man = data + "/brain_mri/manifest.csv";
  if (!exists(model) || !exists(man)) GTEST_SKIP() << "shared data not found at " << data;
  CmdResult r = run("preprocess '" + man + "' --model '" + model + "' --limit 5 -o x.npy --labels-out l.csv --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto t = load_npy(file("x.npy"));
  ASSERT_TRUE(t.is_ok());
  ASSERT_EQ(t.value().shape(), (Shape{5, 3, 128, 128}));
  auto ds = Dataset::open(DatasetSpec(man, "test"));
  ASSERT_TRUE(ds.is_ok());
  auto m = load_model(model);
  ASSERT_TRUE(m.is_ok());
  auto cfg = parse_preprocess_json(m.value().meta("preprocess"));
  ASSERT_TRUE(cfg.is_ok());
  ASSERT_EQ(cfg.value().resize_w, 128);
  const size_t row = 3 * 128 * 128;
  std::string csv = slurp(file("l.csv"));
  for (size_t i = 0; i < 5; ++i) {
    const Sample& s = ds.value()->sample(i);
    EXPECT_NE(csv.find("," + s.path + "," + s.label + ","), std::string::npos) << s.path;
    auto img = decode_image_file(s.path);
    ASSERT_TRUE(img.is_ok());
    auto v = preprocess_image(img.value(), cfg.value());
    ASSERT_TRUE(v.is_ok());
    EXPECT_EQ(std::memcmp(v.value().data(), t.value().data<float>() + i * row, row * sizeof(float)), 0) << s.path;
  }
}

}  // namespace
}  // namespace medq
