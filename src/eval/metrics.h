// Classification metrics for clinical validation: pure functions on scores and labels (no I/O).
//
// Conventions
// - Labels are class indices 0..K-1; binary labels are 0/1 (1 = positive).
// - AUROC is the area under the empirical ROC curve with ties handled as scikit-learn does
//   (trapezoid over the distinct thresholds), which equals the Mann-Whitney U statistic with
//   midranks: P(score_pos > score_neg) + 0.5 P(score_pos == score_neg).
// - DeLong (1988) variance via the fast midrank algorithm of Sun & Xu (2014), O(n log n):
//     V10_i = (Tz_i - Tx_i) / n   (positives),  V01_j = 1 - (Tz_j - Ty_j) / m   (negatives)
//   where Tz/Tx/Ty are midranks in the pooled / positive / negative samples;
//   Var(AUC) = S10/m + S01/n with S the (n-1)-normalised sample (co)variances.
//   95% CIs are Wald intervals AUC +- 1.959964 SE, clipped to [0, 1] (as pROC does).
// - PR-AUC is average precision exactly as sklearn.metrics.average_precision_score:
//   AP = sum_k (R_k - R_{k-1}) P_k over the distinct thresholds in decreasing order (no
//   interpolation).
// - Expected calibration error (Guo et al. 2017): confidence = max class probability,
//   15 equal-width bins on [0, 1], bin b = (b/15, (b+1)/15] (confidence 0 goes to bin 0),
//   ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b|.
// - Undefined values (AUROC of a class with no positive or no negative sample, precision with
//   no positive prediction, ...) are NaN; the JSON layer writes them as null.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace medq::eval {

constexpr double kZ95 = 1.959963984540054;

// ---------------------------------------------------------------------------------------------
// Basic building blocks.

struct ConfusionMatrix {
  int k = 0;
  std::vector<int64_t> m;  // k*k, row = true class, column = predicted class
  int64_t at(int t, int p) const { return m[static_cast<size_t>(t) * k + p]; }
  int64_t total() const;
};

// Labels/predictions outside 0..k-1 are ignored.
ConfusionMatrix confusion_matrix(const std::vector<int>& y_true, const std::vector<int>& y_pred, int k);

// Midranks (1-based; tied values share the mean of their ranks).
std::vector<double> midranks(const std::vector<double>& x);

// Mann-Whitney / trapezoidal AUROC for binary labels. NaN without both classes.
double auroc(const std::vector<double>& scores, const std::vector<int>& y);

struct AucCi {
  double auc = 0, var = 0, se = 0, lo = 0, hi = 0;
  int64_t n_pos = 0, n_neg = 0;
};
// AUROC with its DeLong variance and 95% CI (NaN fields without both classes).
AucCi delong_auc(const std::vector<double>& scores, const std::vector<int>& y);

// DeLong structural components of one score vector: v10 per positive, v01 per negative (in
// sample order), and the AUC.
struct DelongComponents {
  double auc = 0;
  std::vector<double> v10, v01;
};
DelongComponents delong_components(const std::vector<double>& scores, const std::vector<int>& y);

// Paired DeLong test of two correlated AUROCs (same samples, same labels): difference b - a
// (candidate - reference), its variance from the covariance of the structural components,
// the 95% CI, the two-sided p-value of z = diff / se, and a non-inferiority verdict:
// non-inferior iff the CI lower bound > -margin.
struct PairedAuc {
  double auc_a = 0, auc_b = 0, diff = 0, var = 0, se = 0, lo = 0, hi = 0, z = 0, p_value = 1;
  double margin = 0;
  bool non_inferior = false;
};
PairedAuc delong_paired(const std::vector<double>& scores_a, const std::vector<double>& scores_b,
                        const std::vector<int>& y, double margin);

// Average precision (sklearn average_precision_score). NaN without positives.
double average_precision(const std::vector<double>& scores, const std::vector<int>& y);

// ROC curve over the distinct thresholds in decreasing order, starting at (0, 0) with
// threshold +inf (as sklearn.metrics.roc_curve with drop_intermediate=False).
struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;
};
RocCurve roc_curve(const std::vector<double>& scores, const std::vector<int>& y);

// Operating points on the ROC curve (score >= threshold is positive).
// sensitivity_at_specificity: among thresholds whose specificity >= target, the one with the
// highest sensitivity (ties: the highest specificity). specificity_at_sensitivity: among
// thresholds whose sensitivity >= target, the highest specificity (ties: highest sensitivity).
struct OperatingPoint {
  double target = 0, threshold = 0, sensitivity = 0, specificity = 0;
  bool found = false;
};
OperatingPoint sensitivity_at_specificity(const std::vector<double>& scores, const std::vector<int>& y,
                                          double min_specificity);
OperatingPoint specificity_at_sensitivity(const std::vector<double>& scores, const std::vector<int>& y,
                                          double min_sensitivity);

// Calibration: ECE + reliability curve (see the top of the file).
struct CalibrationBin {
  double lo = 0, hi = 0;
  int64_t count = 0;
  double confidence = 0, accuracy = 0;  // means over the bin (NaN when empty)
};
struct Calibration {
  double ece = 0, mce = 0;  // expected / maximum calibration error
  std::vector<CalibrationBin> bins;
};
// confidence[i] in [0,1]; correct[i] whether the prediction with that confidence was right.
Calibration calibration(const std::vector<double>& confidence, const std::vector<int>& correct, int num_bins = 15);

// McNemar's exact test on the discordant pairs: b = reference right & candidate wrong,
// c = reference wrong & candidate right. p = min(1, 2 P[Bin(b+c, 1/2) <= min(b,c)]);
// mid-p = p - P[Bin(b+c, 1/2) = min(b,c)] (i.e. the two-sided mid-p value).
struct McNemar {
  int64_t b = 0, c = 0;
  double p_value = 1, mid_p_value = 1;
};
McNemar mcnemar_exact(int64_t b, int64_t c);
// P[X <= k] and P[X = k] for X ~ Bin(n, 1/2) (log-space, accurate to ~1e-15 relative).
double binom_half_cdf(int64_t k, int64_t n);
double binom_half_pmf(int64_t k, int64_t n);

// ---------------------------------------------------------------------------------------------
// Aggregates.

// probs: n x k row-major probabilities; y: true class per sample.
struct ProbMatrix {
  int k = 0;
  std::vector<double> p;  // n*k
  // Rows are independent per-class probabilities (a sigmoid head with several outputs): they need
  // not sum to 1, and a binary task's score is the largest positive-class probability.
  bool independent = false;
  size_t n() const { return k ? p.size() / k : 0; }
  double at(size_t i, int c) const { return p[i * k + c]; }
  std::vector<double> column(int c) const;
  std::vector<int> argmax() const;
};

struct ClassMetrics {
  int64_t support = 0, tp = 0, fp = 0, fn = 0, tn = 0;
  double sensitivity = 0, specificity = 0, precision = 0, f1 = 0, pr_auc = 0;
  AucCi auroc;
};

struct BinaryMetrics {
  std::vector<int> positive_classes;
  double threshold = 0.5;  // score = summed positive probability; predicted positive iff >= threshold
  int64_t n_pos = 0, n_neg = 0, tp = 0, fp = 0, fn = 0, tn = 0;
  double accuracy = 0, balanced_accuracy = 0, sensitivity = 0, specificity = 0, precision = 0, f1 = 0;
  double fpr = 0, pr_auc = 0;
  AucCi auroc;
  OperatingPoint sens_at_spec, spec_at_sens;
  Calibration calibration;  // on max(s, 1-s)
  RocCurve roc;
};

struct ModelMetrics {
  int64_t n = 0;
  int k = 0;
  ConfusionMatrix confusion;
  double accuracy = 0, balanced_accuracy = 0;
  std::vector<ClassMetrics> per_class;
  double macro_sensitivity = 0, macro_specificity = 0, macro_precision = 0, macro_f1 = 0, macro_auroc = 0,
         macro_pr_auc = 0;
  Calibration calibration;
  std::vector<RocCurve> roc;  // per class, one-vs-rest
  bool has_binary = false;
  BinaryMetrics binary;
};

struct MetricOptions {
  std::vector<int> positive_classes;  // empty: no binary task
  double binary_threshold = 0.5;
  double target_specificity = 0.90;  // for sensitivity at fixed specificity
  double target_sensitivity = 0.95;  // for specificity at fixed sensitivity
  int calibration_bins = 15;
  bool keep_curves = true;  // fill roc curves (for reports)
};

// Macro averages are means over the classes where the value is defined (NaN skipped);
// balanced accuracy = mean recall over classes present in y (sklearn balanced_accuracy_score).
ModelMetrics compute_metrics(const ProbMatrix& probs, const std::vector<int>& y, const MetricOptions& opt);

// Probability of the positive side per sample: the summed probability of the positive classes
// (the largest one for independent rows).
std::vector<double> binary_scores(const ProbMatrix& probs, const std::vector<int>& positive_classes);

// Numerically stable softmax of each row of k logits (output semantics: eval/runner.h
// to_probabilities).
ProbMatrix softmax_rows(const std::vector<float>& logits, int k);

// ---------------------------------------------------------------------------------------------
// Paired reference-vs-candidate statistics.

struct PairedMetrics {
  int64_t n = 0;
  double disagreement_rate = 0;
  ConfusionMatrix prediction_confusion;  // rows: reference prediction, columns: candidate prediction
  McNemar mcnemar;
  double accuracy_ref = 0, accuracy_cand = 0, accuracy_drop = 0;  // drop = ref - cand
  double balanced_accuracy_drop = 0, macro_auroc_drop = 0, macro_f1_drop = 0;
  std::vector<PairedAuc> per_class_auroc;  // one-vs-rest
  PairedAuc macro_auroc;                   // influence-function variance of the mean difference
  bool has_binary = false;
  PairedAuc binary_auroc;
  double binary_sensitivity_drop = 0, binary_specificity_drop = 0;
  double max_abs_logit_diff = 0, mean_abs_logit_diff = 0, max_abs_prob_diff = 0, mean_abs_prob_diff = 0;
};

PairedMetrics compute_paired(const std::vector<float>& logits_ref, const std::vector<float>& logits_cand,
                             const ProbMatrix& probs_ref, const ProbMatrix& probs_cand, const std::vector<int>& y,
                             const ModelMetrics& m_ref, const ModelMetrics& m_cand, const MetricOptions& opt,
                             double noninferiority_margin);

// ---------------------------------------------------------------------------------------------
// Subgroups.

struct GroupGaps {
  // max - min over the eligible groups (size >= min_size and the value defined); NaN if < 2.
  // sensitivity = TPR gap (equal opportunity); equalized_odds = max(TPR gap, FPR gap).
  // Binary task when present (AUROC, TPR, FPR of the binary task), otherwise macro values
  // (macro AUROC, macro sensitivity, FPR = 1 - macro specificity).
  double auroc = 0, sensitivity = 0, fpr = 0, equalized_odds = 0, accuracy = 0;
  std::string auroc_basis;  // "binary" or "macro"
};

struct SubgroupResult {
  std::string value;
  int64_t n = 0;
  bool small = false;  // n < min_size: reported, excluded from the gaps (never gated)
  ModelMetrics ref, cand;
  bool has_cand = false;
};

struct SubgroupAnalysis {
  std::string key;
  std::vector<SubgroupResult> groups;
  GroupGaps gaps_ref, gaps_cand;
  GroupGaps gap_increase;  // cand - ref
  bool has_cand = false;
};

// groups[i] = the key's value of sample i. probs_cand may be null (single-model evaluation).
SubgroupAnalysis compute_subgroups(const std::string& key, const std::vector<std::string>& groups,
                                   const ProbMatrix& probs_ref, const ProbMatrix* probs_cand,
                                   const std::vector<int>& y, const MetricOptions& opt, int64_t min_size);

// Gaps of one model over a list of per-group metrics (helper exposed for tests).
GroupGaps compute_gaps(const std::vector<const ModelMetrics*>& groups);

}  // namespace medq::eval
