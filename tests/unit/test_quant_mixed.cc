// Accuracy-driven mixed precision (`medq quantize --max-drop`): a generated CNN whose second
// conv reads an activation with a huge outlier channel (int8 destroys the other channels), so
// the search must fall back exactly that layer; the CLI's overlap refusal and flag errors; and
// brain_resnet18 on a small calibration/evaluation sample (skipped without ../shared/data).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "../passes/onnx_test_builder.h"
#include "cli_test_util.h"
#include "data/dataset.h"
#include "data/preprocess.h"
#include "quant/mixed_precision.h"
#include "quant/quantize.h"
#include "runtime/session.h"

namespace medq {
namespace {

using namespace testing_onnx;
using namespace testing_cli;
using nlohmann::json;

const char* kSensitive = "Conv 'convB' + Relu 'reluB'";



// X -> convA(+BA, channel 7 biased by +500) -> reluA -> convB -> reluB -> GAP -> Flatten -> fc.
// convB ignores channel 7 (zero weights), so fp32 is unaffected by the outlier, but the uint8
// range of reluA's output spans [0, ~20000]: one step is ~80, larger than all of the signal
// convB needs. Quantizing convB's input is the damage; every other layer is benign.
OnnxBuilder sensitive_builder() {
  OnnxBuilder b(13);
  b.input("X", {-1, 3, 8, 8}, kF32, "batch");
  b.init("WA", random_f32({8, 3, 3, 3}, 11));
  Tensor ba = random_f32({8}, 12, -0.1f, 0.1f);
  ba.data<float>()[7] = 20000.f;
  b.init("BA", ba);
  Tensor wb = random_f32({8, 8, 3, 3}, 13);
  for (int o = 0; o < 8; ++o)
    for (int k = 0; k < 9; ++k) wb.data<float>()[(o * 8 + 7) * 9 + k] = 0.f;
  b.init("WB", wb);
  b.init("Wfc", random_f32({4, 8}, 14));
  b.init("Bfc", random_f32({4}, 15));
  attr_ints(b.node("Conv", {"X", "WA", "BA"}, {"a"}, "convA"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"a"}, {"ra"}, "reluA");
  attr_ints(b.node("Conv", {"ra", "WB"}, {"bb"}, "convB"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"bb"}, {"rb"}, "reluB");
  b.node("GlobalAveragePool", {"rb"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"f"}, "flatten");
  attr_i(b.node("Gemm", {"f", "Wfc", "Bfc"}, {"logits"}, "fc"), "transB", 1);
  b.output("logits");
  return b;
}

// Inputs with a per-sample, per-channel offset so the pooled features (and predictions) vary.
Tensor batch_of(int n, uint32_t seed) {
  Tensor x = random_f32({n, 3, 8, 8}, seed);
  Tensor off = random_f32({n, 3}, seed + 1000, -2.f, 2.f);
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 64; ++p) x.data<float>()[(i * 3 + c) * 64 + p] += off.data<float>()[i * 3 + c];
  return x;
}

std::vector<int> predict(const Model& m, const std::vector<Tensor>& batches) {
  auto s = Session::create(m);
  EXPECT_TRUE(s.is_ok()) << s.status().message();
  std::vector<int> r;
  if (!s.is_ok()) return r;
  for (const Tensor& x : batches) {
    auto out = s.value()->run({x});
    EXPECT_TRUE(out.is_ok()) << out.status().message();
    if (!out.is_ok()) return r;
    const Tensor& y = out.value()[0];
    for (int64_t i = 0; i < y.dim(0); ++i) {
      const float* p = y.data<float>() + i * y.dim(1);
      r.push_back(static_cast<int>(std::max_element(p, p + y.dim(1)) - p));
    }
  }
  return r;
}

TEST(QuantMixed, FallsBackExactlyTheSensitiveLayer) {
  auto mr = sensitive_builder().build("sensitive.onnx");
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Model prepared = mr.value();
  ASSERT_TRUE(prepare_for_quantization(prepared).is_ok());
  QuantizeOptions o;  // minmax, uint8 activations
  auto plan = plan_static(prepared, o);
  ASSERT_TRUE(plan.is_ok()) << plan.status().message();

  // Calibration and evaluation inputs are different draws.
  int calib_i = 0;
  BatchSource calib = [&](std::vector<Tensor>& in) -> Result<bool> {
    if (calib_i >= 4) return false;
    in = {batch_of(16, 100 + calib_i++)};
    return true;
  };
  auto cal = calibrate_static(prepared, plan.value(), o, calib);
  ASSERT_TRUE(cal.is_ok()) << cal.status().message();
  EXPECT_EQ(cal.value().samples, 64);
  // Streamed histograms: one fixed-size bin array per calibrated tensor.
  EXPECT_EQ(cal.value().histogram_bytes, static_cast<int64_t>(cal.value().stats.size() * o.num_bins * 8));

  std::vector<Tensor> eval_batches;
  for (int b = 0; b < 8; ++b) eval_batches.push_back(batch_of(16, 500 + b));
  const std::vector<int> ref = predict(mr.value(), eval_batches);
  ASSERT_EQ(ref.size(), 128u);
  ASSERT_GE(std::set<int>(ref.begin(), ref.end()).size(), 2u) << "degenerate fixture: one predicted class";

  const double max_drop = 0.05;
  MixedPrecisionOptions mo;
  mo.reference_metric = 1.0;  // metric = agreement with the fp32 predictions
  mo.within_budget = [&](double r, double c) { return r - c <= max_drop; };
  mo.sensitivity_batches = {{eval_batches[0]}, {eval_batches[1]}};
  std::vector<std::string> evaluated;
  CandidateEvaluator evaluate = [&](const Model& cand, const std::string& what) -> Result<EvalOutcome> {
    evaluated.push_back(what);
    std::vector<int> p = predict(cand, eval_batches);
    if (p.size() != ref.size()) return internal_error("prediction failed");
    size_t agree = 0;
    for (size_t i = 0; i < p.size(); ++i) agree += p[i] == ref[i];
    EvalOutcome ev;
    ev.metric = static_cast<double>(agree) / p.size();
    return ev;
  };
  auto res = search_mixed_precision(prepared, plan.value(), cal.value().stats, o, mo, evaluate);
  ASSERT_TRUE(res.is_ok()) << res.status().message();
  const MixedPrecisionResult& r = res.value();
  // The all-int8 model is far over budget (the fixture really is sensitive) ...
  ASSERT_GE(r.steps.size(), 2u) << "int8 agreement " << r.steps[0].metric;
  EXPECT_GT(r.steps[0].drop, 3 * max_drop) << "int8 agreement " << r.steps[0].metric;
  // ... the sensitivity ranks convB first, by far, and the search stops after that one fallback.
  ASSERT_TRUE(r.sensitivity_measured);
  ASSERT_EQ(r.sensitivity.size(), fallback_units(prepared, plan.value()).size());
  EXPECT_EQ(r.sensitivity[0].unit, kSensitive);
  EXPECT_EQ(r.sensitivity[0].rank, 1);
  EXPECT_GT(r.sensitivity[0].logits_rel_mse, 10 * r.sensitivity[1].logits_rel_mse);
  EXPECT_LT(r.sensitivity[0].output_sqnr_db, r.sensitivity[1].output_sqnr_db);
  EXPECT_EQ(r.sensitivity[0].samples, 32);
  EXPECT_TRUE(r.within_budget);
  RecordProperty("steps", r.to_json()["steps"].dump());
  ASSERT_EQ(r.fp32_units, std::vector<std::string>{kSensitive});
  EXPECT_EQ(r.steps.size(), 2u);
  EXPECT_LE(r.steps.back().drop, max_drop);
  EXPECT_EQ(evaluated.size(), r.steps.size());

  // The final model: convB reads fp32 (its weight stays float), the other layers are int8.
  const Graph& g = r.model.graph;
  int dq_weights = 0;
  for (const auto& n : g.nodes) {
    if (n.dead) continue;
    if (n.name == "convB") {
      EXPECT_EQ(g.value(n.inputs[1]).name, "WB") << "convB's weight was quantized";
      EXPECT_EQ(g.value(n.inputs[0]).name, "ra") << "convB reads a dequantized input";
    }
    if (n.op_type == "DequantizeLinear" && g.value(n.inputs[0]).is_constant() &&
        g.value(n.inputs[0]).initializer.dtype() == DataType::kInt8)
      ++dq_weights;
  }
  EXPECT_EQ(dq_weights, 2);  // WA and Wfc
  auto rj = r.to_json();
  EXPECT_EQ(rj["fp32_layers"][0], kSensitive);
  EXPECT_EQ(rj["sensitivity"][0]["layer"], kSensitive);
  EXPECT_EQ(rj["steps"].size(), 2u);
  // The result is re-checked independently.
  std::vector<int> fin = predict(r.model, eval_batches);
  size_t agree = 0;
  for (size_t i = 0; i < fin.size(); ++i) agree += fin[i] == ref[i];
  EXPECT_GE(static_cast<double>(agree) / ref.size(), 1.0 - max_drop);
}

TEST(QuantMixed, FallbackUnitsGroupTheActivation) {
  auto mr = sensitive_builder().build("sensitive.onnx");
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  ASSERT_TRUE(prepare_for_quantization(m).is_ok());
  auto plan = plan_static(m, QuantizeOptions{});
  ASSERT_TRUE(plan.is_ok());
  std::vector<std::string> labels;
  for (const auto& u : fallback_units(m, plan.value())) labels.push_back(u.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"Conv 'convA' + Relu 'reluA'", kSensitive,
                                              "GlobalAveragePool 'gap'", "Gemm 'fc'"}));
}

// ---------------------------------------------------------------------------------------------
// CLI: refusal of overlapping calibration/evaluation data, flag errors, an end-to-end run.


class QuantMixedCli : public testing_cli::CliWorkdir {
 protected:
  void SetUp() override {
    if (!make_workdir("mixedcli")) GTEST_SKIP() << kMedq << " not built";
    OnnxBuilder b = sensitive_builder();
    testing_cli::add_image_metadata(b, R"(["a", "b", "c", "d"])");
    testing_cli::write_bytes(file("m.onnx"), b.bytes());
    // 16 images: 8 train (calibration), 8 test, labelled with the fp32 model's own predictions
    // (fp32 accuracy 1, so any int8 damage shows as a drop).
    const char* imgs[] = {"gray1.png", "gray2.png", "gray4.png", "gray8.png", "rgb8.png", "rgba8.png", "la8.png",
                          "synth_420.jpg", "synth_422.jpg", "synth_444.jpg", "synth_gray.jpg", "rgb16.png",
                          "gray16.png", "palette4.png", "la16.png", "rgba16.png"};
    std::string csv = "path,label,split\n";
    for (int i = 0; i < 16; ++i)
      csv += std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + imgs[i] + ",a," + (i % 2 ? "test" : "train") + "\n";
    std::ofstream(file("data.csv")) << csv;
    auto mr = b.build("m.onnx");
    ASSERT_TRUE(mr.is_ok()) << mr.status().message();
    auto ds = Dataset::open(DatasetSpec(file("data.csv")));
    ASSERT_TRUE(ds.is_ok()) << ds.status().message();
    auto cfg = parse_preprocess_json(mr.value().meta("preprocess"));
    ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
    std::vector<size_t> all(16);
    for (size_t i = 0; i < 16; ++i) all[i] = i;
    BatchLoader loader(*ds.value(), all, cfg.value(), 16);
    Batch batch;
    ASSERT_TRUE(loader.next(batch)) << loader.status().message();
    std::vector<int> pred = predict(mr.value(), {batch.x});
    ASSERT_EQ(pred.size(), 16u);
    csv = "path,label,split\n";
    for (int i = 0; i < 16; ++i)
      csv += std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + imgs[i] + "," + "abcd"[pred[i]] + "," +
             (i % 2 ? "test" : "train") + "\n";
    std::ofstream(file("data.csv")) << csv;
  }
  CmdResult run(const std::string& args) { return CliWorkdir::run("quantize " + args); }
  void expect_error(const CmdResult& r, const std::vector<std::string>& needles) {
    expect_input_error(r, needles);
    EXPECT_FALSE(exists(file("out.onnx")));
    EXPECT_FALSE(exists(file("rep.json")));
  }
};

TEST_F(QuantMixedCli, RefusesOverlappingCalibrationAndEvaluation) {
  // Calibration: 6 of the 8 train rows; evaluation: the train split again -> 6 shared images.
  auto r = run("m.onnx --calib data.csv --samples 6 --max-drop 0.01 --eval data.csv --eval-split train -o out.onnx "
               "--report rep.json --quiet");
  expect_error(r, {"--eval: 6 of the 8 evaluation images are also in the calibration sample", "--eval-split test"});
  // Without --eval-split the test split is chosen: disjoint, accepted.
  r = run("m.onnx --calib data.csv --samples 6 --max-drop 0.9 --eval data.csv -o out.onnx --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("split 'test'"), std::string::npos) << r.out;
}

TEST_F(QuantMixedCli, BadFlags) {
  expect_error(run("m.onnx --calib data.csv --max-drop 0.01 -o out.onnx"), {"--max-drop needs --eval DATA"});
  expect_error(run("m.onnx --calib data.csv --max-drop -0.01 --eval data.csv -o out.onnx"),
               {"--max-drop: expected a metric drop in [0, 1)", "-0.01"});
  expect_error(run("m.onnx --calib data.csv --max-drop 2 --eval data.csv -o out.onnx"), {"--max-drop"});
  expect_error(run("m.onnx --calib data.csv --max-drop abc --eval data.csv -o out.onnx"), {"--max-drop"});
  expect_error(run("m.onnx --calib data.csv --metric accuracy -o out.onnx"), {"--metric needs --eval DATA"});
  expect_error(run("m.onnx --calib data.csv --max-drop 0.01 --eval data.csv --metric auc -o out.onnx"),
               {"--metric: expected accuracy, balanced_accuracy or macro_f1, got 'auc'"});
  expect_error(run("m.onnx --mode dynamic --max-drop 0.01 --eval data.csv -o out.onnx"), {"--mode static only"});
  expect_error(run("m.onnx --calib data.csv --max-drop 0.01 --eval nowhere.csv -o out.onnx"), {"nowhere.csv"});
  expect_error(run("m.onnx --calib data.csv --min-agreement 0.99 -o out.onnx"), {"--min-agreement needs --eval DATA"});
  expect_error(run("m.onnx --calib data.csv --min-agreement 99 --eval data.csv -o out.onnx"),
               {"--min-agreement: expected a fraction in (0, 1]", "99"});
  expect_error(run("m.onnx --calib data.csv --min-agreement 0 --eval data.csv -o out.onnx"), {"--min-agreement"});
}

TEST_F(QuantMixedCli, MinAgreementAloneDrivesTheFallback) {
  // No --max-drop: only the agreement with fp32 gates. The all-int8 model flips some of the 8
  // test images (convB), so agreement 1 forces convB back to fp32 and nothing else.
  auto r = run("m.onnx --calib data.csv --samples 8 --min-agreement 1 --eval data.csv --eval-split test -o out.onnx "
               "--report rep.json --sensitivity-samples 8 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json rep = json::parse(slurp(file("rep.json")));
  const json& mp = rep["mixed_precision"];
  EXPECT_EQ(mp["min_agreement"], 1.0);
  EXPECT_TRUE(mp["max_drop"].is_null());
  ASSERT_GE(mp["steps"].size(), 2u) << r.out;
  EXPECT_LT(mp["steps"][0]["details"]["agreement_with_fp32"].get<double>(), 1.0);
  EXPECT_EQ(mp["steps"][0]["within_budget"], false);
  EXPECT_EQ(mp["steps"].back()["details"]["agreement_with_fp32"].get<double>(), 1.0);
  EXPECT_EQ(mp["fp32_layers"], json::array({kSensitive}));
  EXPECT_NE(r.out.find("agreement with fp32 1.0000 (--min-agreement 1)"), std::string::npos) << r.out;
  const int64_t fp32_size = rep["size_after_bytes"].get<int64_t>();
  // The same with the fallen-back layer's weights stored as float16: same decisions, smaller.
  r = run("m.onnx --calib data.csv --samples 8 --min-agreement 1 --fallback-weights fp16 --eval data.csv "
          "--eval-split test -o out16.onnx --report rep16.json --sensitivity-samples 8 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json rep16 = json::parse(slurp(file("rep16.json")));
  EXPECT_EQ(rep16["mixed_precision"]["fp32_layers"], json::array({kSensitive}));
  EXPECT_EQ(rep16["fallback_weights"]["converted"], 1);
  EXPECT_LT(rep16["size_after_bytes"].get<int64_t>(), fp32_size);
  EXPECT_EQ(rep16["mixed_precision"]["steps"].back()["details"]["agreement_with_fp32"].get<double>(), 1.0);
  EXPECT_NE(r.out.find("store 1 weight tensor(s) as float16"), std::string::npos) << r.out;
  r = run("m.onnx --calib data.csv --samples 8 --min-agreement 1 --fallback-weights fp8 --eval data.csv -o x.onnx");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--fallback-weights: expected fp32 or fp16"), std::string::npos) << r.err;
  // A threshold the int8 model already meets changes nothing.
  r = run("m.onnx --calib data.csv --samples 8 --min-agreement 0.01 --eval data.csv --eval-split test -o out.onnx "
          "--report rep.json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  rep = json::parse(slurp(file("rep.json")));
  EXPECT_EQ(rep["mixed_precision"]["steps"].size(), 1u);
  EXPECT_EQ(rep["mixed_precision"]["fp32_layers"], json::array());
}

TEST_F(QuantMixedCli, EndToEndReportHasSensitivityAndMemory) {
  // Budget 0: any disagreement with fp32 on the 8 test images forces fallbacks.
  auto r = run("m.onnx --calib data.csv --samples 8 --max-drop 0 --eval data.csv --eval-split test -o out.onnx "
               "--report rep.json --sensitivity-samples 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RecordProperty("stdout", r.out);
  EXPECT_NE(r.err.find("eval: 8/8"), std::string::npos) << r.err;  // progress lines
  ASSERT_TRUE(exists(file("rep.json")));
  json rep = json::parse(slurp(file("rep.json")));
  ASSERT_TRUE(rep.contains("mixed_precision"));
  const json& mp = rep["mixed_precision"];
  EXPECT_EQ(mp["metric"], "accuracy");
  EXPECT_EQ(mp["evaluation"]["samples"], 8);
  EXPECT_GT(rep["peak_rss_mib"].get<double>(), 1.0);
  double fp32 = mp["fp32_metric"], fin = mp["final_metric"];
  EXPECT_EQ(fp32, 1.0);  // labels are the fp32 predictions
  // The int8 damage is visible on these 8 images, convB is the layer that falls back.
  ASSERT_GE(mp["steps"].size(), 2u) << r.out;
  EXPECT_LT(mp["steps"][0]["metric"].get<double>(), 1.0);
  EXPECT_EQ(mp["sensitivity"][0]["layer"], kSensitive);
  EXPECT_EQ(mp["sensitivity"].size(), 4u);
  EXPECT_EQ(mp["fp32_layers"], json::array({kSensitive}));
  EXPECT_EQ(mp["sensitivity_measured"], true);
  EXPECT_NEAR(mp["final_drop"].get<double>(), fp32 - fin, 1e-12);
  EXPECT_EQ(mp["gate"]["approved"], r.exit_code == 0);
  EXPECT_LE(mp["final_drop"].get<double>(), 0.0);
  ASSERT_TRUE(exists(file("out.onnx")));
  EXPECT_EQ(rep["calibration"]["samples"], 8);
  EXPECT_GT(rep["size_before_bytes"].get<int64_t>(), rep["size_after_bytes"].get<int64_t>());
  EXPECT_NE(r.out.find(std::string("fp32: ") + kSensitive), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("peak RSS: "), std::string::npos) << r.out;
  // The per-layer sensitivity sits beside the ranges of the layer's output tensor.
  bool attached = false;
  for (const auto& l : rep["layers"]) attached |= l.contains("sensitivity");
  EXPECT_TRUE(attached);
}

TEST_F(QuantMixedCli, FailsWhenOnlyAllFp32MeetsTheBudget) {
  // Only convB (+reluB) is left to quantize, and it breaks the predictions: exit 1, no model,
  // the report records the failed search.
  auto r = run("m.onnx --calib data.csv --samples 8 --max-drop 0 --eval data.csv --eval-split test "
               "--exclude convA,reluA,gap,fc -o out.onnx --report rep.json --quiet");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("unless every quantized layer is fp32"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no model written"), std::string::npos) << r.err;
  EXPECT_FALSE(exists(file("out.onnx")));
  ASSERT_TRUE(exists(file("rep.json")));
  json rep = json::parse(slurp(file("rep.json")));
  const json& mp = rep["mixed_precision"];
  EXPECT_EQ(mp["within_budget"], false);
  EXPECT_EQ(mp["gate"]["approved"], false);
  EXPECT_EQ(mp["gate"]["verdict"], "REJECTED");
  ASSERT_EQ(mp["sensitivity"].size(), 1u);
  EXPECT_EQ(mp["sensitivity"][0]["layer"], kSensitive);
  EXPECT_TRUE(rep["output"].is_null());
}

// ---------------------------------------------------------------------------------------------
// Real model (skips without ../shared/data).

TEST(QuantMixedRealData, BrainResnet18SmallSample) {
  const std::string data = std::string(MEDQ_SHARED_DATA);
  const std::string model = data + "/models/brain_resnet18.onnx";
  const std::string manifest = data + "/brain_mri/manifest.csv";
  if (!exists(model) || !exists(manifest)) GTEST_SKIP() << "shared data absent: " << model;
  if (!exists(kMedq)) GTEST_SKIP() << kMedq << " not built";
  char tmpl[] = "/tmp/medq_mixedreal_XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string cmd = "OMP_NUM_THREADS=2 '" + kMedq + "' quantize '" + model + "' --calib '" + manifest +
                    "' --samples 32 --max-drop 0.005 --eval '" + manifest +
                    "' --eval-split test --eval-samples 48 --sensitivity-samples 8 --quiet -o " + dir +
                    "/q.onnx --report " + dir + "/rep.json > " + dir + "/out.txt 2>&1";
  int st = std::system(cmd.c_str());
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::string out = slurp(dir + "/out.txt");
  ASSERT_TRUE(code == 0 || code == 1) << out;
  json rep = json::parse(slurp(dir + "/rep.json"));
  const json& mp = rep["mixed_precision"];
  EXPECT_EQ(mp["evaluation"]["samples"], 48);
  EXPECT_EQ(mp["gate"]["approved"], code == 0);
  if (code == 0) {
    EXPECT_LE(mp["final_drop"].get<double>(), 0.005 + 1e-12);
    EXPECT_TRUE(exists(dir + "/q.onnx"));
    EXPECT_LT(rep["size_after_bytes"].get<double>(), 0.5 * rep["size_before_bytes"].get<double>());
  }
  std::system(("rm -rf '" + dir + "'").c_str());
}

}  // namespace
}  // namespace medq
