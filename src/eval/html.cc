// Self-contained HTML rendering of a `medq validate` report: inline CSS, charts as inline SVG,
// no scripts and no external assets.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "eval/report.h"

namespace medq::eval {

using nlohmann::json;

namespace {

std::string esc(const std::string& s) {
  std::string r;
  for (char c : s) {
    switch (c) {
      case '&': r += "&amp;"; break;
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '"': r += "&quot;"; break;
      case '\'': r += "&#39;"; break;
      default: r += c;
    }
  }
  return r;
}

double getd(const json& j, const std::string& k) {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return NAN;
  return j[k].get<double>();
}

std::string fv(double v, int prec = 4) {
  if (std::isnan(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof(b), "%.*f", prec, v);
  return b;
}

std::string fj(const json& j, const std::string& k, int prec = 4) { return fv(getd(j, k), prec); }

const char* kRef = "#1f77b4";
const char* kCand = "#ff7f0e";

// ROC plot of reference vs candidate curves.
std::string roc_svg(const std::string& title, const json& r, const json& c, const std::string& auc_text) {
  const int W = 220, H = 220, P = 30;
  std::ostringstream s;
  s << "<figure class='chart'><svg width='" << W + P + 10 << "' height='" << H + P + 24 << "' role='img' aria-label='ROC "
    << esc(title) << "'>";
  s << "<g transform='translate(" << P << ",10)'>";
  s << "<rect x='0' y='0' width='" << W << "' height='" << H << "' fill='#fff' stroke='#999'/>";
  for (int i = 1; i < 4; ++i)
    s << "<line x1='" << W * i / 4 << "' y1='0' x2='" << W * i / 4 << "' y2='" << H << "' stroke='#eee'/><line x1='0' y1='"
      << H * i / 4 << "' x2='" << W << "' y2='" << H * i / 4 << "' stroke='#eee'/>";
  s << "<line x1='0' y1='" << H << "' x2='" << W << "' y2='0' stroke='#bbb' stroke-dasharray='4,3'/>";
  auto path = [&](const json& curve, const char* color, const char* dash) {
    if (!curve.is_object() || !curve.contains("fpr")) return;
    const json& fx = curve["fpr"];
    const json& ty = curve["tpr"];
    s << "<polyline fill='none' stroke='" << color << "' stroke-width='2' " << dash << " points='";
    for (size_t i = 0; i < fx.size(); ++i) {
      char b[64];
      std::snprintf(b, sizeof(b), "%.1f,%.1f ", fx[i].get<double>() * W, H - ty[i].get<double>() * H);
      s << b;
    }
    s << "'/>";
  };
  path(r, kRef, "");
  path(c, kCand, "stroke-dasharray='5,3'");
  s << "<text x='" << W / 2 << "' y='" << H + 22 << "' text-anchor='middle' class='ax'>1 - specificity</text>";
  s << "<text x='-" << H / 2 << "' y='-18' transform='rotate(-90)' text-anchor='middle' class='ax'>sensitivity</text>";
  s << "</g></svg><figcaption><b>" << esc(title) << "</b><br>" << auc_text << "</figcaption></figure>";
  return s.str();
}

std::string reliability_svg(const std::string& title, const json& rb, const json& cb) {
  const int W = 260, H = 220, P = 34;
  std::ostringstream s;
  s << "<figure class='chart'><svg width='" << W + P + 10 << "' height='" << H + P + 24 << "' role='img' aria-label='reliability'>";
  s << "<g transform='translate(" << P << ",10)'><rect x='0' y='0' width='" << W << "' height='" << H
    << "' fill='#fff' stroke='#999'/>";
  s << "<line x1='0' y1='" << H << "' x2='" << W << "' y2='0' stroke='#bbb' stroke-dasharray='4,3'/>";
  auto bars = [&](const json& bins, const char* color, int offset) {
    if (!bins.is_array()) return;
    size_t nb = bins.size();
    double bw = static_cast<double>(W) / nb;
    for (size_t i = 0; i < nb; ++i) {
      double acc = getd(bins[i], "accuracy");
      if (std::isnan(acc)) continue;
      char b[256];
      std::snprintf(b, sizeof(b),
                    "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s' opacity='0.75'><title>%s bin %.2f-%.2f: "
                    "n=%lld, accuracy %.3f, confidence %.3f</title></rect>",
                    i * bw + offset * bw / 2 + 1, H - acc * H, bw / 2 - 1, acc * H, color, offset ? "candidate" : "reference",
                    getd(bins[i], "lo"), getd(bins[i], "hi"), static_cast<long long>(getd(bins[i], "count")), acc,
                    getd(bins[i], "confidence"));
      s << b;
    }
  };
  bars(rb, kRef, 0);
  bars(cb, kCand, 1);
  s << "<text x='" << W / 2 << "' y='" << H + 22 << "' text-anchor='middle' class='ax'>confidence (max probability)</text>";
  s << "<text x='-" << H / 2 << "' y='-20' transform='rotate(-90)' text-anchor='middle' class='ax'>accuracy</text>";
  s << "</g></svg><figcaption><b>" << esc(title) << "</b></figcaption></figure>";
  return s.str();
}

std::string confusion_table(const std::string& title, const json& cm, const std::string& rows, const std::string& cols) {
  std::ostringstream s;
  if (!cm.is_object() || !cm.contains("matrix")) return "";
  const json& m = cm["matrix"];
  const json& labels = cm["labels"];
  double mx = 1;
  for (const auto& r : m)
    for (const auto& v : r) mx = std::max(mx, v.get<double>());
  s << "<div class='cm'><table><caption>" << esc(title) << " <span class='muted'>(rows: " << esc(rows)
    << ", columns: " << esc(cols) << ")</span></caption><tr><th></th>";
  for (const auto& l : labels) s << "<th>" << esc(l.get<std::string>()) << "</th>";
  s << "</tr>";
  for (size_t t = 0; t < m.size(); ++t) {
    s << "<tr><th>" << esc(labels[t].get<std::string>()) << "</th>";
    for (size_t p = 0; p < m[t].size(); ++p) {
      double v = m[t][p].get<double>();
      double a = v / mx;
      char b[160];
      std::snprintf(b, sizeof(b), "<td style='background:rgba(%s,%.2f)'>%lld</td>", t == p ? "31,119,180" : "214,39,40",
                    v > 0 ? 0.08 + 0.6 * a : 0.0, static_cast<long long>(v));
      s << b;
    }
    s << "</tr>";
  }
  s << "</table></div>";
  return s.str();
}

// Bars of one metric per subgroup (reference vs candidate) with CI whiskers where available.
std::string subgroup_svg(const std::string& key, const json& groups, bool binary) {
  const int BH = 14, GAP = 10, LW = 130, W = 300;
  int n = static_cast<int>(groups.size());
  int H = n * (2 * BH + GAP) + 30;
  std::ostringstream s;
  s << "<figure class='chart'><svg width='" << LW + W + 60 << "' height='" << H << "' role='img' aria-label='subgroups "
    << esc(key) << "'>";
  s << "<g transform='translate(" << LW << ",4)'>";
  for (int t = 0; t <= 4; ++t)
    s << "<line x1='" << W * t / 4 << "' y1='0' x2='" << W * t / 4 << "' y2='" << H - 26 << "' stroke='#eee'/><text x='"
      << W * t / 4 << "' y='" << H - 12 << "' text-anchor='middle' class='ax'>" << fv(0.5 + 0.5 * t / 4, 2) << "</text>";
  auto x_of = [&](double v) { return std::clamp((v - 0.5) / 0.5, 0.0, 1.0) * W; };
  int y = 0;
  for (const auto& g : groups) {
    std::string label = g["value"].get<std::string>() + " (n=" + std::to_string(g["n"].get<int64_t>()) + ")";
    bool small = g["small"].get<bool>();
    s << "<text x='-6' y='" << y + BH + 4 << "' text-anchor='end' class='ax'" << (small ? " fill='#999'" : "") << ">"
      << esc(label) << (small ? " *" : "") << "</text>";
    for (int mi = 0; mi < 2; ++mi) {
      const char* which = mi ? "candidate" : "reference";
      if (!g.contains(which)) continue;
      const json& m = g[which];
      double v, lo = NAN, hi = NAN;
      if (binary && m.contains("binary")) {
        v = getd(m["binary"], "auroc");
        lo = getd(m["binary"], "auroc_ci_lo");
        hi = getd(m["binary"], "auroc_ci_hi");
      } else {
        v = getd(m["macro"], "auroc");
      }
      int yy = y + mi * BH;
      if (!std::isnan(v)) {
        char b[600];
        std::snprintf(b, sizeof(b), "<rect x='0' y='%d' width='%.1f' height='%d' fill='%s' opacity='%s'><title>%s %s: %.4f</title></rect>",
                      yy, x_of(v), BH - 2, mi ? kCand : kRef, small ? "0.4" : "0.85", which, esc(label).c_str(), v);
        s << b;
        if (!std::isnan(lo)) {
          std::snprintf(b, sizeof(b),
                        "<line x1='%.1f' x2='%.1f' y1='%d' y2='%d' stroke='#333'/><line x1='%.1f' x2='%.1f' y1='%d' y2='%d' "
                        "stroke='#333'/><line x1='%.1f' x2='%.1f' y1='%d' y2='%d' stroke='#333'/>",
                        x_of(lo), x_of(hi), yy + BH / 2 - 1, yy + BH / 2 - 1, x_of(lo), x_of(lo), yy + 2, yy + BH - 4,
                        x_of(hi), x_of(hi), yy + 2, yy + BH - 4);
          s << b;
        }
        s << "<text x='" << W + 4 << "' y='" << yy + BH - 3 << "' class='ax'>" << fv(v, 3) << "</text>";
      } else {
        s << "<text x='4' y='" << yy + BH - 3 << "' class='ax' fill='#999'>n/a (one class only)</text>";
      }
    }
    y += 2 * BH + GAP;
  }
  s << "</g></svg><figcaption><b>" << esc(key) << "</b>: " << (binary ? "binary-task AUROC with 95% DeLong CI" : "macro AUROC")
    << " (axis from 0.5); <span style='color:" << kRef << "'>&#9632; reference</span> <span style='color:" << kCand
    << "'>&#9632; candidate</span>; * = below the minimum size (not gated)</figcaption></figure>";
  return s.str();
}

std::string row(const std::string& name, const std::string& r, const std::string& c, const std::string& extra = "") {
  return "<tr><th>" + esc(name) + "</th><td>" + r + "</td><td>" + c + "</td><td>" + extra + "</td></tr>";
}

std::string ci(const json& j, const char* v, const char* lo, const char* hi) {
  return fj(j, v) + " <span class='muted'>[" + fj(j, lo) + ", " + fj(j, hi) + "]</span>";
}

}  // namespace

std::string render_html_report(const json& rep) {
  std::ostringstream h;
  const json& gate = rep["gate"];
  bool approved = gate.value("verdict", "") == "APPROVED";
  const json& R = rep["reference"];
  const json& C = rep["candidate"];
  const json& P = rep["paired"];
  const std::vector<std::string> names = rep["class_names"].get<std::vector<std::string>>();
  h << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'/><title>medq validation report</title><style>"
       "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}"
       "h1{font-size:22px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px;font-size:18px}"
       ".verdict{padding:16px 20px;border-radius:8px;font-size:24px;font-weight:700;color:#fff}"
       ".ok{background:#2e7d32}.bad{background:#c62828}.muted{color:#777;font-size:90%}"
       "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}"
       "th{background:#f6f6f6}caption{text-align:left;font-weight:600;padding:4px 0}"
       ".chart{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}figcaption{font-size:12px;max-width:460px}"
       ".ax{font-size:10px;fill:#444}.cm{display:inline-block;margin-right:18px;vertical-align:top}"
       ".fail{color:#c62828;font-weight:600}.pass{color:#2e7d32}code{background:#f3f3f3;padding:1px 4px}"
       "</style></head><body>";
  h << "<h1>medq validation report</h1>";
  h << "<div class='verdict " << (approved ? "ok" : "bad") << "'>" << (approved ? "APPROVED" : "REJECTED")
    << " <span style='font-size:14px;font-weight:400'>candidate <code style='color:#222'>"
    << esc(rep["models"]["candidate"]["path"].get<std::string>()) << "</code> vs reference <code style='color:#222'>"
    << esc(rep["models"]["reference"]["path"].get<std::string>()) << "</code></span></div>";
  // Gate rules.
  h << "<h2>Acceptance gate</h2><p class='muted'>policy: " << esc(gate.value("policy_file", "")) << "</p><table><tr><th>rule</th><th>actual</th><th>required</th><th>result</th></tr>";
  for (const auto& r : gate["rules"]) {
    bool ok = r["passed"].get<bool>();
    h << "<tr><th>" << esc(r["metric"].get<std::string>()) << "</th><td>"
      << (r["actual"].is_number() ? fv(r["actual"].get<double>()) : "n/a") << "</td><td>" << esc(r["op"].get<std::string>())
      << " " << fv(r["threshold"].get<double>()) << "</td><td class='" << (ok ? "pass'>pass" : "fail'>FAIL") << "</td></tr>";
  }
  h << "</table>";

  // Summary.
  h << "<h2>Summary</h2><p>" << esc(rep["dataset"]["description"].get<std::string>()) << " &middot; medq "
    << esc(rep["medq_version"].get<std::string>()) << " &middot; " << esc(rep.value("created", "")) << "</p>";
  h << "<table><tr><th>metric</th><th>reference</th><th>candidate</th><th>paired</th></tr>";
  h << row("accuracy", fj(R, "accuracy"), fj(C, "accuracy"), "drop " + fj(P, "accuracy_drop"));
  h << row("balanced accuracy", fj(R, "balanced_accuracy"), fj(C, "balanced_accuracy"), "drop " + fj(P, "balanced_accuracy_drop"));
  const json& ma = P["macro_auroc"];
  h << row("macro AUROC", fj(R["macro"], "auroc"), fj(C["macro"], "auroc"),
           "diff " + fj(ma, "diff") + " [" + fj(ma, "ci_lo") + ", " + fj(ma, "ci_hi") + "]");
  h << row("macro F1", fj(R["macro"], "f1"), fj(C["macro"], "f1"), "drop " + fj(P, "macro_f1_drop"));
  h << row("macro sensitivity", fj(R["macro"], "sensitivity"), fj(C["macro"], "sensitivity"));
  h << row("macro specificity", fj(R["macro"], "specificity"), fj(C["macro"], "specificity"));
  h << row("ECE (15 bins)", fj(R["calibration"], "ece"), fj(C["calibration"], "ece"));
  if (R.contains("binary")) {
    const json& rb = R["binary"];
    const json& cb = C["binary"];
    const json& pb = P["binary_auroc"];
    std::string pos;
    for (const auto& p : rb["positive_classes"]) pos += (pos.empty() ? "" : "+") + p.get<std::string>();
    h << "<tr><th colspan='4' style='text-align:left'>binary task: " << esc(pos) << " vs rest (threshold "
      << fj(rb, "threshold", 2) << ")</th></tr>";
    h << row("AUROC [95% CI]", ci(rb, "auroc", "auroc_ci_lo", "auroc_ci_hi"), ci(cb, "auroc", "auroc_ci_lo", "auroc_ci_hi"),
             "diff " + fj(pb, "diff") + " [" + fj(pb, "ci_lo") + ", " + fj(pb, "ci_hi") + "], p=" + fj(pb, "p_value", 3) +
                 (pb.value("non_inferior", false) ? ", non-inferior" : ", <b>not shown non-inferior</b>") + " (margin " +
                 fj(pb, "margin", 3) + ")");
    h << row("sensitivity", fj(rb, "sensitivity"), fj(cb, "sensitivity"), "drop " + fj(P, "binary_sensitivity_drop"));
    h << row("specificity", fj(rb, "specificity"), fj(cb, "specificity"), "drop " + fj(P, "binary_specificity_drop"));
    h << row("PR-AUC", fj(rb, "pr_auc"), fj(cb, "pr_auc"));
    auto opt = [](const json& o, const char* a, const char* b) {
      return fv(getd(o, a)) + " <span class='muted'>(" + b + " " + fv(getd(o, b == std::string("specificity") ? "specificity" : "sensitivity")) +
             ", thr " + fv(getd(o, "threshold"), 3) + ")</span>";
    };
    h << row("sensitivity at specificity \xE2\x89\xA5 " + fj(rb["sensitivity_at_specificity"], "target", 2),
             opt(rb["sensitivity_at_specificity"], "sensitivity", "specificity"),
             opt(cb["sensitivity_at_specificity"], "sensitivity", "specificity"));
    h << row("specificity at sensitivity \xE2\x89\xA5 " + fj(rb["specificity_at_sensitivity"], "target", 2),
             opt(rb["specificity_at_sensitivity"], "specificity", "sensitivity"),
             opt(cb["specificity_at_sensitivity"], "specificity", "sensitivity"));
  }
  h << "</table>";
  // Paired details.
  const json& mc = P["mcnemar"];
  h << "<h2>Agreement between the models</h2><p>Disagreement rate " << fj(P, "disagreement_rate") << " on "
    << P["n"].get<int64_t>() << " images. McNemar exact test: " << mc["ref_right_cand_wrong"].get<int64_t>()
    << " images right only with the reference, " << mc["ref_wrong_cand_right"].get<int64_t>()
    << " right only with the candidate, p = " << fj(mc, "p_value") << " (mid-p " << fj(mc, "mid_p_value")
    << "). Max |logit difference| " << fj(P, "max_abs_logit_diff") << " (mean " << fj(P, "mean_abs_logit_diff", 5)
    << "), max |probability difference| " << fj(P, "max_abs_prob_diff") << " (mean " << fj(P, "mean_abs_prob_diff", 5)
    << ").</p>";
  const json& br = rep["batch_robustness"];
  h << "<p>Batch-size robustness: " << br["samples"].get<int64_t>() << " images (spread over the dataset) re-run at batch 1 vs batch "
    << br["batch"].get<int64_t>() << ": reference " << br["reference"]["prediction_mismatches"].get<int>()
    << ", candidate " << br["candidate"]["prediction_mismatches"].get<int>() << " changed predictions (max |logit diff| "
    << fj(br["candidate"], "max_abs_logit_diff", 6) << ").</p>";

  // ROC curves.
  h << "<h2>ROC curves</h2><p><span style='color:" << kRef << "'>&#9632; reference</span> &nbsp; <span style='color:"
    << kCand << "'>&#9632; candidate (dashed)</span></p>";
  if (R.contains("binary") && R["binary"].contains("roc"))
    h << roc_svg("binary task", R["binary"]["roc"], C["binary"].value("roc", json()),
                 "AUROC " + fj(R["binary"], "auroc") + " vs " + fj(C["binary"], "auroc"));
  for (const auto& n : names) {
    if (!R.contains("roc") || !R["roc"].contains(n)) continue;
    h << roc_svg(n + " vs rest", R["roc"][n], C.contains("roc") ? C["roc"].value(n, json()) : json(),
                 "AUROC " + ci(R["per_class"][n], "auroc", "auroc_ci_lo", "auroc_ci_hi") + " vs " +
                     ci(C["per_class"][n], "auroc", "auroc_ci_lo", "auroc_ci_hi"));
  }
  // Reliability.
  h << "<h2>Calibration</h2>";
  h << reliability_svg("reliability diagram (15 bins), ECE " + fj(R["calibration"], "ece") + " vs " + fj(C["calibration"], "ece"),
                       R["calibration"].value("bins", json()), C["calibration"].value("bins", json()));
  // Per class table.
  h << "<h2>Per-class metrics</h2><table><tr><th>class</th><th>support</th><th>sensitivity</th><th>specificity</th>"
       "<th>precision</th><th>F1</th><th>AUROC [95% CI]</th><th>PR-AUC</th><th>AUROC diff [95% CI]</th></tr>";
  for (const auto& n : names) {
    for (int mi = 0; mi < 2; ++mi) {
      const json& x = (mi ? C : R)["per_class"][n];
      h << "<tr><th>" << esc(n) << (mi ? " <span class='muted'>cand</span>" : " <span class='muted'>ref</span>") << "</th><td>"
        << x["support"].get<int64_t>() << "</td><td>" << fj(x, "sensitivity") << "</td><td>" << fj(x, "specificity")
        << "</td><td>" << fj(x, "precision") << "</td><td>" << fj(x, "f1") << "</td><td>"
        << ci(x, "auroc", "auroc_ci_lo", "auroc_ci_hi") << "</td><td>" << fj(x, "pr_auc") << "</td><td>";
      if (mi) {
        const json& pc = P["per_class_auroc"][n];
        h << fj(pc, "diff") << " [" << fj(pc, "ci_lo") << ", " << fj(pc, "ci_hi") << "]";
      }
      h << "</td></tr>";
    }
  }
  h << "</table>";
  // Confusion matrices.
  h << "<h2>Confusion matrices</h2>";
  h << confusion_table("reference", R["confusion"], "true", "predicted");
  h << confusion_table("candidate", C["confusion"], "true", "predicted");
  h << confusion_table("reference vs candidate predictions", P["prediction_confusion"], "reference", "candidate");
  // Subgroups.
  if (rep.contains("subgroups") && !rep["subgroups"].empty()) {
    h << "<h2>Subgroups</h2>";
    for (auto it = rep["subgroups"].begin(); it != rep["subgroups"].end(); ++it) {
      const json& sg = it.value();
      bool binary = R.contains("binary");
      h << subgroup_svg(it.key(), sg["groups"], binary);
      h << "<table><caption>" << esc(it.key()) << " (min size " << sg["min_size"].get<int64_t>()
        << ")</caption><tr><th>group</th><th>n</th>" << (binary ? "<th>positives</th>" : "") << "<th>acc ref</th><th>acc cand</th><th>AUROC ref</th><th>AUROC cand</th>"
           "<th>sens ref</th><th>sens cand</th><th>FPR ref</th><th>FPR cand</th></tr>";
      for (const auto& g : sg["groups"]) {
        auto pick = [&](const char* which, const char* what) {
          if (!g.contains(which)) return std::string("n/a");
          const json& m = g[which];
          if (binary) return fj(m["binary"], what);
          if (std::string(what) == "auroc") return fj(m["macro"], "auroc");
          if (std::string(what) == "sensitivity") return fj(m["macro"], "sensitivity");
          double sp = getd(m["macro"], "specificity");
          return fv(std::isnan(sp) ? NAN : 1 - sp);
        };
        h << "<tr><th>" << esc(g["value"].get<std::string>()) << (g["small"].get<bool>() ? " *" : "") << "</th><td>"
          << g["n"].get<int64_t>() << "</td><td>"
          << (binary ? std::to_string(g["reference"]["binary"].value("n_pos", int64_t{0})) + "</td><td>" : std::string())
          << fj(g["reference"], "accuracy") << "</td><td>"
          << (g.contains("candidate") ? fj(g["candidate"], "accuracy") : "n/a") << "</td><td>"
          << pick("reference", "auroc") << "</td><td>" << pick("candidate", "auroc") << "</td><td>"
          << pick("reference", "sensitivity") << "</td><td>" << pick("candidate", "sensitivity") << "</td><td>"
          << pick("reference", "fpr") << "</td><td>" << pick("candidate", "fpr") << "</td></tr>";
      }
      h << "</table><table><tr><th>gap (max - min)</th><th>AUROC</th><th>sensitivity (equal opportunity)</th><th>FPR</th>"
           "<th>equalized odds</th><th>accuracy</th></tr>";
      for (const char* w : {"reference", "candidate", "increase"}) {
        if (!sg["gaps"].contains(w)) continue;
        const json& g = sg["gaps"][w];
        h << "<tr><th>" << (std::string(w) == "increase" ? "increase = fairness degradation" : w) << "</th><td>" << fj(g, "auroc") << "</td><td>" << fj(g, "sensitivity") << "</td><td>"
          << fj(g, "fpr") << "</td><td>" << fj(g, "equalized_odds") << "</td><td>" << fj(g, "accuracy") << "</td></tr>";
      }
      h << "</table>";
    }
  }
  // Model card.
  const json& card = rep["model_card"];
  h << "<h2>Model card</h2><table style='text-align:left'>";
  auto crow = [&](const char* k, const std::string& v) {
    h << "<tr><th style='text-align:left'>" << k << "</th><td style='text-align:left'>" << esc(v) << "</td></tr>";
  };
  crow("intended use", card.value("intended_use", ""));
  crow("architecture", card.value("architecture", ""));
  crow("training", card.value("training", ""));
  crow("evaluation data", card.value("evaluation_data", ""));
  crow("metrics", "accuracy " + fj(C, "accuracy") + ", balanced accuracy " + fj(C, "balanced_accuracy") + ", macro AUROC " +
                      fj(C["macro"], "auroc") +
                      (C.contains("binary") ? ", binary AUROC " + fj(C["binary"], "auroc") + ", sensitivity " +
                                                  fj(C["binary"], "sensitivity") + ", specificity " + fj(C["binary"], "specificity")
                                            : std::string()) +
                      " (candidate)");
  crow("reference model", rep["models"]["reference"]["path"].get<std::string>() + "  sha256 " +
                              rep["models"]["reference"]["sha256"].get<std::string>());
  crow("candidate model", rep["models"]["candidate"]["path"].get<std::string>() + "  sha256 " +
                              rep["models"]["candidate"]["sha256"].get<std::string>());
  crow("dataset sha256", rep["dataset"]["sha256"].get<std::string>());
  h << "<tr><th style='text-align:left'>limitations</th><td style='text-align:left'><ul>";
  for (const auto& l : card.value("limitations", json::array())) h << "<li>" << esc(l.get<std::string>()) << "</li>";
  h << "</ul></td></tr></table>";
  h << "<p class='muted'>AUROC CIs: DeLong (fast midrank algorithm), Wald 95%. PR-AUC: average precision. ECE: 15 "
       "equal-width bins on the max-probability confidence. McNemar: exact two-sided binomial on discordant pairs. "
       "Every number is in report.json.</p>";
  h << "</body></html>\n";
  return h.str();
}

}  // namespace medq::eval
