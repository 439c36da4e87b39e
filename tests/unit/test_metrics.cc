// Metric code against independent implementations: scikit-learn / scipy reference values
// (tests/data/metrics/*.json, written by tests/unit/gen_metrics_ref.py), a direct O(n^2) DeLong
// from the definition, a bootstrap, exact binomial sums and published values.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "eval/metrics.h"

using namespace medq::eval;
using nlohmann::json;

namespace {

json load_ref(const std::string& name) {
  std::ifstream f(std::string(MEDQ_SOURCE_DIR) + "/tests/data/metrics/" + name);
  EXPECT_TRUE(f.good()) << name;
  json j;
  f >> j;
  return j;
}

// DeLong directly from the definition: psi(x, y) = 1 / 0.5 / 0 for x > y / x == y / x < y.
struct SlowDelong {
  double auc_a, auc_b, var_a, var_b, cov_ab;
};
SlowDelong slow_delong(const std::vector<double>& a, const std::vector<double>& b, const std::vector<int>& y) {
  std::vector<size_t> P, N;
  for (size_t i = 0; i < y.size(); ++i) (y[i] ? P : N).push_back(i);
  auto psi = [](double x, double z) { return x > z ? 1.0 : x == z ? 0.5 : 0.0; };
  const double m = P.size(), n = N.size();
  std::vector<double> v10a(P.size()), v10b(P.size()), v01a(N.size()), v01b(N.size());
  for (size_t i = 0; i < P.size(); ++i)
    for (size_t j = 0; j < N.size(); ++j) {
      double pa = psi(a[P[i]], a[N[j]]), pb = psi(b[P[i]], b[N[j]]);
      v10a[i] += pa / n;
      v10b[i] += pb / n;
      v01a[j] += pa / m;
      v01b[j] += pb / m;
    }
  SlowDelong r{};
  for (double v : v10a) r.auc_a += v / m;
  for (double v : v10b) r.auc_b += v / m;
  auto cv = [](const std::vector<double>& x, double mx, const std::vector<double>& z, double mz) {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += (x[i] - mx) * (z[i] - mz);
    return s / (x.size() - 1);
  };
  r.var_a = cv(v10a, r.auc_a, v10a, r.auc_a) / m + cv(v01a, r.auc_a, v01a, r.auc_a) / n;
  r.var_b = cv(v10b, r.auc_b, v10b, r.auc_b) / m + cv(v01b, r.auc_b, v01b, r.auc_b) / n;
  r.cov_ab = cv(v10a, r.auc_a, v10b, r.auc_b) / m + cv(v01a, r.auc_a, v01b, r.auc_b) / n;
  return r;
}

// C(n, k) / 2^n by a running product in long double (independent of lgamma).
long double binom_half_direct(int64_t k, int64_t n) {
  long double p = 1;
  for (int64_t i = 0; i < n; ++i) p *= 0.5L;
  for (int64_t i = 1; i <= k; ++i) p = p * (n - k + i) / i;
  return p;
}

ProbMatrix to_pm(const json& rows) {
  ProbMatrix pm;
  pm.k = static_cast<int>(rows[0].size());
  for (const auto& r : rows)
    for (const auto& v : r) pm.p.push_back(v.get<double>());
  return pm;
}

}  // namespace

TEST(Metrics, MidranksAndConfusion) {
  std::vector<double> r = midranks({3, 1, 3, 2, 3});
  EXPECT_EQ(r, (std::vector<double>{4, 1, 4, 2, 4}));
  ConfusionMatrix cm = confusion_matrix({0, 1, 2, 2}, {0, 2, 2, 1}, 3);
  EXPECT_EQ(cm.at(0, 0), 1);
  EXPECT_EQ(cm.at(1, 2), 1);
  EXPECT_EQ(cm.at(2, 2), 1);
  EXPECT_EQ(cm.at(2, 1), 1);
  EXPECT_EQ(cm.total(), 4);
}

TEST(Metrics, AurocAndApMatchSklearnWithTies) {
  json ref = load_ref("binary_ties.json");
  ASSERT_GE(ref["cases"].size(), 5u);
  for (const auto& c : ref["cases"]) {
    auto s = c["scores"].get<std::vector<double>>();
    auto y = c["labels"].get<std::vector<int>>();
    EXPECT_NEAR(auroc(s, y), c["auroc"].get<double>(), 1e-12);
    EXPECT_NEAR(average_precision(s, y), c["ap"].get<double>(), 1e-12);
    RocCurve rc = roc_curve(s, y);
    auto fpr = c["roc_fpr"].get<std::vector<double>>(), tpr = c["roc_tpr"].get<std::vector<double>>();
    ASSERT_EQ(rc.fpr.size(), fpr.size());
    for (size_t i = 0; i < fpr.size(); ++i) {
      EXPECT_NEAR(rc.fpr[i], fpr[i], 1e-12);
      EXPECT_NEAR(rc.tpr[i], tpr[i], 1e-12);
    }
  }
}

TEST(Metrics, HanleyMcNeilPublishedAuc) {
  // Hanley & McNeil (1982), Radiology 143:29-36, Table 1: 5-point ratings of 109 CT images,
  // 58 normal (33, 6, 6, 11, 2) and 51 abnormal (3, 2, 2, 11, 33); published area 0.893.
  std::vector<double> s;
  std::vector<int> y;
  int normal[5] = {33, 6, 6, 11, 2}, abnormal[5] = {3, 2, 2, 11, 33};
  for (int r = 0; r < 5; ++r) {
    for (int i = 0; i < normal[r]; ++i) s.push_back(r + 1), y.push_back(0);
    for (int i = 0; i < abnormal[r]; ++i) s.push_back(r + 1), y.push_back(1);
  }
  AucCi a = delong_auc(s, y);
  EXPECT_NEAR(a.auc, 0.893, 5e-4);
  // Hanley-McNeil's exponential approximation gives SE 0.0322 for this data; DeLong's
  // nonparametric SE is close to it.
  EXPECT_NEAR(a.se, 0.0322, 0.004);
  EXPECT_EQ(a.n_pos, 51);
  EXPECT_EQ(a.n_neg, 58);
}

TEST(Metrics, FastDelongMatchesDefinition) {
  json ref = load_ref("binary_ties.json");
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0, 0.1);
  for (const auto& c : ref["cases"]) {
    auto s = c["scores"].get<std::vector<double>>();
    auto y = c["labels"].get<std::vector<int>>();
    std::vector<double> s2(s.size());
    for (size_t i = 0; i < s.size(); ++i) s2[i] = std::round((s[i] + nd(rng)) * 10) / 10;  // correlated, tied
    SlowDelong sd = slow_delong(s, s2, y);
    AucCi a = delong_auc(s, y);
    EXPECT_NEAR(a.auc, sd.auc_a, 1e-12);
    EXPECT_NEAR(a.var, sd.var_a, 1e-12);
    PairedAuc p = delong_paired(s, s2, y, 0.05);
    EXPECT_NEAR(p.auc_a, sd.auc_a, 1e-12);
    EXPECT_NEAR(p.auc_b, sd.auc_b, 1e-12);
    double var = sd.var_a + sd.var_b - 2 * sd.cov_ab;
    EXPECT_NEAR(p.var, var, 1e-12);
    EXPECT_NEAR(p.lo, (sd.auc_b - sd.auc_a) - kZ95 * std::sqrt(var), 1e-9);
    EXPECT_NEAR(p.p_value, std::erfc(std::fabs((sd.auc_b - sd.auc_a) / std::sqrt(var)) / std::sqrt(2.0)), 1e-9);
    EXPECT_EQ(p.non_inferior, p.lo > -0.05);
  }
}

TEST(Metrics, DelongVarianceAgreesWithBootstrap) {
  std::mt19937 rng(11);
  std::normal_distribution<double> nd(0, 1);
  const int n = 600;
  std::vector<double> a(n), b(n);
  std::vector<int> y(n);
  for (int i = 0; i < n; ++i) {
    y[i] = i % 3 == 0;
    double z = nd(rng);
    a[i] = y[i] * 1.0 + z;
    b[i] = y[i] * 0.9 + 0.8 * z + 0.6 * nd(rng);
  }
  AucCi ca = delong_auc(a, y);
  PairedAuc p = delong_paired(a, b, y, 0.05);
  // Stratified bootstrap of the AUC and of the paired difference.
  std::vector<int> P, N;
  for (int i = 0; i < n; ++i) (y[i] ? P : N).push_back(i);
  const int B = 400;
  double s1 = 0, s2 = 0, d1 = 0, d2 = 0;
  for (int rep = 0; rep < B; ++rep) {
    std::vector<double> ra, rb;
    std::vector<int> ry;
    for (size_t t = 0; t < P.size(); ++t) {
      int i = P[rng() % P.size()];
      ra.push_back(a[i]), rb.push_back(b[i]), ry.push_back(1);
    }
    for (size_t t = 0; t < N.size(); ++t) {
      int i = N[rng() % N.size()];
      ra.push_back(a[i]), rb.push_back(b[i]), ry.push_back(0);
    }
    double x = auroc(ra, ry), d = auroc(rb, ry) - x;
    s1 += x, s2 += x * x, d1 += d, d2 += d * d;
  }
  double var_boot = s2 / B - (s1 / B) * (s1 / B), dvar_boot = d2 / B - (d1 / B) * (d1 / B);
  EXPECT_NEAR(ca.var / var_boot, 1.0, 0.25);
  EXPECT_NEAR(p.var / dvar_boot, 1.0, 0.25);
  EXPECT_LT(p.var, ca.var + p.auc_b * 0 + 1.0);  // finite
}

TEST(Metrics, MacroPairedAucReducesToDelongForOneClassDifference) {
  // With two classes the one-vs-rest AUCs of class 0 and class 1 on p and 1-p are equal;
  // the macro difference's variance must equal the single-class DeLong variance.
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  const int n = 200;
  std::vector<int> y(n);
  ProbMatrix pa, pb;
  pa.k = pb.k = 2;
  std::vector<double> sa, sb;
  for (int i = 0; i < n; ++i) {
    y[i] = u(rng) < 0.4;
    double x = std::clamp(0.5 + 0.3 * (y[i] - 0.5) + 0.3 * (u(rng) - 0.5), 0.0, 1.0);
    double x2 = std::clamp(x + 0.1 * (u(rng) - 0.5), 0.0, 1.0);
    pa.p.insert(pa.p.end(), {1 - x, x});
    pb.p.insert(pb.p.end(), {1 - x2, x2});
    sa.push_back(x), sb.push_back(x2);
  }
  MetricOptions opt;
  ModelMetrics ma = compute_metrics(pa, y, opt), mb = compute_metrics(pb, y, opt);
  std::vector<float> la(pa.p.begin(), pa.p.end()), lb(pb.p.begin(), pb.p.end());
  PairedMetrics pm = compute_paired(la, lb, pa, pb, y, ma, mb, opt, 0.02);
  PairedAuc single = delong_paired(sa, sb, y, 0.02);
  EXPECT_NEAR(pm.macro_auroc.diff, single.diff, 1e-12);
  EXPECT_NEAR(pm.macro_auroc.var, single.var, 1e-12);
}

TEST(Metrics, MulticlassMatchesSklearn) {
  json ref = load_ref("multiclass.json");
  ProbMatrix pm = to_pm(ref["probs"]);
  auto y = ref["labels"].get<std::vector<int>>();
  MetricOptions opt;
  opt.positive_classes = ref["binary"]["positives"].get<std::vector<int>>();
  ModelMetrics m = compute_metrics(pm, y, opt);
  auto cm = ref["confusion"];
  for (int t = 0; t < pm.k; ++t)
    for (int p = 0; p < pm.k; ++p) EXPECT_EQ(m.confusion.at(t, p), cm[t][p].get<int64_t>());
  EXPECT_NEAR(m.accuracy, ref["accuracy"].get<double>(), 1e-12);
  EXPECT_NEAR(m.balanced_accuracy, ref["balanced_accuracy"].get<double>(), 1e-12);
  for (int c = 0; c < pm.k; ++c) {
    EXPECT_NEAR(m.per_class[c].precision, ref["precision"][c].get<double>(), 1e-12) << c;
    EXPECT_NEAR(m.per_class[c].sensitivity, ref["recall"][c].get<double>(), 1e-12) << c;
    EXPECT_NEAR(m.per_class[c].f1, ref["f1"][c].get<double>(), 1e-12) << c;
    EXPECT_NEAR(m.per_class[c].auroc.auc, ref["auroc"][c].get<double>(), 1e-12) << c;
    EXPECT_NEAR(m.per_class[c].pr_auc, ref["pr_auc"][c].get<double>(), 1e-12) << c;
  }
  EXPECT_NEAR(m.macro_precision, ref["macro_precision"].get<double>(), 1e-12);
  EXPECT_NEAR(m.macro_sensitivity, ref["macro_recall"].get<double>(), 1e-12);
  EXPECT_NEAR(m.macro_f1, ref["macro_f1"].get<double>(), 1e-12);
  EXPECT_NEAR(m.calibration.ece, ref["ece15"].get<double>(), 1e-12);
  ASSERT_TRUE(m.has_binary);
  EXPECT_NEAR(m.binary.auroc.auc, ref["binary"]["auroc"].get<double>(), 1e-12);
  EXPECT_NEAR(m.binary.pr_auc, ref["binary"]["pr_auc"].get<double>(), 1e-12);
  EXPECT_NEAR(m.binary.sensitivity, ref["binary"]["sensitivity"].get<double>(), 1e-12);
  EXPECT_NEAR(m.binary.specificity, ref["binary"]["specificity"].get<double>(), 1e-12);
  EXPECT_NEAR(m.binary.precision, ref["binary"]["precision"].get<double>(), 1e-12);
  EXPECT_NEAR(m.binary.f1, ref["binary"]["f1"].get<double>(), 1e-12);
  // Reliability curve: counts add up, each bin's mean confidence lies inside it.
  int64_t total = 0;
  for (const auto& b : m.calibration.bins) {
    total += b.count;
    if (b.count) {
      EXPECT_GT(b.confidence, b.lo - 1e-12);
      EXPECT_LE(b.confidence, b.hi + 1e-12);
    }
  }
  EXPECT_EQ(total, static_cast<int64_t>(y.size()));
  EXPECT_EQ(m.calibration.bins.size(), 15u);
}

TEST(Metrics, McNemarExact) {
  json ref = load_ref("mcnemar.json");
  for (const auto& c : ref["cases"]) {
    int64_t b = c["b"], cc = c["c"];
    McNemar r = mcnemar_exact(b, cc);
    double p = c["p"];
    EXPECT_NEAR(r.p_value, p, 1e-12 + 1e-10 * p) << b << "," << cc;
    // Independent exact sum in long double.
    int64_t n = b + cc, k = std::min(b, cc);
    long double cdf = 0;
    for (int64_t j = 0; j <= k; ++j) cdf += binom_half_direct(j, n);
    double direct = n == 0 ? 1.0 : static_cast<double>(std::min(1.0L, 2 * cdf));
    EXPECT_NEAR(r.p_value, direct, 1e-13 + 1e-11 * direct);
    double mid = n == 0 ? 1.0 : static_cast<double>(std::min(1.0L, 2 * cdf - binom_half_direct(k, n)));
    EXPECT_NEAR(r.mid_p_value, mid, 1e-13 + 1e-11 * mid);
    EXPECT_LE(r.mid_p_value, r.p_value);
  }
}

TEST(Metrics, OperatingPoints) {
  std::vector<double> s = {0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2, 0.1};
  std::vector<int> y = {1, 1, 0, 1, 1, 0, 0, 1, 0, 0};
  // spec >= 0.8 (at most one false positive of 5): best threshold 0.55 -> sens 4/5, spec 4/5.
  OperatingPoint a = sensitivity_at_specificity(s, y, 0.8);
  ASSERT_TRUE(a.found);
  EXPECT_DOUBLE_EQ(a.threshold, 0.55);
  EXPECT_DOUBLE_EQ(a.sensitivity, 0.8);
  EXPECT_DOUBLE_EQ(a.specificity, 0.8);
  // sens >= 1.0: lowest threshold reaching all positives is 0.3 -> spec 2/5.
  OperatingPoint b = specificity_at_sensitivity(s, y, 1.0);
  ASSERT_TRUE(b.found);
  EXPECT_DOUBLE_EQ(b.threshold, 0.3);
  EXPECT_DOUBLE_EQ(b.specificity, 0.4);
}

TEST(Metrics, SubgroupsAndGaps) {
  // Two groups: group "a" perfectly separated, group "b" random; one tiny group "c".
  ProbMatrix pm;
  pm.k = 2;
  std::vector<int> y;
  std::vector<std::string> g;
  for (int i = 0; i < 40; ++i) {
    int lab = i % 2;
    double x = lab ? 0.9 : 0.1;
    pm.p.insert(pm.p.end(), {1 - x, x});
    y.push_back(lab), g.push_back("a");
  }
  for (int i = 0; i < 40; ++i) {
    int lab = i % 2;
    double x = (i / 2) % 2 ? 0.8 : 0.2;  // independent of the label
    pm.p.insert(pm.p.end(), {1 - x, x});
    y.push_back(lab), g.push_back("b");
  }
  for (int i = 0; i < 3; ++i) {
    pm.p.insert(pm.p.end(), {0.5, 0.5});
    y.push_back(i % 2), g.push_back("c");
  }
  MetricOptions opt;
  opt.positive_classes = {1};
  SubgroupAnalysis sa = compute_subgroups("site", g, pm, &pm, y, opt, 10);
  ASSERT_EQ(sa.groups.size(), 3u);
  EXPECT_EQ(sa.groups[0].value, "a");
  EXPECT_EQ(sa.groups[0].n, 40);
  EXPECT_FALSE(sa.groups[0].small);
  EXPECT_TRUE(sa.groups[2].small);
  EXPECT_NEAR(sa.groups[0].ref.binary.auroc.auc, 1.0, 1e-12);
  EXPECT_NEAR(sa.groups[1].ref.binary.auroc.auc, 0.5, 1e-12);
  EXPECT_EQ(sa.gaps_ref.auroc_basis, "binary");
  EXPECT_NEAR(sa.gaps_ref.auroc, 0.5, 1e-12);
  EXPECT_NEAR(sa.gaps_ref.sensitivity, 0.5, 1e-12);  // 1.0 vs 0.5
  EXPECT_NEAR(sa.gaps_ref.fpr, 0.5, 1e-12);          // 0.0 vs 0.5
  EXPECT_NEAR(sa.gap_increase.auroc, 0.0, 1e-12);
}

TEST(Metrics, RealLogitsMatchSklearnAndModelCard) {
  json ref = load_ref("real_logits.json");
  for (const char* name : {"brain_resnet18", "skin_mobilenet_v2"}) {
    std::string path = std::string(MEDQ_SHARED_DATA) + "/models/" + name + "_test_logits.csv";
    std::ifstream f(path);
    if (!f.good() || !ref.contains(name)) {
      GTEST_SKIP() << "shared data absent: " << path;
    }
    const json& r = ref[name];
    auto names = r["class_names"].get<std::vector<std::string>>();
    std::string line;
    std::getline(f, line);
    std::vector<float> logits;
    std::vector<int> y;
    while (std::getline(f, line)) {
      std::stringstream ss(line);
      std::string cell;
      std::getline(ss, cell, ',');
      std::getline(ss, cell, ',');
      y.push_back(static_cast<int>(std::find(names.begin(), names.end(), cell) - names.begin()));
      while (std::getline(ss, cell, ',')) logits.push_back(std::stof(cell));
    }
    int k = static_cast<int>(names.size());
    ProbMatrix pm = softmax_rows(logits, k);
    MetricOptions opt;
    if (r.contains("binary")) opt.positive_classes = r["binary"]["positives"].get<std::vector<int>>();
    ModelMetrics m = compute_metrics(pm, y, opt);
    EXPECT_EQ(m.n, r["n"].get<int64_t>());
    EXPECT_NEAR(m.accuracy, r["accuracy"].get<double>(), 1e-12);
    EXPECT_NEAR(m.balanced_accuracy, r["balanced_accuracy"].get<double>(), 1e-12);
    EXPECT_NEAR(m.macro_f1, r["macro_f1"].get<double>(), 1e-12);
    // float logits -> double softmax vs numpy float64: tiny differences only.
    EXPECT_NEAR(m.calibration.ece, r["ece15"].get<double>(), 1e-6);
    for (int c = 0; c < k; ++c) {
      EXPECT_NEAR(m.per_class[c].auroc.auc, r["auroc"][c].get<double>(), 1e-9);
      EXPECT_NEAR(m.per_class[c].pr_auc, r["pr_auc"][c].get<double>(), 1e-9);
    }
    if (std::string(name) == "brain_resnet18") {
      EXPECT_NEAR(m.accuracy, 0.9872, 1e-4);
    } else {
      EXPECT_NEAR(m.accuracy, 0.7525, 1e-4);
      EXPECT_NEAR(m.balanced_accuracy, 0.567, 5e-4);
      EXPECT_NEAR(m.binary.auroc.auc, 0.892, 5e-4);
      EXPECT_NEAR(m.binary.auroc.auc, r["binary"]["auroc"].get<double>(), 1e-9);
      EXPECT_NEAR(m.binary.pr_auc, r["binary"]["pr_auc"].get<double>(), 1e-9);
      EXPECT_LT(m.binary.auroc.lo, m.binary.auroc.auc);
      EXPECT_GT(m.binary.auroc.hi, m.binary.auroc.auc);
    }
  }
}
