#include "eval/report.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace medq::eval {

using nlohmann::json;

namespace {

json num(double v) { return std::isnan(v) || std::isinf(v) ? json(nullptr) : json(v); }

json calibration_json(const Calibration& c, bool bins) {
  json j = {{"ece", num(c.ece)}, {"mce", num(c.mce)}, {"num_bins", c.bins.size()}};
  if (bins) {
    json b = json::array();
    for (const auto& x : c.bins)
      b.push_back({{"lo", x.lo}, {"hi", x.hi}, {"count", x.count}, {"confidence", num(x.confidence)},
                   {"accuracy", num(x.accuracy)}});
    j["bins"] = b;
  }
  return j;
}

json confusion_json(const ConfusionMatrix& cm) {
  json m = json::array();
  for (int t = 0; t < cm.k; ++t) {
    json row = json::array();
    for (int p = 0; p < cm.k; ++p) row.push_back(cm.at(t, p));
    m.push_back(row);
  }
  return m;
}

json op_json(const OperatingPoint& o) {
  return {{"target", o.target}, {"found", o.found}, {"threshold", num(o.threshold)},
          {"sensitivity", num(o.sensitivity)}, {"specificity", num(o.specificity)}};
}

json roc_json(const RocCurve& r) {
  // Rounded to 5 decimals: for plotting.
  auto r5 = [](const std::vector<double>& v) {
    json a = json::array();
    for (double x : v) a.push_back(std::round(x * 1e5) / 1e5);
    return a;
  };
  return {{"fpr", r5(r.fpr)}, {"tpr", r5(r.tpr)}};
}

json paired_auc_json(const PairedAuc& p) {
  return {{"reference", num(p.auc_a)}, {"candidate", num(p.auc_b)}, {"diff", num(p.diff)}, {"se", num(p.se)},
          {"ci_lo", num(p.lo)},        {"ci_hi", num(p.hi)},        {"z", num(p.z)},       {"p_value", num(p.p_value)},
          {"margin", p.margin},        {"non_inferior", p.non_inferior}};
}

json gaps_json(const GroupGaps& g) {
  return {{"auroc", num(g.auroc)},   {"sensitivity", num(g.sensitivity)}, {"fpr", num(g.fpr)},
          {"equalized_odds", num(g.equalized_odds)}, {"accuracy", num(g.accuracy)}, {"basis", g.auroc_basis}};
}

std::string f4(double v) {
  if (std::isnan(v)) return "  n/a ";
  char b[32];
  std::snprintf(b, sizeof(b), "%.4f", v);
  return b;
}

}  // namespace

json metrics_json(const ModelMetrics& m, const std::vector<std::string>& names, bool curves) {
  json j;
  j["n"] = m.n;
  j["accuracy"] = num(m.accuracy);
  j["balanced_accuracy"] = num(m.balanced_accuracy);
  j["macro"] = {{"sensitivity", num(m.macro_sensitivity)}, {"specificity", num(m.macro_specificity)},
                {"precision", num(m.macro_precision)},     {"f1", num(m.macro_f1)},
                {"auroc", num(m.macro_auroc)},             {"pr_auc", num(m.macro_pr_auc)}};
  json pc = json::object();
  for (int c = 0; c < m.k; ++c) {
    const ClassMetrics& x = m.per_class[c];
    json e = {{"support", x.support},
              {"tp", x.tp},
              {"fp", x.fp},
              {"fn", x.fn},
              {"tn", x.tn},
              {"sensitivity", num(x.sensitivity)},
              {"specificity", num(x.specificity)},
              {"precision", num(x.precision)},
              {"f1", num(x.f1)},
              {"auroc", num(x.auroc.auc)},
              {"auroc_ci_lo", num(x.auroc.lo)},
              {"auroc_ci_hi", num(x.auroc.hi)},
              {"auroc_se", num(x.auroc.se)},
              {"pr_auc", num(x.pr_auc)}};
    pc[names[c]] = e;
  }
  j["per_class"] = pc;
  j["confusion"] = {{"labels", names}, {"matrix", confusion_json(m.confusion)}, {"rows", "true"}, {"columns", "predicted"}};
  j["calibration"] = calibration_json(m.calibration, curves);
  if (curves && !m.roc.empty()) {
    json r = json::object();
    for (int c = 0; c < m.k && c < static_cast<int>(m.roc.size()); ++c) r[names[c]] = roc_json(m.roc[c]);
    j["roc"] = r;
  }
  if (m.has_binary) {
    const BinaryMetrics& b = m.binary;
    std::vector<std::string> pos;
    for (int c : b.positive_classes) pos.push_back(names[c]);
    json bj = {{"positive_classes", pos},
               {"threshold", b.threshold},
               {"n_pos", b.n_pos},
               {"n_neg", b.n_neg},
               {"tp", b.tp},
               {"fp", b.fp},
               {"fn", b.fn},
               {"tn", b.tn},
               {"accuracy", num(b.accuracy)},
               {"balanced_accuracy", num(b.balanced_accuracy)},
               {"sensitivity", num(b.sensitivity)},
               {"specificity", num(b.specificity)},
               {"precision", num(b.precision)},
               {"f1", num(b.f1)},
               {"fpr", num(b.fpr)},
               {"auroc", num(b.auroc.auc)},
               {"auroc_ci_lo", num(b.auroc.lo)},
               {"auroc_ci_hi", num(b.auroc.hi)},
               {"auroc_se", num(b.auroc.se)},
               {"pr_auc", num(b.pr_auc)},
               {"sensitivity_at_specificity", op_json(b.sens_at_spec)},
               {"specificity_at_sensitivity", op_json(b.spec_at_sens)},
               {"calibration", calibration_json(b.calibration, curves)}};
    if (curves && !b.roc.fpr.empty()) bj["roc"] = roc_json(b.roc);
    j["binary"] = bj;
  }
  return j;
}

json paired_json(const PairedMetrics& p, const std::vector<std::string>& names) {
  json j;
  j["n"] = p.n;
  j["disagreement_rate"] = num(p.disagreement_rate);
  j["prediction_confusion"] = {{"labels", names}, {"matrix", confusion_json(p.prediction_confusion)},
                               {"rows", "reference prediction"}, {"columns", "candidate prediction"}};
  j["mcnemar"] = {{"ref_right_cand_wrong", p.mcnemar.b}, {"ref_wrong_cand_right", p.mcnemar.c},
                  {"p_value", num(p.mcnemar.p_value)}, {"mid_p_value", num(p.mcnemar.mid_p_value)}};
  j["accuracy_reference"] = num(p.accuracy_ref);
  j["accuracy_candidate"] = num(p.accuracy_cand);
  j["accuracy_drop"] = num(p.accuracy_drop);
  j["balanced_accuracy_drop"] = num(p.balanced_accuracy_drop);
  j["macro_auroc_drop"] = num(p.macro_auroc_drop);
  j["macro_f1_drop"] = num(p.macro_f1_drop);
  j["macro_auroc"] = paired_auc_json(p.macro_auroc);
  json pc = json::object();
  for (size_t c = 0; c < p.per_class_auroc.size(); ++c) pc[names[c]] = paired_auc_json(p.per_class_auroc[c]);
  j["per_class_auroc"] = pc;
  if (p.has_binary) {
    j["binary_auroc"] = paired_auc_json(p.binary_auroc);
    j["binary_sensitivity_drop"] = num(p.binary_sensitivity_drop);
    j["binary_specificity_drop"] = num(p.binary_specificity_drop);
  }
  j["max_abs_logit_diff"] = num(p.max_abs_logit_diff);
  j["mean_abs_logit_diff"] = num(p.mean_abs_logit_diff);
  j["max_abs_prob_diff"] = num(p.max_abs_prob_diff);
  j["mean_abs_prob_diff"] = num(p.mean_abs_prob_diff);
  return j;
}

json subgroups_json(const SubgroupAnalysis& s, const std::vector<std::string>& names, int64_t min_size) {
  json groups = json::array();
  for (const SubgroupResult& g : s.groups) {
    json e = {{"value", g.value}, {"n", g.n}, {"small", g.small}};
    e["reference"] = metrics_json(g.ref, names, false);
    if (g.has_cand) e["candidate"] = metrics_json(g.cand, names, false);
    groups.push_back(e);
  }
  json gaps = {{"reference", gaps_json(s.gaps_ref)}};
  if (s.has_cand) {
    gaps["candidate"] = gaps_json(s.gaps_cand);
    gaps["increase"] = gaps_json(s.gap_increase);
  }
  return {{"key", s.key}, {"min_size", min_size}, {"groups", groups}, {"gaps", gaps}};
}

std::string metrics_text(const ModelMetrics& m, const std::vector<std::string>& names) {
  std::string s;
  char b[512];
  std::snprintf(b, sizeof(b), "samples %lld   accuracy %s   balanced accuracy %s   macro AUROC %s   ECE(15) %s\n",
                static_cast<long long>(m.n), f4(m.accuracy).c_str(), f4(m.balanced_accuracy).c_str(),
                f4(m.macro_auroc).c_str(), f4(m.calibration.ece).c_str());
  s += b;
  std::snprintf(b, sizeof(b), "  %-16s %7s %7s %7s %7s %7s %7s  %-17s %7s\n", "class", "support", "sens", "spec", "prec",
                "f1", "auroc", "auroc 95% CI", "pr_auc");
  s += b;
  for (int c = 0; c < m.k; ++c) {
    const ClassMetrics& x = m.per_class[c];
    std::snprintf(b, sizeof(b), "  %-16s %7lld %7s %7s %7s %7s %7s  [%s, %s] %7s\n", names[c].c_str(),
                  static_cast<long long>(x.support), f4(x.sensitivity).c_str(), f4(x.specificity).c_str(),
                  f4(x.precision).c_str(), f4(x.f1).c_str(), f4(x.auroc.auc).c_str(), f4(x.auroc.lo).c_str(),
                  f4(x.auroc.hi).c_str(), f4(x.pr_auc).c_str());
    s += b;
  }
  std::snprintf(b, sizeof(b), "  %-16s %7s %7s %7s %7s %7s %7s  %-17s %7s\n", "macro", "", f4(m.macro_sensitivity).c_str(),
                f4(m.macro_specificity).c_str(), f4(m.macro_precision).c_str(), f4(m.macro_f1).c_str(),
                f4(m.macro_auroc).c_str(), "", f4(m.macro_pr_auc).c_str());
  s += b;
  if (m.has_binary) {
    const BinaryMetrics& x = m.binary;
    std::string pos;
    for (int c : x.positive_classes) pos += (pos.empty() ? "" : "+") + names[c];
    std::snprintf(b, sizeof(b),
                  "binary task %s vs rest (score = summed probability, positive if >= %.2f): %lld positive, %lld "
                  "negative\n  AUROC %s [%s, %s]  PR-AUC %s  sensitivity %s  specificity %s  precision %s  F1 %s  "
                  "ECE %s\n",
                  pos.c_str(), x.threshold, static_cast<long long>(x.n_pos), static_cast<long long>(x.n_neg),
                  f4(x.auroc.auc).c_str(), f4(x.auroc.lo).c_str(), f4(x.auroc.hi).c_str(), f4(x.pr_auc).c_str(),
                  f4(x.sensitivity).c_str(), f4(x.specificity).c_str(), f4(x.precision).c_str(), f4(x.f1).c_str(),
                  f4(x.calibration.ece).c_str());
    s += b;
    std::snprintf(b, sizeof(b),
                  "  sensitivity at specificity >= %.2f: %s (specificity %s, threshold %s)\n"
                  "  specificity at sensitivity >= %.2f: %s (sensitivity %s, threshold %s)\n",
                  x.sens_at_spec.target, f4(x.sens_at_spec.sensitivity).c_str(), f4(x.sens_at_spec.specificity).c_str(),
                  f4(x.sens_at_spec.threshold).c_str(), x.spec_at_sens.target, f4(x.spec_at_sens.specificity).c_str(),
                  f4(x.spec_at_sens.sensitivity).c_str(), f4(x.spec_at_sens.threshold).c_str());
    s += b;
  }
  s += "confusion matrix (rows true, columns predicted):\n";
  std::snprintf(b, sizeof(b), "  %-16s", "");
  s += b;
  for (int c = 0; c < m.k; ++c) {
    std::snprintf(b, sizeof(b), " %8.8s", names[c].c_str());
    s += b;
  }
  s += "\n";
  for (int t = 0; t < m.k; ++t) {
    std::snprintf(b, sizeof(b), "  %-16s", names[t].c_str());
    s += b;
    for (int p = 0; p < m.k; ++p) {
      std::snprintf(b, sizeof(b), " %8lld", static_cast<long long>(m.confusion.at(t, p)));
      s += b;
    }
    s += "\n";
  }
  return s;
}

std::string subgroups_text(const SubgroupAnalysis& sa, bool paired) {
  std::string s;
  char b[512];
  bool binary = !sa.groups.empty() && sa.groups[0].ref.has_binary;
  std::snprintf(b, sizeof(b), "subgroups by '%s' (%s AUROC/sensitivity/FPR):\n", sa.key.c_str(),
                binary ? "binary-task" : "macro");
  s += b;
  std::snprintf(b, sizeof(b), "  %-20s %6s %8s %8s %17s %8s %8s%s\n", "group", "n", "acc", "auroc", "auroc 95% CI", "sens",
                "fpr", paired ? "   | cand acc  auroc    sens     fpr" : "");
  s += b;
  auto vals = [&](const ModelMetrics& m, double* auc, double* lo, double* hi, double* sens, double* fpr) {
    if (binary) {
      *auc = m.binary.auroc.auc, *lo = m.binary.auroc.lo, *hi = m.binary.auroc.hi;
      *sens = m.binary.sensitivity, *fpr = m.binary.fpr;
    } else {
      *auc = m.macro_auroc, *lo = *hi = NAN;
      *sens = m.macro_sensitivity, *fpr = 1 - m.macro_specificity;
    }
  };
  for (const SubgroupResult& g : sa.groups) {
    double auc, lo, hi, sens, fpr;
    vals(g.ref, &auc, &lo, &hi, &sens, &fpr);
    std::snprintf(b, sizeof(b), "  %-20s %6lld %8s %8s  [%s,%s] %8s %8s", g.value.c_str(), static_cast<long long>(g.n),
                  f4(g.ref.accuracy).c_str(), f4(auc).c_str(), f4(lo).c_str(), f4(hi).c_str(), f4(sens).c_str(),
                  f4(fpr).c_str());
    s += b;
    if (paired && g.has_cand) {
      vals(g.cand, &auc, &lo, &hi, &sens, &fpr);
      std::snprintf(b, sizeof(b), "   | %8s %8s %8s %8s", f4(g.cand.accuracy).c_str(), f4(auc).c_str(), f4(sens).c_str(),
                    f4(fpr).c_str());
      s += b;
    }
    s += g.small ? "   (small: not in gaps)\n" : "\n";
  }
  auto gap_line = [&](const char* what, const GroupGaps& g) {
    std::snprintf(b, sizeof(b), "  gap %-10s auroc %s  sensitivity %s  fpr %s  equalized odds %s  accuracy %s\n", what,
                  f4(g.auroc).c_str(), f4(g.sensitivity).c_str(), f4(g.fpr).c_str(), f4(g.equalized_odds).c_str(),
                  f4(g.accuracy).c_str());
    s += b;
  };
  gap_line(paired ? "reference" : "", sa.gaps_ref);
  if (paired) {
    gap_line("candidate", sa.gaps_cand);
    gap_line("increase", sa.gap_increase);
  }
  return s;
}

Status write_report_files(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
      return io_error("cannot create report folder '" + dir + "': " + std::strerror(errno));
  } else if (!S_ISDIR(st.st_mode)) {
    return io_error("'" + dir + "' exists and is not a folder");
  }
  std::vector<std::string> tmps;
  auto cleanup = [&]() {
    for (const auto& t : tmps) std::remove(t.c_str());
  };
  for (const auto& [name, content] : files) {
    std::string tmp = dir + "/." + name + ".tmp." + std::to_string(getpid());
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) {
      cleanup();
      return io_error("cannot write '" + tmp + "': " + std::strerror(errno));
    }
    tmps.push_back(tmp);
    bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size();
    ok = std::fflush(f) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      cleanup();
      return io_error("write error on '" + tmp + "'");
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    std::string dst = dir + "/" + files[i].first;
    if (std::rename(tmps[i].c_str(), dst.c_str()) != 0) {
      cleanup();
      return io_error("cannot rename '" + tmps[i] + "' to '" + dst + "': " + std::strerror(errno));
    }
  }
  return Status::ok();
}

}  // namespace medq::eval
