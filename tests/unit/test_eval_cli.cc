// `medq eval` / `medq validate` end to end on a tiny generated model and a small manifest of
// the test images: reports, gate verdicts and exit codes, and clear errors with no partial
// report on bad input. The real-data check (shared brain/skin models) skips when absent.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../passes/onnx_test_builder.h"
#include "cli_test_util.h"
#include "data/dataset.h"
#include "eval/gate.h"
#include "eval/metrics.h"
#include "eval/runner.h"

namespace medq {
namespace {

using namespace testing_onnx;
using namespace testing_cli;
using nlohmann::json;




class EvalCli : public testing_cli::CliWorkdir {
 protected:
  void SetUp() override {
    if (!make_workdir("evalcli")) GTEST_SKIP() << kMedq << " not built";
    write_model("tiny.onnx", R"(["benign", "malignant"])", 1);
    write_model("tiny2.onnx", R"(["benign", "malignant"])", 2);
    write_model("three.onnx", R"(["benign", "malignant", "other"])", 1);
    // 16 images, two labels, a sex column, an all-empty column.
    std::string csv = "path,dx,sex,empty,split\n";
    const char* imgs[] = {"gray1.png", "gray2.png", "gray4.png", "gray8.png", "rgb8.png", "rgba8.png", "la8.png",
                          "synth_420.jpg", "synth_422.jpg", "synth_444.jpg", "synth_gray.jpg", "rgb16.png",
                          "gray16.png", "palette4.png", "la16.png", "rgba16.png"};
    for (int i = 0; i < 16; ++i)
      csv += src_image(imgs[i]) + "," + (i % 2 ? "malignant" : "benign") + "," + (i % 3 ? "female" : "male") +
             ",,test\n";
    write_text(file("data.csv"), csv);
  }
  static std::string src_image(const std::string& n) { return std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + n; }

  void write_model(const std::string& name, const std::string& labels, uint32_t seed) {
    write_bytes(file(name), tiny_image_classifier(2, labels, seed, -0.05f, 0.05f));
  }

  std::string validate_args(const std::string& extra) {
    return "validate --reference tiny.onnx --candidate tiny2.onnx --data data.csv --label-column dx --positive malignant "
           "--quiet --batch 4 " + extra;
  }
  void expect_error(const CmdResult& r, const std::vector<std::string>& needles) {
    expect_input_error(r, needles);
    EXPECT_FALSE(exists(file("rep/report.json")));
    EXPECT_FALSE(exists(file("rep/report.html")));
  }

};

TEST_F(EvalCli, EvalPrintsMetricsAndWritesJson) {
  CmdResult r = run("eval tiny.onnx --data data.csv --label-column dx --positive malignant --groups sex --quiet --json out.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("accuracy"), std::string::npos);
  EXPECT_NE(r.out.find("subgroups by 'sex'"), std::string::npos);
  json j = json::parse(slurp(file("out.json")));
  EXPECT_EQ(j["metrics"]["n"].get<int>(), 16);
  EXPECT_EQ(j["dataset"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_TRUE(j["metrics"]["binary"].contains("auroc"));
  EXPECT_EQ(j["subgroups"]["sex"]["groups"].size(), 2u);
}

TEST_F(EvalCli, ValidateApprovedWritesBothReports) {
  write_text(file("gate.json"), R"({"max": {"paired.accuracy_drop": 1.0}, "auroc_noninferiority_margin": 1.0,
                                   "max_subgroup_gap_increase": 1.0, "min_subgroup_size": 3})");
  CmdResult r = run(validate_args("--groups sex --policy gate.json --report rep"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("APPROVED"), std::string::npos);
  json j = json::parse(slurp(file("rep/report.json")));
  EXPECT_EQ(j["gate"]["verdict"], "APPROVED");
  EXPECT_EQ(j["models"]["reference"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_FALSE(j["medq_version"].get<std::string>().empty());
  EXPECT_EQ(j["batch_robustness"]["samples"].get<int>(), 16);
  EXPECT_EQ(j["batch_robustness"]["candidate"]["prediction_mismatches"].get<int>(), 0);
  EXPECT_LT(j["batch_robustness"]["candidate"]["max_abs_logit_diff"].get<double>(), 1e-4);
  // Model card, subgroup sizes and the small-group flag (min size 3: every group is eligible).
  EXPECT_FALSE(j["model_card"]["intended_use"].get<std::string>().empty());
  EXPECT_FALSE(j["model_card"]["limitations"].empty());
  int n_sex = 0;
  for (const auto& g : j["subgroups"]["sex"]["groups"]) {
    n_sex += g["n"].get<int>();
    EXPECT_FALSE(g["small"].get<bool>());
  }
  EXPECT_EQ(n_sex, 16);
  // Operating points and reliability curve of the binary task / the model.
  EXPECT_TRUE(j["candidate"]["binary"]["sensitivity_at_specificity"].contains("sensitivity"));
  EXPECT_EQ(j["candidate"]["calibration"]["bins"].size(), 15u);
  EXPECT_TRUE(j["paired"].contains("mcnemar"));
  EXPECT_TRUE(j["subgroups"]["sex"]["gaps"].contains("increase"));
  std::string html = slurp(file("rep/report.html"));
  EXPECT_NE(html.find("APPROVED"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);  // nothing fetched from the network
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);  // no external assets
}

TEST_F(EvalCli, ValidateRejectedByYamlPolicyExits1) {
  write_text(file("gate.yaml"),
             "# clinical gate\nmin:\n  candidate.accuracy: 1.01   # impossible\n  candidate.binary.sensitivity: 0.0\n"
             "max:\n  paired.accuracy_drop: 1\n");
  CmdResult r = run(validate_args("--policy gate.yaml --report rep"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("REJECTED"), std::string::npos);
  EXPECT_NE(r.out.find("[FAIL] candidate.accuracy"), std::string::npos) << r.out;
  json j = json::parse(slurp(file("rep/report.json")));
  EXPECT_EQ(j["gate"]["verdict"], "REJECTED");
}

TEST_F(EvalCli, BadInputsGiveClearErrorsAndNoReport) {
  // Labels not in the model's list (the 'sex' column read as labels).
  expect_error(run("validate --reference tiny.onnx --candidate tiny2.onnx --data data.csv --label-column sex --report rep"),
               {"not in the model's label list", "'female'", "'male'"});
  // Missing column.
  expect_error(run(validate_args("--groups site --report rep")), {"no column 'site'", "available"});
  expect_error(run("validate --reference tiny.onnx --candidate tiny2.onnx --data data.csv --label-column nope --report rep"),
               {"nope"});
  // Empty subgroup column.
  expect_error(run(validate_args("--groups empty --report rep")), {"'empty' is empty for every sample"});
  // Output count differs from the label count.
  expect_error(run("validate --reference three.onnx --candidate three.onnx --data data.csv --label-column dx --report rep"),
               {"2 outputs but 3 labels"});
  // Unknown positive class; malformed policy.
  expect_error(run(validate_args("--positive melanoma --report rep")), {"melanoma"});
  write_text(file("bad.json"), R"({"maximum": {"x": 1}})");
  expect_error(run(validate_args("--policy bad.json --report rep")), {"unknown policy key 'maximum'"});
  // A reference/candidate pair that classifies different label lists.
  write_model("cancer.onnx", R"(["benign", "cancer"])", 2);
  expect_error(run("validate --reference tiny.onnx --candidate cancer.onnx --data data.csv --label-column dx --report rep"),
               {"metadata 'labels' differ", "[benign, malignant]", "[benign, cancer]", "cancer.onnx"});
  // Bad gap name in a policy.
  write_text(file("badgap.yaml"), "max_subgroup_gap:\n  aucroc: 0.05\n");
  expect_error(run(validate_args("--policy badgap.yaml --report rep")), {"badgap.yaml", "max_subgroup_gap.aucroc"});
  // An image that cannot be read fails the run (naming the file) and writes no report.
  std::string bad = slurp(file("data.csv")) + file("missing.png") + ",benign,male,,test\n";
  write_text(file("bad.csv"), bad);
  CmdResult rm = run("validate --reference tiny.onnx --candidate tiny2.onnx --data bad.csv --label-column dx --quiet "
                     "--report rep");
  EXPECT_NE(rm.exit_code, 0);
  EXPECT_NE(rm.err.find("missing.png"), std::string::npos) << rm.err;
  EXPECT_FALSE(exists(file("rep/report.json")));
  EXPECT_FALSE(exists(file("rep/report.html")));
  // eval with the mismatching model, too.
  CmdResult r = run("eval three.onnx --data data.csv --label-column dx --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("2 outputs but 3 labels"), std::string::npos) << r.err;
}

TEST_F(EvalCli, SmallSubgroupsAreFlaggedNotGated) {
  // Default min size 30 > every group: all flagged, gaps not computable, gap rules not gated.
  write_text(file("gate.json"), R"({"max_subgroup_gap_increase": 0.0, "max_subgroup_gap": {"auroc": 0.0}})");
  CmdResult r = run(validate_args("--groups sex --policy gate.json --report rep"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  json j = json::parse(slurp(file("rep/report.json")));
  for (const auto& g : j["subgroups"]["sex"]["groups"]) EXPECT_TRUE(g["small"].get<bool>());
  EXPECT_TRUE(j["subgroups"]["sex"]["gaps"]["candidate"]["auroc"].is_null());
  bool saw_gap_rule = false;
  for (const auto& o : j["gate"]["rules"])
    if (o["metric"] == "subgroups.sex.gaps.candidate.auroc") {
      saw_gap_rule = true;
      EXPECT_TRUE(o["passed"].get<bool>());
      EXPECT_NE(o["message"].get<std::string>().find("not gated"), std::string::npos);
    }
  EXPECT_TRUE(saw_gap_rule);
  EXPECT_NE(r.out.find("(small: not in gaps)"), std::string::npos) << r.out;
}

TEST(EvalGate, ExamplePolicyAndGapLimits) {
  auto p = eval::load_policy(std::string(MEDQ_SOURCE_DIR) + "/examples/gate.yaml");
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  std::map<std::string, std::pair<std::string, double>> rules;
  for (const auto& r : p.value().rules) rules[r.metric] = {r.op, r.value};
  EXPECT_EQ(rules["paired.accuracy_drop"], std::make_pair(std::string("<="), 0.01));
  EXPECT_EQ(rules["candidate.binary.sensitivity"], std::make_pair(std::string(">="), 0.95));
  EXPECT_EQ(rules["candidate.binary.specificity"], std::make_pair(std::string(">="), 0.90));
  EXPECT_DOUBLE_EQ(p.value().auroc_margin, 0.02);
  EXPECT_EQ(p.value().min_subgroup_size, 30);
  EXPECT_DOUBLE_EQ(p.value().max_gap.at("auroc"), 0.05);
  EXPECT_DOUBLE_EQ(p.value().max_gap_increase.at("auroc"), 0.005);

  // Gap limits: a number applies to every gap (increase) / to the AUROC gap (absolute).
  auto q = eval::parse_policy_text(R"({"max_subgroup_gap_increase": 0.01, "max_subgroup_gap": 0.05})", "q.json");
  ASSERT_TRUE(q.is_ok()) << q.status().message();
  EXPECT_EQ(q.value().max_gap_increase.size(), 4u);
  EXPECT_EQ(q.value().max_gap.size(), 1u);
  json gaps;
  gaps["candidate"] = {{"auroc", 0.06}};
  gaps["increase"] = {{"auroc", 0.004}, {"sensitivity", 0.011}, {"fpr", -0.1}, {"equalized_odds", nullptr}};
  json rep;
  rep["subgroups"]["age"]["gaps"] = gaps;
  eval::GateResult g = eval::apply_gate(q.value(), rep);
  EXPECT_FALSE(g.approved);
  std::map<std::string, bool> passed;
  for (const auto& o : g.outcomes) passed[o.rule.metric] = o.passed;
  EXPECT_FALSE(passed.at("subgroups.age.gaps.candidate.auroc"));  // 0.06 > 0.05
  EXPECT_TRUE(passed.at("subgroups.age.gaps.increase.auroc"));
  EXPECT_FALSE(passed.at("subgroups.age.gaps.increase.sensitivity"));  // 0.011 > 0.01
  EXPECT_TRUE(passed.at("subgroups.age.gaps.increase.equalized_odds"));  // not computable
  EXPECT_FALSE(eval::parse_policy_text(R"({"max_subgroup_gap": {"x": 1}})", "r.json").is_ok());
  EXPECT_FALSE(eval::parse_policy_text(R"({"max_subgroup_gap": "big"})", "r.json").is_ok());
}

TEST(EvalGate, YamlSubsetAndRules) {
  auto y = eval::parse_simple_yaml("a:\n  b: 1\n  c:\n    d: 'x y'   # c\ne: 0.5\nf: true\n", "t.yaml");
  ASSERT_TRUE(y.is_ok()) << y.status().message();
  EXPECT_EQ(y.value()["a"]["b"], 1);
  EXPECT_EQ(y.value()["a"]["c"]["d"], "x y");
  EXPECT_EQ(y.value()["e"], 0.5);
  EXPECT_EQ(y.value()["f"], true);
  EXPECT_FALSE(eval::parse_simple_yaml("a:\n  - 1\n", "t.yaml").is_ok());

  json rep = {{"candidate", {{"accuracy", 0.9}, {"per_class", {{"a.b", {{"f1", 0.5}}}}}}},
              {"paired", {{"accuracy_drop", 0.02}, {"binary_auroc", {{"ci_lo", -0.01}}}}},
              {"subgroups", {{"sex", {{"gaps", {{"increase", {{"auroc", 0.03}, {"sensitivity", nullptr}, {"fpr", 0.0}, {"equalized_odds", 0.0}}}}}}}}}};
  ASSERT_NE(eval::lookup_metric(rep, "candidate.per_class.a.b.f1"), nullptr);  // dotted key
  EXPECT_EQ(eval::lookup_metric(rep, "candidate.nope"), nullptr);
  auto p = eval::parse_policy_text(
      R"({"min": {"candidate.accuracy": 0.95}, "max": {"paired.accuracy_drop": 0.01},
          "rules": [{"metric": "candidate.per_class.a.b.f1", ">=": 0.4}, {"metric": "missing.metric", "op": "<", "value": 1}],
          "auroc_noninferiority_margin": 0.02, "max_subgroup_gap_increase": 0.02})",
      "p.json");
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  eval::GateResult g = eval::apply_gate(p.value(), rep);
  EXPECT_FALSE(g.approved);
  std::map<std::string, bool> passed;
  for (const auto& o : g.outcomes) passed[o.rule.metric] = o.passed;
  EXPECT_FALSE(passed["candidate.accuracy"]);
  EXPECT_FALSE(passed["paired.accuracy_drop"]);
  EXPECT_TRUE(passed["candidate.per_class.a.b.f1"]);
  EXPECT_FALSE(passed["missing.metric"]);
  EXPECT_TRUE(passed["paired.binary_auroc.ci_lo"]);             // -0.01 > -0.02
  EXPECT_FALSE(passed["subgroups.sex.gaps.increase.auroc"]);    // 0.03 > 0.02
  EXPECT_TRUE(passed["subgroups.sex.gaps.increase.sensitivity"]);  // not computable: not gated
  EXPECT_EQ(g.to_json()["verdict"], "REJECTED");
}

// The shared reference models on their test splits: the model-card numbers. Skips without data.
TEST(EvalRealData, ModelCardAccuracies) {
  const std::string root = MEDQ_SHARED_DATA;
  struct Case {
    std::string model, manifest, label_col, positive;
    double acc, bal, bin_auc;
  };
  std::vector<Case> cases = {
      {"brain_resnet18", "brain_mri/manifest.csv", "label", "", 0.9872, NAN, NAN},
      {"skin_mobilenet_v2", "skin_ham10000/manifest.csv", "dx", "mel,bcc,akiec", 0.7525, 0.567, 0.892}};
  for (const Case& c : cases) {
    std::string mp = root + "/models/" + c.model + ".onnx";
    if (!exists(mp) || !exists(root + "/" + c.manifest)) GTEST_SKIP() << "shared data absent: " << mp;
    auto m = eval::load_classifier(mp, 0);
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    DatasetSpec spec{root + "/" + c.manifest, "test", c.label_col};
    auto ds = Dataset::open(spec);
    ASSERT_TRUE(ds.is_ok()) << ds.status().message();
    auto names = eval::resolve_class_names(m.value(), *ds.value());
    ASSERT_TRUE(names.is_ok());
    auto y = eval::map_labels(*ds.value(), names.value());
    ASSERT_TRUE(y.is_ok()) << y.status().message();
    std::vector<size_t> idx(ds.value()->size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::vector<std::vector<float>> logits;
    const int k = static_cast<int>(names.value().size());
    Status st = eval::run_models({&m.value()}, *ds.value(), idx, m.value().spec.preprocess, 32, k, false, &logits);
    ASSERT_TRUE(st.is_ok()) << st.message();
    eval::MetricOptions opt;
    if (!c.positive.empty()) opt.positive_classes = eval::parse_positive(c.positive, names.value()).value();
    eval::ModelMetrics mm = eval::compute_metrics(eval::to_probabilities(logits[0], k, m.value().spec.outputs), y.value(), opt);
    EXPECT_NEAR(mm.accuracy, c.acc, 1e-4) << c.model;
    if (!std::isnan(c.bal)) {
      EXPECT_NEAR(mm.balanced_accuracy, c.bal, 5e-4) << c.model;
    }
    if (!std::isnan(c.bin_auc)) {
      EXPECT_NEAR(mm.binary.auroc.auc, c.bin_auc, 5e-4) << c.model;
    }
  }
}

}  // namespace
}  // namespace medq
