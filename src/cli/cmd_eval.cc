// `medq eval MODEL --data ...`: runs one classifier over a labelled dataset and reports its
// clinical metrics (accuracy, balanced accuracy, per-class/macro sensitivity, specificity,
// precision, F1, AUROC with DeLong CIs, PR-AUC, calibration; optional binary task and subgroups).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fileio.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/runner.h"

#ifndef MEDQ_VERSION
#define MEDQ_VERSION "dev"
#endif

namespace medq::cli {

namespace {

const char* kEvalUsage =
    "usage: medq eval MODEL.onnx --data MANIFEST.csv|FOLDER|FILE.npz [options]\n"
    "  --split S            dataset split (default 'test'; 'all' = every sample)\n"
    "  --label-column C     manifest column holding the label (default 'label')\n"
    "  --positive a,b,...   classes forming the positive side of a binary task (score = summed\n"
    "                       probability; positive if >= --threshold, default 0.5)\n"
    "  --groups k1,k2       subgroup analysis by these columns (e.g. sex,age_group)\n"
    "  --min-group-size N   subgroups smaller than N are flagged and left out of the gaps (default 30)\n"
    "  --target-specificity X / --target-sensitivity X   operating points (default 0.90 / 0.95)\n"
    "  --batch N            images per inference call (default 16)\n"
    "  --threads T          worker threads (default: all cores)\n"
    "  --json OUT.json      write every number as JSON (atomically)\n"
    "  --quiet              no progress line, no warning about assumed preprocessing\n";

}  // namespace

int cmd_eval(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       with_spec_flags({"--data", "--split", "--label-column", "--positive", "--groups", "--batch",
                                        "--threads", "--json", "--min-group-size", "--threshold", "--target-specificity",
                                        "--target-sensitivity"}),
                       {"--help", "--quiet"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help") || a.positional.size() != 1 || !a.has("--data")) {
    std::fprintf(a.has("--help") ? stdout : stderr, "%s%s", kEvalUsage, spec_override_usage());
    return a.has("--help") ? 0 : 2;
  }
  auto batch = a.get_int("--batch", 16);
  auto threads = a.get_int("--threads", 0);
  auto min_group = a.get_int("--min-group-size", 30);
  auto thr = a.get_double("--threshold", 0.5);
  auto tspec = a.get_double("--target-specificity", 0.90);
  auto tsens = a.get_double("--target-sensitivity", 0.95);
  for (const Status& st : {batch.status(), threads.status(), min_group.status(), thr.status(), tspec.status(), tsens.status()})
    if (!st.is_ok()) return report_error(st);
  if (batch.value() < 1 || threads.value() < 0 || min_group.value() < 0)
    return report_error(invalid_argument("--batch must be >= 1, --threads and --min-group-size >= 0"));

  const std::string model_path = a.positional[0];
  auto lm = eval::load_classifier(model_path, static_cast<int>(threads.value()), spec_overrides(a), a.has("--quiet"));
  if (!lm.is_ok()) return report_error(lm.status());
  const eval::LoadedModel& model = lm.value();

  DatasetSpec spec;
  spec.path = a.get("--data");
  spec.split = a.get("--split", "test");
  if (spec.split == "all") spec.split = "";
  spec.label_column = a.get("--label-column", "label");
  spec.label_names = model.spec.labels;
  auto dsr = Dataset::open(spec);
  if (!dsr.is_ok()) return report_error(dsr.status());
  const Dataset& ds = *dsr.value();

  auto names = eval::resolve_class_names(model, ds);
  if (!names.is_ok()) return report_error(names.status());
  auto y = eval::map_labels(ds, names.value());
  if (!y.is_ok()) return report_error(y.status());
  eval::MetricOptions opt;
  opt.binary_threshold = thr.value();
  opt.target_specificity = tspec.value();
  opt.target_sensitivity = tsens.value();
  if (a.has("--positive")) {
    auto pos = eval::parse_positive(a.get("--positive"), names.value());
    if (!pos.is_ok()) return report_error(pos.status());
    opt.positive_classes = pos.value();
  }
  std::vector<std::string> keys = eval::split_list(a.get("--groups"));
  std::vector<std::vector<std::string>> group_vals;
  for (const std::string& k : keys) {
    auto g = eval::group_values(ds, k);
    if (!g.is_ok()) return report_error(g.status());
    group_vals.push_back(std::move(g.value()));
  }

  std::fprintf(stderr, "%s\n", ds.describe().c_str());
  std::vector<size_t> idx(ds.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  const int k = model.output_width(names.value().size());
  std::vector<std::vector<float>> logits;
  Status st = eval::run_models({&model}, ds, idx, model.spec.preprocess, static_cast<int>(batch.value()), k,
                               !a.has("--quiet"), &logits);
  if (!st.is_ok()) return report_error(st);

  eval::ProbMatrix probs = eval::to_probabilities(logits[0], k, model.spec.outputs);
  eval::ModelMetrics m = eval::compute_metrics(probs, y.value(), opt);
  std::printf("model %s\n%s", model_path.c_str(), eval::metrics_text(m, names.value()).c_str());
  nlohmann::json sub = nlohmann::json::object();
  for (size_t g = 0; g < keys.size(); ++g) {
    eval::SubgroupAnalysis sa =
        eval::compute_subgroups(keys[g], group_vals[g], probs, nullptr, y.value(), opt, min_group.value());
    std::printf("%s", eval::subgroups_text(sa, false).c_str());
    sub[keys[g]] = eval::subgroups_json(sa, names.value(), min_group.value());
  }

  if (a.has("--json")) {
    auto mh = eval::sha256_file(model_path);
    auto dh = eval::dataset_sha256(ds);
    if (!mh.is_ok()) return report_error(mh.status());
    if (!dh.is_ok()) return report_error(dh.status());
    nlohmann::json j;
    j["medq_version"] = MEDQ_VERSION;
    j["command"] = "eval";
    j["model"] = {{"path", model_path}, {"sha256", mh.value()}, {"labels", names.value()}};
    j["dataset"] = {{"path", spec.path},        {"split", spec.split}, {"label_column", spec.label_column},
                    {"n", ds.size()},            {"sha256", dh.value()}, {"description", ds.describe()}};
    j["class_names"] = names.value();
    j["metrics"] = eval::metrics_json(m, names.value(), true);
    j["subgroups"] = sub;
    Status ws = write_file_atomic(a.get("--json"), j.dump(1) + "\n");
    if (!ws.is_ok()) return report_error(ws);
    std::fprintf(stderr, "wrote %s\n", a.get("--json").c_str());
  }
  return 0;
}

}  // namespace medq::cli
