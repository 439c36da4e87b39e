// Models as users bring them (tests/models/gen_user_models.py: exported by Debian's PyTorch with no
// metadata_props): an NHWC single-channel model with a 2-output sigmoid head, a 1-output sigmoid,
// a multi-label sigmoid, a softmax-terminated model and a single raw logit. Every command must run
// them without flags (preprocessing inferred from the input shape, output semantics from the
// graph), give PyTorch's outputs on Pillow's pixels, and work after `medq annotate`.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "core/fileio.h"
#include "core/npy.h"
#include "onnx/model_io.h"
#include "serve/server.h"

namespace medq {
namespace {

using json = nlohmann::json;
using testing_cli::CliWorkdir;
using testing_cli::CmdResult;
using testing_cli::exists;
using testing_cli::slurp;

std::string fixtures() {
  const char* e = std::getenv("MEDQ_USER_FIXTURES");
  std::string d = e ? e : std::string(MEDQ_BINARY_DIR) + "/fixtures/user";
  return exists(d + "/expected.json") ? d : "";
}

json parse_out(const CmdResult& r) {
  auto i = r.out.find('{');
  return i == std::string::npos ? json() : json::parse(r.out.substr(i), nullptr, false);
}

class UserModels : public CliWorkdir {
 protected:
  void SetUp() override {
    fx_ = fixtures();
    if (fx_.empty()) GTEST_SKIP() << "user-model fixtures absent (scripts/test.sh generates them with PyTorch)";
    if (!make_workdir("usermodels")) GTEST_SKIP() << "medq not built";
    expected_ = json::parse(slurp(fx_ + "/expected.json"));
  }
  std::string m(const std::string& name) const { return fx_ + "/" + name + ".onnx"; }
  std::string img(const std::string& name) const { return fx_ + "/" + expected_[name]["image"].get<std::string>(); }
  std::string ds(const std::string& name) const { return fx_ + "/ds_" + name; }
  std::string fx_;
  json expected_;
};

const char* kModels[] = {"nhwc_gray_sigmoid", "binary1_sigmoid", "multilabel_sigmoid", "softmax3", "logits1"};

// The class probabilities medq must report for raw outputs y of a head.
std::vector<double> want_probabilities(const std::vector<double>& y, const std::string& head) {
  if (y.size() == 1) {
    double p = head == "none" ? 1 / (1 + std::exp(-y[0])) : y[0];
    return {1 - p, p};
  }
  if (head != "none") return y;
  double mx = *std::max_element(y.begin(), y.end()), s = 0;
  std::vector<double> p;
  for (double v : y) s += std::exp(v - mx);
  for (double v : y) p.push_back(std::exp(v - mx) / s);
  return p;
}

TEST_F(UserModels, RunWithoutFlagsMatchesPyTorchOnPillowPixels) {
  for (const char* name : kModels) {
    SCOPED_TRACE(name);
    CmdResult r = run("run '" + m(name) + "' '" + img(name) + "' --json --top-k 10");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // One warning line naming what was assumed and how to record it.
    EXPECT_NE(r.err.find("warning: '" + m(name) + "' has no 'preprocess' metadata"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("medq annotate"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(expected_[name]["layout"].get<std::string>()), std::string::npos) << r.err;
    json j = parse_out(r);
    ASSERT_TRUE(j.is_object()) << r.out;
    const json& res = j["results"][0];
    auto y = res["outputs"].get<std::vector<double>>();
    auto want = expected_[name]["outputs"].get<std::vector<double>>();
    ASSERT_EQ(y.size(), want.size());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], 2e-5) << i;
    const std::string head = expected_[name]["head"];
    auto p = res["probabilities"].get<std::vector<double>>();
    auto wp = want_probabilities(want, head);
    ASSERT_EQ(p.size(), wp.size());
    for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], wp[i], 2e-5) << i;
    EXPECT_EQ(res["output_kind"], head == "sigmoid" ? "sigmoid" : head == "softmax" ? "probabilities" : "logits");
    EXPECT_EQ(res.contains("logits"), head == "none");
    // top ranks the class probabilities.
    EXPECT_EQ(res["top"][0]["index"].get<size_t>(), std::max_element(wp.begin(), wp.end()) - wp.begin());
  }
}

TEST_F(UserModels, BatchedTensorRunsAsRowsAndBadShapesFailBeforeRunning) {
  for (const char* name : {"nhwc_gray_sigmoid", "binary1_sigmoid"}) {
    SCOPED_TRACE(name);
    CmdResult r = run("run '" + m(name) + "' '" + fx_ + "/" + name + "_batch3.npy' --json --batch 2 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");  // --quiet: no warning
    json j = parse_out(r);
    ASSERT_EQ(j["results"].size(), 3u) << r.out;
    for (size_t row = 0; row < 3; ++row) {
      EXPECT_EQ(j["results"][row]["input"], std::string(fx_ + "/") + name + "_batch3.npy[" + std::to_string(row) + "]");
      auto y = j["results"][row]["outputs"].get<std::vector<double>>();
      auto want = expected_[name]["batch3_outputs"][row].get<std::vector<double>>();
      for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], 2e-5);
    }
  }
  // A tensor in the other layout: refused with its shape and the model's, nothing run.
  Tensor t = Tensor::zeros(DataType::kFloat32, {2, 1, 40, 48});
  ASSERT_TRUE(save_npy(t, file("nchw.npy")).is_ok());
  CmdResult r = run("run '" + m("nhwc_gray_sigmoid") + "' nchw.npy --quiet");
  expect_input_error(r, {"nchw.npy", "[2,1,40,48]", "[-1,40,48,1]"});
  EXPECT_EQ(r.out, "");
}

TEST_F(UserModels, OverrideFlagsAloneAndContradictionsNameTheFix) {
  const std::string nhwc = m("nhwc_gray_sigmoid"), gray = img("nhwc_gray_sigmoid");
  // A flag given alone never drags in another channel count's default (was: 'mean' has 3 values).
  EXPECT_EQ(run("run '" + nhwc + "' '" + gray + "' --color L").exit_code, 0);
  CmdResult r = run("run '" + nhwc + "' '" + gray + "' --mean 0.5 --std 0.25 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("no mean"), std::string::npos) << "mean/std were given, not assumed: " << r.err;
  // Contradictions with the input shape: one line naming the flag that fixes it.
  expect_input_error(run("run '" + nhwc + "' '" + gray + "' --color RGB"), {"--color L", "[N,40,48,1]"});
  expect_input_error(run("run '" + nhwc + "' '" + gray + "' --mean 0.5,0.5,0.5"), {"'mean' has 3 values", "--mean"});
  expect_input_error(run("run '" + nhwc + "' '" + gray + "' --resize 32,32"), {"--resize 48,40"});
  expect_input_error(run("run '" + nhwc + "' '" + gray + "' --outputs softmaxx"), {"--outputs", "logits, probabilities or sigmoid"});
  // --outputs overrides the graph: logits -> softmax of the two sigmoid values.
  r = run("run '" + nhwc + "' '" + gray + "' --outputs logits --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto p = parse_out(r)["results"][0]["probabilities"].get<std::vector<double>>();
  EXPECT_NEAR(p[0] + p[1], 1.0, 1e-6);
}

TEST_F(UserModels, AnnotateRecordsMetadataLosslesslyAndEveryCommandUsesIt) {
  const std::string src = m("nhwc_gray_sigmoid");
  CmdResult r = run("annotate '" + src + "' --labels benign,malignant --interpolation bilinear -o a.onnx");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Everything but metadata_props is the source file's: same graph bytes.
  auto a = load_model(file("a.onnx"));
  auto b = load_model(src);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a.value().graph.nodes.size(), b.value().graph.nodes.size());
  EXPECT_EQ(a.value().meta("labels"), "[\"benign\",\"malignant\"]");
  EXPECT_EQ(a.value().meta("outputs"), "sigmoid");
  json pre = json::parse(a.value().meta("preprocess"));
  EXPECT_EQ(pre["layout"], "NHWC");
  EXPECT_EQ(pre["color"], "L");
  EXPECT_EQ(pre["resize"], json({48, 40}));
  // info shows them.
  r = run("info a.onnx");
  EXPECT_NE(r.out.find("labels"), std::string::npos);
  EXPECT_NE(r.out.find("outputs:    sigmoid"), std::string::npos) << r.out;
  // run: labels, no warning.
  r = run("run a.onnx '" + img("nhwc_gray_sigmoid") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("malignant"), std::string::npos);
  // eval on an image folder with train/ and test/ subfolders.
  r = run("eval a.onnx --data '" + ds("nhwc_gray_sigmoid") + "' --split test --positive malignant --json e.json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json e = json::parse(slurp(file("e.json")));
  EXPECT_EQ(e["dataset"]["n"], 10);
  // quantize: calibration on train, the output carries the preprocessing it used.
  r = run("quantize a.onnx --calib '" + ds("nhwc_gray_sigmoid") + "' --split train --samples 12 -o q.onnx --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto q = load_model(file("q.onnx"));
  ASSERT_TRUE(q.is_ok());
  EXPECT_EQ(json::parse(q.value().meta("preprocess")), pre);
  EXPECT_EQ(q.value().meta("labels"), a.value().meta("labels"));
  EXPECT_EQ(q.value().meta("outputs"), "sigmoid");
  // validate: probabilities of a sigmoid head are its outputs (was: softmaxed, 0.26 apart for
  // outputs 0.01 apart), so their differences cannot exceed the outputs' differences.
  r = run("validate --reference a.onnx --candidate q.onnx --data '" + ds("nhwc_gray_sigmoid") +
          "' --split test --report val --quiet");
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  json rep = json::parse(slurp(file("val/report.json")));
  const json& pd = rep["paired"];
  EXPECT_LE(pd["max_abs_prob_diff"].get<double>(), pd["max_abs_logit_diff"].get<double>() + 1e-6) << pd.dump();
  EXPECT_EQ(rep["models"]["candidate"]["resolved"]["outputs"], "sigmoid");
  // convert --fp16 keeps it too.
  r = run("convert --fp16 a.onnx -o h.onnx");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto h = load_model(file("h.onnx"));
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(json::parse(h.value().meta("preprocess")), pre);
  // Wrong label count: refused, nothing written.
  expect_input_error(run("annotate a.onnx --labels x,y,z -o bad.onnx"), {"3 labels", "2 value(s)"});
  EXPECT_FALSE(exists(file("bad.onnx")));
}

TEST_F(UserModels, EvalValidateQuantizeWithFlagsAloneOnEveryHead) {
  for (const char* name : kModels) {
    SCOPED_TRACE(name);
    const auto classes = expected_[name]["classes"].get<std::vector<std::string>>();
    const std::string pos = classes.back();
    CmdResult r = run("eval '" + m(name) + "' --data '" + ds(name) + "' --positive " + pos + " --json e.json --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json e = json::parse(slurp(file("e.json")));
    EXPECT_EQ(e["class_names"].get<std::vector<std::string>>(), classes);
    EXPECT_EQ(e["dataset"]["n"].get<int>(), 5 * static_cast<int>(classes.size()));
    r = run("quantize '" + m(name) + "' --calib '" + ds(name) + "' --samples 8 -o q.onnx --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run("validate --reference '" + m(name) + "' --candidate q.onnx --data '" + ds(name) + "' --positive " + pos +
            " --report v --quiet");
    ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
    json rep = json::parse(slurp(file("v/report.json")));
    EXPECT_EQ(rep["class_names"].size(), classes.size()) << rep["class_names"].dump();
    EXPECT_LE(rep["paired"]["max_abs_prob_diff"].get<double>(), 0.2);
    // The split column of a folder read as splits (train/ + test/ with --split all).
    r = run("eval '" + m(name) + "' --data '" + ds(name) + "' --split all --groups split --json all.json --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json all = json::parse(slurp(file("all.json")));
    EXPECT_EQ(all["dataset"]["n"].get<int>(), 11 * static_cast<int>(classes.size()));
    EXPECT_TRUE(all["subgroups"]["split"].is_object()) << all["subgroups"].dump();
  }
}

TEST_F(UserModels, PreprocessTakesThreadsAndWritesTheModelLayout) {
  CmdResult r = run("preprocess '" + ds("nhwc_gray_sigmoid") + "' --model '" + m("nhwc_gray_sigmoid") +
                    "' --threads 2 -o x.npy --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto t = load_npy(file("x.npy"));
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t.value().shape(), (Shape{10, 40, 48, 1}));
}

TEST_F(UserModels, BenchImagesTakesTheSameOverrides) {
  testing_cli::write_text(file("list.txt"), img("nhwc_gray_sigmoid") + "\n" + img("nhwc_gray_sigmoid") + "\n");
  const std::string base = "bench '" + m("nhwc_gray_sigmoid") + "' --images list.txt --batch 2 --iters 2 --warmup 1";
  CmdResult r = run(base + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("has no 'preprocess' metadata"), std::string::npos) << r.err;
  EXPECT_EQ(run(base + " --color L --input-layout NHWC --quiet").exit_code, 0);
  expect_input_error(run(base + " --color RGB"), {"--color L"});
  expect_input_error(run(base + " --input-layout NCHW"), {"NCHW", "channels"});
}

TEST_F(UserModels, ServeNhwcSingleChannelModelsWithSigmoidHeads) {
  const std::string dir = file("bundles");
  for (const char* name : {"nhwc_gray_sigmoid", "binary1_sigmoid"}) {
    std::filesystem::create_directories(dir + "/" + name);
    std::filesystem::copy_file(m(name), dir + "/" + name + "/fp32.onnx");
  }
  serve::ServeConfig cfg;
  cfg.model_dir = dir;
  cfg.port = 0;
  cfg.threads = 1;
  cfg.http_threads = 8;
  cfg.max_batch = 4;
  cfg.log_requests = false;
  serve::Server server(cfg);
  Status st = server.start();
  ASSERT_TRUE(st.is_ok()) << st.message();
  httplib::Client cli("127.0.0.1", server.port());
  cli.set_read_timeout(20, 0);
  for (const char* name : {"nhwc_gray_sigmoid", "binary1_sigmoid"}) {
    SCOPED_TRACE(name);
    auto bytes = read_file(img(name));
    ASSERT_TRUE(bytes.is_ok());
    auto res = cli.Post((std::string("/v1/models/") + name + "/predict").c_str(), bytes.value(), "image/png");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json j = json::parse(res->body);
    auto want = expected_[name]["outputs"].get<std::vector<double>>();
    auto y = j["outputs"].get<std::vector<double>>();
    ASSERT_EQ(y.size(), want.size());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], want[i], 2e-5);
    auto wp = want_probabilities(want, "sigmoid");
    auto p = j["probabilities"].get<std::vector<double>>();
    for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], wp[i], 2e-5);
    EXPECT_FALSE(j.contains("logits")) << "sigmoid outputs are not logits";
    EXPECT_EQ(j["output_kind"], "sigmoid");
    // KServe v2 infer takes the tensor in the model's own input shape.
    json md = json::parse(cli.Get((std::string("/v2/models/") + name).c_str())->body);
    auto shape = md["inputs"][0]["shape"].get<std::vector<int64_t>>();
    shape[0] = 1;
    int64_t n = 1;
    for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
    json body = {{"inputs", {{{"name", md["inputs"][0]["name"]}, {"datatype", "FP32"}, {"shape", shape},
                              {"data", std::vector<float>(static_cast<size_t>(n), 0.5f)}}}}};
    auto ir = cli.Post((std::string("/v2/models/") + name + "/infer").c_str(), body.dump(), "application/json");
    ASSERT_TRUE(ir);
    EXPECT_EQ(ir->status, 200) << ir->body;
  }
  server.shutdown();
}

}  // namespace
}  // namespace medq
