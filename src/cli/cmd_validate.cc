// `medq validate --reference FP32.onnx --candidate INT8.onnx --data ... --report DIR`: runs both
// models on the same images (one decode pass, both models per batch), computes each model's
// metrics, the paired statistics (disagreement, McNemar, paired DeLong AUROC difference with a
// non-inferiority verdict, output differences), subgroup fairness gaps and their change,
// batch-size robustness, applies the acceptance gate and writes report.json + report.html
// (atomically: both or neither). Exit code 0 = APPROVED, 1 = REJECTED, 2 = bad input.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "eval/gate.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/runner.h"

#ifndef MEDQ_VERSION
#define MEDQ_VERSION "dev"
#endif

namespace medq::cli {

namespace {

using nlohmann::json;

const char* kValidateUsage =
    "usage: medq validate --reference FP32.onnx --candidate CANDIDATE.onnx --data MANIFEST.csv|FOLDER|FILE.npz\n"
    "                     --report OUT_DIR [options]\n"
    "  --split S            dataset split (default 'test'; 'all' = every sample)\n"
    "  --label-column C     manifest column holding the label (default 'label')\n"
    "  --positive a,b,...   positive classes of the clinical binary task (score = summed probability)\n"
    "  --groups k1,k2       subgroup (fairness) analysis by these columns, e.g. sex,age_group\n"
    "  --policy FILE        acceptance gate (JSON, or simple YAML); default: accuracy drop <= 0.01,\n"
    "                       AUROC non-inferiority margin 0.02, subgroup gap increase <= 0.02,\n"
    "                       identical candidate predictions at batch 1 and batch N\n"
    "  --min-group-size N   overrides the policy's min_subgroup_size (default 30)\n"
    "  --threshold X        binary decision threshold on the summed probability (default 0.5)\n"
    "  --target-specificity X / --target-sensitivity X   operating points (default 0.90 / 0.95)\n"
    "  --batch N            images per inference call (default 16)\n"
    "  --threads T          worker threads (default: all cores)\n"
    "  --quiet              no progress line, no warning about assumed preprocessing\n"
    "exit status: 0 APPROVED, 1 REJECTED (or a runtime failure), 2 bad input\n";

bool same_preprocess(const PreprocessConfig& a, const PreprocessConfig& b) {
  return a.color == b.color && a.resize_w == b.resize_w && a.resize_h == b.resize_h &&
         a.interpolation == b.interpolation && a.scale == b.scale && a.mean == b.mean && a.std == b.std &&
         a.layout == b.layout;
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char b[64];
  std::strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

std::string join_names(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

json model_meta_json(const eval::LoadedModel& m) {
  json j = json::object();
  for (const auto& [k, v] : m.model.metadata) j[k] = v;
  return j;
}

// What the evaluation used: the resolved preprocessing and output semantics.
json model_input_json(const eval::LoadedModel& m) {
  return {{"preprocess", json::parse(m.spec.preprocess_json())},
          {"preprocess_from_metadata", m.spec.has_preprocess_metadata},
          {"outputs", output_kind_name(m.spec.outputs)},
          {"outputs_source", m.spec.outputs_source}};
}

}  // namespace

int cmd_validate(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       with_spec_flags({"--reference", "--candidate", "--data", "--split", "--label-column",
                                        "--positive", "--groups", "--policy", "--report", "--batch", "--threads",
                                        "--min-group-size", "--threshold", "--target-specificity",
                                        "--target-sensitivity"}),
                       {"--help", "--quiet"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help")) {
    std::printf("%s%s", kValidateUsage, spec_override_usage());
    return 0;
  }
  for (const char* req : {"--reference", "--candidate", "--data", "--report"})
    if (!a.has(req)) {
      std::fprintf(stderr, "medq validate: missing %s\n%s", req, kValidateUsage);
      return 2;
    }
  if (!a.positional.empty()) return report_error(invalid_argument("unexpected argument '" + a.positional[0] + "'"));
  auto batch = a.get_int("--batch", 16);
  auto threads = a.get_int("--threads", 0);
  auto thr = a.get_double("--threshold", 0.5);
  auto tspec = a.get_double("--target-specificity", 0.90);
  auto tsens = a.get_double("--target-sensitivity", 0.95);
  for (const Status& st : {batch.status(), threads.status(), thr.status(), tspec.status(), tsens.status()})
    if (!st.is_ok()) return report_error(st);
  if (batch.value() < 1 || threads.value() < 0)
    return report_error(invalid_argument("--batch must be >= 1, --threads >= 0"));

  // Policy first: a bad policy file should fail before minutes of inference.
  eval::GatePolicy policy = eval::default_policy();
  std::string policy_name = "default";
  if (a.has("--policy")) {
    auto p = eval::load_policy(a.get("--policy"));
    if (!p.is_ok()) return report_error(p.status());
    policy = p.value();
    policy_name = a.get("--policy");
  }
  if (a.has("--min-group-size")) {
    auto mg = a.get_int("--min-group-size", 30);
    if (!mg.is_ok()) return report_error(mg.status());
    policy.min_subgroup_size = mg.value();
  }
  const double margin = std::isnan(policy.auroc_margin) ? 0.02 : policy.auroc_margin;

  const std::string ref_path = a.get("--reference"), cand_path = a.get("--candidate");
  const SpecOverrides ov = spec_overrides(a);
  auto ref_r = eval::load_classifier(ref_path, static_cast<int>(threads.value()), ov, a.has("--quiet"));
  if (!ref_r.is_ok()) return report_error(ref_r.status());
  auto cand_r = eval::load_classifier(cand_path, static_cast<int>(threads.value()), ov, true);
  if (!cand_r.is_ok()) return report_error(cand_r.status());
  const eval::LoadedModel& ref = ref_r.value();
  const eval::LoadedModel& cand = cand_r.value();
  // The recorded preprocessing wins over an inferred one (a candidate written by an older tool
  // may lack the metadata); both recorded must agree.
  const bool ref_meta = ref.spec.has_preprocess_metadata, cand_meta = cand.spec.has_preprocess_metadata;
  PreprocessConfig cfg = ref_meta || !cand_meta ? ref.spec.preprocess : cand.spec.preprocess;
  if (!ref_meta && !cand_meta) ref.spec.warn_assumptions(a.has("--quiet"));
  if (ref_meta && cand_meta && !same_preprocess(ref.spec.preprocess, cand.spec.preprocess))
    return report_error(invalid_argument("the reference and candidate models declare different 'preprocess' metadata; "
                                         "they must see the same input"));
  if (!ref.spec.labels.empty() && !cand.spec.labels.empty() && ref.spec.labels != cand.spec.labels)
    return report_error(invalid_argument("metadata 'labels' differ: reference " + ref_path + " has [" +
                                         join_names(ref.spec.labels) + "], candidate " + cand_path + " has [" +
                                         join_names(cand.spec.labels) + "]; the models must classify the same classes"));

  DatasetSpec spec;
  spec.path = a.get("--data");
  spec.split = a.get("--split", "test");
  if (spec.split == "all") spec.split = "";
  spec.label_column = a.get("--label-column", "label");
  spec.label_names = ref.spec.labels.empty() ? cand.spec.labels : ref.spec.labels;
  auto dsr = Dataset::open(spec);
  if (!dsr.is_ok()) return report_error(dsr.status());
  const Dataset& ds = *dsr.value();

  auto names_r = eval::resolve_class_names(ref.spec.labels.empty() && !cand.spec.labels.empty() ? cand : ref, ds);
  if (!names_r.is_ok()) return report_error(names_r.status());
  const std::vector<std::string>& names = names_r.value();
  for (const eval::LoadedModel* m : {&cand, &ref})
    if (m->num_outputs > 0 && m->num_classes() != static_cast<int64_t>(names.size()))
      return report_error(invalid_argument(m->path + ": the model has " + std::to_string(m->num_outputs) +
                                           " output(s) but there are " + std::to_string(names.size()) + " labels"));
  if (ref.num_outputs > 0 && cand.num_outputs > 0 && ref.num_outputs != cand.num_outputs)
    return report_error(invalid_argument("the reference has " + std::to_string(ref.num_outputs) +
                                         " outputs, the candidate " + std::to_string(cand.num_outputs)));
  auto y_r = eval::map_labels(ds, names);
  if (!y_r.is_ok()) return report_error(y_r.status());
  const std::vector<int>& y = y_r.value();
  eval::MetricOptions opt;
  opt.binary_threshold = thr.value();
  opt.target_specificity = tspec.value();
  opt.target_sensitivity = tsens.value();
  if (a.has("--positive")) {
    auto pos = eval::parse_positive(a.get("--positive"), names);
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
  auto ref_hash = eval::sha256_file(ref_path);
  auto cand_hash = eval::sha256_file(cand_path);
  auto data_hash = eval::dataset_sha256(ds);
  for (const Status& st : {ref_hash.status(), cand_hash.status(), data_hash.status()})
    if (!st.is_ok()) return report_error(st);

  // One pass over the data, both models per batch.
  std::fprintf(stderr, "%s\n", ds.describe().c_str());
  const int k = ref.output_width(names.size());
  std::vector<size_t> idx(ds.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> logits;
  Status st = eval::run_models({&ref, &cand}, ds, idx, cfg, static_cast<int>(batch.value()), k, !a.has("--quiet"), &logits);
  if (!st.is_ok()) return report_error(st);
  double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Batch-size robustness: up to 64 images spread evenly over the dataset (so that every part
  // of a class-sorted manifest is covered) again at batch 1; their predictions must not depend
  // on which batch they were run in.
  const size_t nrob = std::min<size_t>(64, idx.size());
  std::vector<size_t> ridx(nrob);
  for (size_t i = 0; i < nrob; ++i) ridx[i] = i * idx.size() / nrob;
  std::vector<std::vector<float>> logits1;
  st = eval::run_models({&ref, &cand}, ds, ridx, cfg, 1, k, false, &logits1);
  if (!st.is_ok()) return report_error(st);
  json robust = {{"samples", nrob}, {"batch", batch.value()}, {"compared_batch", 1}};
  for (int mi = 0; mi < 2; ++mi) {
    int mismatches = 0;
    double maxd = 0;
    const OutputKind kind = (mi == 0 ? ref : cand).spec.outputs;
    std::vector<float> q1(classes_of_outputs(k)), qn(q1.size());
    for (size_t i = 0; i < nrob; ++i) {
      const float* a1 = &logits1[mi][i * k];
      const float* an = &logits[mi][ridx[i] * k];
      class_probabilities(a1, k, kind, q1.data());
      class_probabilities(an, k, kind, qn.data());
      int p1 = static_cast<int>(std::max_element(q1.begin(), q1.end()) - q1.begin()),
          pn = static_cast<int>(std::max_element(qn.begin(), qn.end()) - qn.begin());
      mismatches += p1 != pn;
      for (int c = 0; c < k; ++c) maxd = std::max(maxd, static_cast<double>(std::fabs(a1[c] - an[c])));
    }
    robust[mi == 0 ? "reference" : "candidate"] = {{"prediction_mismatches", mismatches},
                                                   {"max_abs_logit_diff", maxd}};
  }

  eval::ProbMatrix pr = eval::to_probabilities(logits[0], k, ref.spec.outputs),
                   pc = eval::to_probabilities(logits[1], k, cand.spec.outputs);
  eval::ModelMetrics mr = eval::compute_metrics(pr, y, opt), mc = eval::compute_metrics(pc, y, opt);
  eval::PairedMetrics pm = eval::compute_paired(logits[0], logits[1], pr, pc, y, mr, mc, opt, margin);

  json report;
  report["medq_version"] = MEDQ_VERSION;
  report["command"] = "validate";
  report["created"] = now_utc();
  report["models"] = {
      {"reference", {{"path", ref_path}, {"sha256", ref_hash.value()}, {"metadata", model_meta_json(ref)}, {"resolved", model_input_json(ref)}}},
      {"candidate", {{"path", cand_path}, {"sha256", cand_hash.value()}, {"metadata", model_meta_json(cand)}, {"resolved", model_input_json(cand)}}}};
  std::map<std::string, int64_t> counts;
  for (int v : y) counts[names[v]]++;
  report["dataset"] = {{"path", spec.path},          {"split", spec.split},     {"label_column", spec.label_column},
                       {"n", ds.size()},              {"sha256", data_hash.value()}, {"description", ds.describe()},
                       {"label_counts", counts}};
  report["class_names"] = names;
  std::vector<std::string> posn;
  for (int c : opt.positive_classes) posn.push_back(names[c]);
  report["options"] = {{"positive_classes", posn},
                       {"binary_threshold", opt.binary_threshold},
                       {"target_specificity", opt.target_specificity},
                       {"target_sensitivity", opt.target_sensitivity},
                       {"calibration_bins", opt.calibration_bins},
                       {"batch", batch.value()},
                       {"groups", keys},
                       {"noninferiority_margin", margin}};
  report["reference"] = eval::metrics_json(mr, names, true);
  report["candidate"] = eval::metrics_json(mc, names, true);
  report["paired"] = eval::paired_json(pm, names);
  report["batch_robustness"] = robust;
  json sub = json::object();
  std::string sub_text;
  std::vector<std::string> small_groups, few_pos;
  for (size_t g = 0; g < keys.size(); ++g) {
    eval::SubgroupAnalysis sa = eval::compute_subgroups(keys[g], group_vals[g], pr, &pc, y, opt, policy.min_subgroup_size);
    sub_text += eval::subgroups_text(sa, true);
    sub[keys[g]] = eval::subgroups_json(sa, names, policy.min_subgroup_size);
    for (const auto& gr : sa.groups) {
      if (gr.small) small_groups.push_back(keys[g] + "=" + gr.value + " (n=" + std::to_string(gr.n) + ")");
      else if (gr.ref.has_binary && gr.ref.binary.n_pos < 10)
        few_pos.push_back(keys[g] + "=" + gr.value + " (" + std::to_string(gr.ref.binary.n_pos) + ")");
    }
  }
  report["subgroups"] = sub;
  report["timing"] = {{"inference_seconds", run_s}};

  eval::GateResult gate = eval::apply_gate(policy, report);
  json gj = gate.to_json();
  gj["policy"] = policy.source;
  gj["policy_file"] = policy_name;
  report["gate"] = gj;

  // Model card: what the report can say about use, data, metrics and limits.
  json card;
  card["intended_use"] = ref.model.meta("intended_use").empty()
                             ? "Classification of " + ds.describe() + " into: " + [&] {
                                 std::string s;
                                 for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
                                 return s;
                               }() + ". Decision support only; not validated for use without a clinician."
                             : ref.model.meta("intended_use");
  card["architecture"] = ref.model.meta("architecture");
  card["training"] = ref.model.meta("training");
  card["evaluation_data"] = ds.describe() + ", sha256 " + data_hash.value().substr(0, 16) + "...";
  std::vector<std::string> limits;
  limits.push_back("Metrics hold for this dataset and split only (" + std::to_string(ds.size()) +
                   " samples); performance on other populations, devices or sites is unknown.");
  for (const auto& [l, n] : counts)
    if (n < 30) limits.push_back("Class '" + l + "' has only " + std::to_string(n) + " test samples: its metrics are imprecise (see the CIs).");
  if (!small_groups.empty()) {
    std::string s = "Subgroups below " + std::to_string(policy.min_subgroup_size) + " samples are reported but not gated: ";
    for (size_t i = 0; i < small_groups.size(); ++i) s += (i ? ", " : "") + small_groups[i];
    limits.push_back(s);
  }
  if (!few_pos.empty()) {
    std::string s = "Subgroups with fewer than 10 positive samples (sensitivity and its gaps rest on very few cases): ";
    for (size_t i = 0; i < few_pos.size(); ++i) s += (i ? ", " : "") + few_pos[i];
    limits.push_back(s);
  }
  if (!opt.positive_classes.empty())
    limits.push_back("Binary decisions use a fixed threshold of " + std::to_string(opt.binary_threshold).substr(0, 4) +
                     " on the summed positive probability; the operating points show other thresholds.");
  card["limitations"] = limits;
  report["model_card"] = card;

  std::string html = eval::render_html_report(report);
  const std::string dir = a.get("--report");
  Status ws = eval::write_report_files(dir, {{"report.json", report.dump(1) + "\n"}, {"report.html", html}});
  if (!ws.is_ok()) return report_error(ws);

  // Terminal summary.
  std::printf("reference %s\n%s\ncandidate %s\n%s\n", ref_path.c_str(), eval::metrics_text(mr, names).c_str(),
              cand_path.c_str(), eval::metrics_text(mc, names).c_str());
  std::printf("paired: disagreement %.4f, accuracy drop %+.4f, McNemar exact p %.4g (b=%lld ref-only right, c=%lld cand-only right)\n",
              pm.disagreement_rate, pm.accuracy_drop, pm.mcnemar.p_value, static_cast<long long>(pm.mcnemar.b),
              static_cast<long long>(pm.mcnemar.c));
  const eval::PairedAuc& pauc = pm.has_binary ? pm.binary_auroc : pm.macro_auroc;
  std::printf("  %s AUROC %.4f -> %.4f, diff %+.4f [%+.4f, %+.4f] p=%.3g: %s at margin %.3f\n",
              pm.has_binary ? "binary" : "macro", pauc.auc_a, pauc.auc_b, pauc.diff, pauc.lo, pauc.hi, pauc.p_value,
              pauc.non_inferior ? "non-inferior" : "NOT shown non-inferior", margin);
  std::printf("  max |logit diff| %.4g (mean %.3g), max |prob diff| %.4g (mean %.3g)\n", pm.max_abs_logit_diff,
              pm.mean_abs_logit_diff, pm.max_abs_prob_diff, pm.mean_abs_prob_diff);
  std::printf("  batch robustness (%zu images at batch 1 vs %lld): reference %d, candidate %d prediction changes\n", nrob,
              static_cast<long long>(batch.value()), robust["reference"]["prediction_mismatches"].get<int>(),
              robust["candidate"]["prediction_mismatches"].get<int>());
  std::printf("%s", sub_text.c_str());
  std::printf("\nGATE (%s): %s\n", policy_name.c_str(), gate.approved ? "APPROVED" : "REJECTED");
  for (const auto& o : gate.outcomes)
    std::printf("  [%s] %s\n", o.passed ? "pass" : "FAIL", o.message.c_str());
  std::printf("report: %s/report.json, %s/report.html\n", dir.c_str(), dir.c_str());
  return gate.approved ? 0 : 1;
}

}  // namespace medq::cli
