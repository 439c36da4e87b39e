#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

namespace medq::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : kNaN; }

// Mean over the non-NaN values (NaN if none).
double nanmean(const std::vector<double>& v) {
  double s = 0;
  int n = 0;
  for (double x : v)
    if (!std::isnan(x)) {
      s += x;
      ++n;
    }
  return n ? s / n : kNaN;
}

void split_by_label(const std::vector<double>& scores, const std::vector<int>& y, std::vector<double>* pos,
                    std::vector<double>* neg) {
  for (size_t i = 0; i < scores.size(); ++i) (y[i] ? pos : neg)->push_back(scores[i]);
}

double normal_two_sided_p(double z) { return std::erfc(std::fabs(z) / std::sqrt(2.0)); }

// Sample covariance ((n-1)-normalised) of two equally long vectors around known means.
double cov(const std::vector<double>& a, double ma, const std::vector<double>& b, double mb) {
  if (a.size() < 2) return kNaN;
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - ma) * (b[i] - mb);
  return s / static_cast<double>(a.size() - 1);
}

}  // namespace

int64_t ConfusionMatrix::total() const { return std::accumulate(m.begin(), m.end(), int64_t{0}); }

ConfusionMatrix confusion_matrix(const std::vector<int>& y_true, const std::vector<int>& y_pred, int k) {
  ConfusionMatrix cm;
  cm.k = k;
  cm.m.assign(static_cast<size_t>(k) * k, 0);
  for (size_t i = 0; i < y_true.size() && i < y_pred.size(); ++i) {
    int t = y_true[i], p = y_pred[i];
    if (t < 0 || t >= k || p < 0 || p >= k) continue;
    cm.m[static_cast<size_t>(t) * k + p]++;
  }
  return cm;
}

std::vector<double> midranks(const std::vector<double>& x) {
  const size_t n = x.size();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(n);
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) ++j;
    double rank = 0.5 * static_cast<double>(i + j) + 1.0;  // mean of 1-based ranks i+1..j+1
    for (size_t t = i; t <= j; ++t) r[idx[t]] = rank;
    i = j + 1;
  }
  return r;
}

DelongComponents delong_components(const std::vector<double>& scores, const std::vector<int>& y) {
  DelongComponents dc;
  std::vector<double> pos, neg;
  split_by_label(scores, y, &pos, &neg);
  const size_t m = pos.size(), n = neg.size();
  if (m == 0 || n == 0) {
    dc.auc = kNaN;
    return dc;
  }
  std::vector<double> tx = midranks(pos), ty = midranks(neg);
  std::vector<double> z(pos);
  z.insert(z.end(), neg.begin(), neg.end());
  std::vector<double> tz = midranks(z);
  dc.v10.resize(m);
  dc.v01.resize(n);
  double sum_pos_ranks = 0;
  for (size_t i = 0; i < m; ++i) {
    sum_pos_ranks += tz[i];
    dc.v10[i] = (tz[i] - tx[i]) / static_cast<double>(n);
  }
  for (size_t j = 0; j < n; ++j) dc.v01[j] = 1.0 - (tz[m + j] - ty[j]) / static_cast<double>(m);
  dc.auc = (sum_pos_ranks - 0.5 * static_cast<double>(m) * static_cast<double>(m + 1)) /
           (static_cast<double>(m) * static_cast<double>(n));
  return dc;
}

double auroc(const std::vector<double>& scores, const std::vector<int>& y) { return delong_components(scores, y).auc; }

AucCi delong_auc(const std::vector<double>& scores, const std::vector<int>& y) {
  AucCi r;
  DelongComponents dc = delong_components(scores, y);
  r.n_pos = static_cast<int64_t>(std::count_if(y.begin(), y.end(), [](int v) { return v != 0; }));
  r.n_neg = static_cast<int64_t>(y.size()) - r.n_pos;
  r.auc = dc.auc;
  if (std::isnan(dc.auc)) {
    r.var = r.se = r.lo = r.hi = kNaN;
    return r;
  }
  double s10 = cov(dc.v10, dc.auc, dc.v10, dc.auc), s01 = cov(dc.v01, dc.auc, dc.v01, dc.auc);
  r.var = s10 / dc.v10.size() + s01 / dc.v01.size();
  r.se = std::sqrt(r.var);
  r.lo = std::max(0.0, r.auc - kZ95 * r.se);
  r.hi = std::min(1.0, r.auc + kZ95 * r.se);
  return r;
}

PairedAuc delong_paired(const std::vector<double>& sa, const std::vector<double>& sb, const std::vector<int>& y,
                        double margin) {
  PairedAuc r;
  r.margin = margin;
  DelongComponents a = delong_components(sa, y), b = delong_components(sb, y);
  r.auc_a = a.auc;
  r.auc_b = b.auc;
  r.diff = b.auc - a.auc;
  if (std::isnan(r.diff)) {
    r.var = r.se = r.lo = r.hi = r.z = r.p_value = kNaN;
    return r;
  }
  const double m = static_cast<double>(a.v10.size()), n = static_cast<double>(a.v01.size());
  double s10 = cov(a.v10, a.auc, a.v10, a.auc) + cov(b.v10, b.auc, b.v10, b.auc) - 2 * cov(a.v10, a.auc, b.v10, b.auc);
  double s01 = cov(a.v01, a.auc, a.v01, a.auc) + cov(b.v01, b.auc, b.v01, b.auc) - 2 * cov(a.v01, a.auc, b.v01, b.auc);
  r.var = std::max(0.0, s10 / m + s01 / n);
  r.se = std::sqrt(r.var);
  r.lo = r.diff - kZ95 * r.se;
  r.hi = r.diff + kZ95 * r.se;
  if (r.se > 0) {
    r.z = r.diff / r.se;
    r.p_value = normal_two_sided_p(r.z);
  } else {
    r.z = 0;
    r.p_value = r.diff == 0 ? 1.0 : 0.0;
  }
  r.non_inferior = !std::isnan(r.lo) && r.lo > -margin;
  return r;
}

double average_precision(const std::vector<double>& scores, const std::vector<int>& y) {
  const size_t n = scores.size();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  int64_t npos = std::count_if(y.begin(), y.end(), [](int v) { return v != 0; });
  if (npos == 0) return kNaN;
  int64_t tp = 0, fp = 0;
  double ap = 0, prev_recall = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    for (; j < n && scores[idx[j]] == scores[idx[i]]; ++j) (y[idx[j]] ? tp : fp)++;
    double recall = static_cast<double>(tp) / npos, precision = static_cast<double>(tp) / (tp + fp);
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
    i = j;
  }
  return ap;
}

RocCurve roc_curve(const std::vector<double>& scores, const std::vector<int>& y) {
  RocCurve rc;
  const size_t n = scores.size();
  int64_t npos = std::count_if(y.begin(), y.end(), [](int v) { return v != 0; });
  int64_t nneg = static_cast<int64_t>(n) - npos;
  if (npos == 0 || nneg == 0) return rc;
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  rc.fpr.push_back(0);
  rc.tpr.push_back(0);
  rc.thresholds.push_back(std::numeric_limits<double>::infinity());
  int64_t tp = 0, fp = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    for (; j < n && scores[idx[j]] == scores[idx[i]]; ++j) (y[idx[j]] ? tp : fp)++;
    rc.fpr.push_back(static_cast<double>(fp) / nneg);
    rc.tpr.push_back(static_cast<double>(tp) / npos);
    rc.thresholds.push_back(scores[idx[i]]);
    i = j;
  }
  return rc;
}

OperatingPoint sensitivity_at_specificity(const std::vector<double>& scores, const std::vector<int>& y,
                                          double min_specificity) {
  OperatingPoint op;
  op.target = min_specificity;
  op.threshold = op.sensitivity = op.specificity = kNaN;
  RocCurve rc = roc_curve(scores, y);
  for (size_t i = 1; i < rc.fpr.size(); ++i) {
    double spec = 1 - rc.fpr[i], sens = rc.tpr[i];
    if (spec + 1e-12 < min_specificity) continue;
    if (!op.found || sens > op.sensitivity || (sens == op.sensitivity && spec > op.specificity)) {
      op = {min_specificity, rc.thresholds[i], sens, spec, true};
    }
  }
  return op;
}

OperatingPoint specificity_at_sensitivity(const std::vector<double>& scores, const std::vector<int>& y,
                                          double min_sensitivity) {
  OperatingPoint op;
  op.target = min_sensitivity;
  op.threshold = op.sensitivity = op.specificity = kNaN;
  RocCurve rc = roc_curve(scores, y);
  for (size_t i = 1; i < rc.fpr.size(); ++i) {
    double spec = 1 - rc.fpr[i], sens = rc.tpr[i];
    if (sens + 1e-12 < min_sensitivity) continue;
    if (!op.found || spec > op.specificity || (spec == op.specificity && sens > op.sensitivity)) {
      op = {min_sensitivity, rc.thresholds[i], sens, spec, true};
    }
  }
  return op;
}

Calibration calibration(const std::vector<double>& confidence, const std::vector<int>& correct, int num_bins) {
  Calibration c;
  c.bins.resize(num_bins);
  std::vector<double> sum_conf(num_bins, 0), sum_acc(num_bins, 0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    double x = confidence[i];
    // Bin b covers (b/B, (b+1)/B]; 0 belongs to bin 0.
    int b = static_cast<int>(std::ceil(x * num_bins)) - 1;
    b = std::clamp(b, 0, num_bins - 1);
    c.bins[b].count++;
    sum_conf[b] += x;
    sum_acc[b] += correct[i] ? 1.0 : 0.0;
  }
  const double n = static_cast<double>(confidence.size());
  for (int b = 0; b < num_bins; ++b) {
    CalibrationBin& bin = c.bins[b];
    bin.lo = static_cast<double>(b) / num_bins;
    bin.hi = static_cast<double>(b + 1) / num_bins;
    if (bin.count == 0) {
      bin.confidence = bin.accuracy = kNaN;
      continue;
    }
    bin.confidence = sum_conf[b] / bin.count;
    bin.accuracy = sum_acc[b] / bin.count;
    double gap = std::fabs(bin.accuracy - bin.confidence);
    c.ece += gap * bin.count / n;
    c.mce = std::max(c.mce, gap);
  }
  if (confidence.empty()) c.ece = c.mce = kNaN;
  return c;
}

double binom_half_pmf(int64_t k, int64_t n) {
  if (k < 0 || k > n) return 0;
  long double lp = std::lgammal(n + 1.0L) - std::lgammal(k + 1.0L) - std::lgammal(n - k + 1.0L) -
                   static_cast<long double>(n) * std::log(2.0L);
  return static_cast<double>(std::exp(lp));
}

double binom_half_cdf(int64_t k, int64_t n) {
  if (k < 0) return 0;
  if (k >= n) return 1;
  long double s = 0;
  for (int64_t j = 0; j <= k; ++j) {
    long double lp = std::lgammal(n + 1.0L) - std::lgammal(j + 1.0L) - std::lgammal(n - j + 1.0L) -
                     static_cast<long double>(n) * std::log(2.0L);
    s += std::exp(lp);
  }
  return static_cast<double>(std::min(s, 1.0L));
}

McNemar mcnemar_exact(int64_t b, int64_t c) {
  McNemar r;
  r.b = b;
  r.c = c;
  int64_t n = b + c;
  if (n == 0) return r;
  int64_t k = std::min(b, c);
  double cdf = binom_half_cdf(k, n), pmf = binom_half_pmf(k, n);
  r.p_value = std::min(1.0, 2 * cdf);
  r.mid_p_value = std::min(1.0, 2 * cdf - pmf);
  return r;
}

// ---------------------------------------------------------------------------------------------

std::vector<double> ProbMatrix::column(int c) const {
  std::vector<double> v(n());
  for (size_t i = 0; i < v.size(); ++i) v[i] = at(i, c);
  return v;
}

std::vector<int> ProbMatrix::argmax() const {
  std::vector<int> r(n());
  for (size_t i = 0; i < r.size(); ++i) {
    const double* row = &p[i * k];
    r[i] = static_cast<int>(std::max_element(row, row + k) - row);
  }
  return r;
}

std::vector<double> binary_scores(const ProbMatrix& probs, const std::vector<int>& positive_classes) {
  std::vector<double> s(probs.n(), 0.0);
  for (size_t i = 0; i < s.size(); ++i)
    for (int c : positive_classes) s[i] = probs.independent ? std::max(s[i], probs.at(i, c)) : s[i] + probs.at(i, c);
  return s;
}

ProbMatrix softmax_rows(const std::vector<float>& logits, int k) {
  ProbMatrix pm;
  pm.k = k;
  pm.p.resize(logits.size());
  const size_t n = k ? logits.size() / k : 0;
  for (size_t i = 0; i < n; ++i) {
    const float* x = &logits[i * k];
    double* out = &pm.p[i * k];
    double mx = *std::max_element(x, x + k);
    double s = 0;
    for (int c = 0; c < k; ++c) s += (out[c] = std::exp(static_cast<double>(x[c]) - mx));
    for (int c = 0; c < k; ++c) out[c] /= s;
  }
  return pm;
}

ModelMetrics compute_metrics(const ProbMatrix& probs, const std::vector<int>& y, const MetricOptions& opt) {
  ModelMetrics mm;
  const int k = probs.k;
  mm.k = k;
  mm.n = static_cast<int64_t>(y.size());
  std::vector<int> pred = probs.argmax();
  mm.confusion = confusion_matrix(y, pred, k);
  int64_t correct = 0;
  for (int c = 0; c < k; ++c) correct += mm.confusion.at(c, c);
  mm.accuracy = ratio(correct, mm.n);

  std::vector<double> sens, spec, prec, f1, auc, ap;
  mm.per_class.resize(k);
  for (int c = 0; c < k; ++c) {
    ClassMetrics& cm = mm.per_class[c];
    int64_t row = 0, col = 0;
    for (int j = 0; j < k; ++j) {
      row += mm.confusion.at(c, j);
      col += mm.confusion.at(j, c);
    }
    cm.support = row;
    cm.tp = mm.confusion.at(c, c);
    cm.fn = row - cm.tp;
    cm.fp = col - cm.tp;
    cm.tn = mm.n - cm.tp - cm.fn - cm.fp;
    cm.sensitivity = ratio(cm.tp, cm.tp + cm.fn);
    cm.specificity = ratio(cm.tn, cm.tn + cm.fp);
    // sklearn's zero_division behaviour: precision 0 without predictions, F1 0 when P + R = 0.
    cm.precision = cm.tp + cm.fp > 0 ? ratio(cm.tp, cm.tp + cm.fp) : 0.0;
    if (std::isnan(cm.sensitivity))
      cm.f1 = kNaN;
    else
      cm.f1 = cm.precision + cm.sensitivity > 0 ? 2 * cm.precision * cm.sensitivity / (cm.precision + cm.sensitivity)
                                                : 0.0;
    std::vector<int> yc(y.size());
    for (size_t i = 0; i < y.size(); ++i) yc[i] = y[i] == c;
    std::vector<double> sc = probs.column(c);
    cm.auroc = delong_auc(sc, yc);
    cm.pr_auc = average_precision(sc, yc);
    if (opt.keep_curves) mm.roc.push_back(roc_curve(sc, yc));
    sens.push_back(cm.sensitivity);
    spec.push_back(cm.specificity);
    prec.push_back(cm.support > 0 ? cm.precision : kNaN);
    f1.push_back(cm.f1);
    auc.push_back(cm.auroc.auc);
    ap.push_back(cm.pr_auc);
  }
  mm.balanced_accuracy = nanmean(sens);
  mm.macro_sensitivity = nanmean(sens);
  mm.macro_specificity = nanmean(spec);
  mm.macro_precision = nanmean(prec);
  mm.macro_f1 = nanmean(f1);
  mm.macro_auroc = nanmean(auc);
  mm.macro_pr_auc = nanmean(ap);

  std::vector<double> conf(y.size());
  std::vector<int> ok(y.size());
  for (size_t i = 0; i < y.size(); ++i) {
    conf[i] = probs.at(i, pred[i]);
    ok[i] = pred[i] == y[i];
  }
  mm.calibration = calibration(conf, ok, opt.calibration_bins);

  if (!opt.positive_classes.empty()) {
    mm.has_binary = true;
    BinaryMetrics& b = mm.binary;
    b.positive_classes = opt.positive_classes;
    b.threshold = opt.binary_threshold;
    std::vector<double> s = binary_scores(probs, opt.positive_classes);
    std::vector<int> yb(y.size());
    for (size_t i = 0; i < y.size(); ++i)
      yb[i] = std::find(opt.positive_classes.begin(), opt.positive_classes.end(), y[i]) != opt.positive_classes.end();
    std::vector<double> bconf(y.size());
    std::vector<int> bok(y.size());
    for (size_t i = 0; i < y.size(); ++i) {
      bool p = s[i] >= b.threshold;
      if (yb[i]) {
        b.n_pos++;
        (p ? b.tp : b.fn)++;
      } else {
        b.n_neg++;
        (p ? b.fp : b.tn)++;
      }
      bconf[i] = std::max(s[i], 1 - s[i]);
      bok[i] = static_cast<int>(p) == yb[i];
    }
    b.accuracy = ratio(b.tp + b.tn, mm.n);
    b.sensitivity = ratio(b.tp, b.n_pos);
    b.specificity = ratio(b.tn, b.n_neg);
    b.balanced_accuracy = nanmean({b.sensitivity, b.specificity});
    b.fpr = std::isnan(b.specificity) ? kNaN : 1 - b.specificity;
    b.precision = b.tp + b.fp > 0 ? ratio(b.tp, b.tp + b.fp) : 0.0;
    b.f1 = std::isnan(b.sensitivity) ? kNaN
           : b.precision + b.sensitivity > 0 ? 2 * b.precision * b.sensitivity / (b.precision + b.sensitivity)
                                             : 0.0;
    b.auroc = delong_auc(s, yb);
    b.pr_auc = average_precision(s, yb);
    b.sens_at_spec = sensitivity_at_specificity(s, yb, opt.target_specificity);
    b.spec_at_sens = specificity_at_sensitivity(s, yb, opt.target_sensitivity);
    b.calibration = calibration(bconf, bok, opt.calibration_bins);
    if (opt.keep_curves) b.roc = roc_curve(s, yb);
  }
  return mm;
}

// ---------------------------------------------------------------------------------------------

namespace {

// Influence terms of one class's paired DeLong difference (b - a), scaled so that the sum of
// their squares is the DeLong variance of that difference: for a positive sample
// ((V10b - V10a) - (Ab - Aa)) / sqrt(m (m-1)), for a negative one the same with V01 and n.
bool add_influence(const std::vector<double>& sa, const std::vector<double>& sb, const std::vector<int>& yc,
                   double weight, std::vector<double>* psi) {
  DelongComponents a = delong_components(sa, yc), b = delong_components(sb, yc);
  if (std::isnan(a.auc) || a.v10.size() < 2 || a.v01.size() < 2) return false;
  const double m = static_cast<double>(a.v10.size()), n = static_cast<double>(a.v01.size());
  const double d = b.auc - a.auc;
  size_t ip = 0, in = 0;
  for (size_t i = 0; i < yc.size(); ++i) {
    if (yc[i]) {
      (*psi)[i] += weight * ((b.v10[ip] - a.v10[ip]) - d) / std::sqrt(m * (m - 1));
      ++ip;
    } else {
      (*psi)[i] += weight * ((b.v01[in] - a.v01[in]) - d) / std::sqrt(n * (n - 1));
      ++in;
    }
  }
  return true;
}

}  // namespace

PairedMetrics compute_paired(const std::vector<float>& logits_ref, const std::vector<float>& logits_cand,
                             const ProbMatrix& probs_ref, const ProbMatrix& probs_cand, const std::vector<int>& y,
                             const ModelMetrics& m_ref, const ModelMetrics& m_cand, const MetricOptions& opt,
                             double margin) {
  PairedMetrics pm;
  const int k = probs_ref.k;
  pm.n = static_cast<int64_t>(y.size());
  std::vector<int> pr = probs_ref.argmax(), pc = probs_cand.argmax();
  pm.prediction_confusion = confusion_matrix(pr, pc, k);
  int64_t disagree = 0, b = 0, c = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    disagree += pr[i] != pc[i];
    bool ok_r = pr[i] == y[i], ok_c = pc[i] == y[i];
    b += ok_r && !ok_c;
    c += !ok_r && ok_c;
  }
  pm.disagreement_rate = ratio(disagree, pm.n);
  pm.mcnemar = mcnemar_exact(b, c);
  pm.accuracy_ref = m_ref.accuracy;
  pm.accuracy_cand = m_cand.accuracy;
  pm.accuracy_drop = m_ref.accuracy - m_cand.accuracy;
  pm.balanced_accuracy_drop = m_ref.balanced_accuracy - m_cand.balanced_accuracy;
  pm.macro_auroc_drop = m_ref.macro_auroc - m_cand.macro_auroc;
  pm.macro_f1_drop = m_ref.macro_f1 - m_cand.macro_f1;

  std::vector<double> psi(y.size(), 0.0);
  int defined = 0;
  double diff_sum = 0, a_sum = 0, b_sum = 0;
  for (int cls = 0; cls < k; ++cls) {
    std::vector<int> yc(y.size());
    for (size_t i = 0; i < y.size(); ++i) yc[i] = y[i] == cls;
    std::vector<double> sa = probs_ref.column(cls), sb = probs_cand.column(cls);
    PairedAuc pa = delong_paired(sa, sb, yc, margin);
    pm.per_class_auroc.push_back(pa);
    if (!std::isnan(pa.diff)) {
      ++defined;
      diff_sum += pa.diff;
      a_sum += pa.auc_a;
      b_sum += pa.auc_b;
    }
  }
  // Macro AUROC difference: mean over the defined classes; variance = sum of squared
  // per-sample influence terms of the mean (equals DeLong's for a single class).
  PairedAuc& ma = pm.macro_auroc;
  ma.margin = margin;
  if (defined > 0) {
    int used = 0;
    for (int cls = 0; cls < k; ++cls) {
      if (std::isnan(pm.per_class_auroc[cls].diff)) continue;
      std::vector<int> yc(y.size());
      for (size_t i = 0; i < y.size(); ++i) yc[i] = y[i] == cls;
      used += add_influence(probs_ref.column(cls), probs_cand.column(cls), yc, 1.0 / defined, &psi);
    }
    ma.auc_a = a_sum / defined;
    ma.auc_b = b_sum / defined;
    ma.diff = diff_sum / defined;
    if (used == defined) {
      double v = 0;
      for (double x : psi) v += x * x;
      ma.var = v;
      ma.se = std::sqrt(v);
      ma.lo = ma.diff - kZ95 * ma.se;
      ma.hi = ma.diff + kZ95 * ma.se;
      ma.z = ma.se > 0 ? ma.diff / ma.se : 0;
      ma.p_value = ma.se > 0 ? normal_two_sided_p(ma.z) : (ma.diff == 0 ? 1.0 : 0.0);
      ma.non_inferior = ma.lo > -margin;
    } else {
      ma.var = ma.se = ma.lo = ma.hi = ma.z = ma.p_value = kNaN;
    }
  } else {
    ma.auc_a = ma.auc_b = ma.diff = ma.var = ma.se = ma.lo = ma.hi = ma.z = ma.p_value = kNaN;
  }

  if (!opt.positive_classes.empty()) {
    pm.has_binary = true;
    std::vector<int> yb(y.size());
    for (size_t i = 0; i < y.size(); ++i)
      yb[i] = std::find(opt.positive_classes.begin(), opt.positive_classes.end(), y[i]) != opt.positive_classes.end();
    pm.binary_auroc = delong_paired(binary_scores(probs_ref, opt.positive_classes),
                                    binary_scores(probs_cand, opt.positive_classes), yb, margin);
    pm.binary_sensitivity_drop = m_ref.binary.sensitivity - m_cand.binary.sensitivity;
    pm.binary_specificity_drop = m_ref.binary.specificity - m_cand.binary.specificity;
  }

  double sl = 0, sp = 0;
  for (size_t i = 0; i < logits_ref.size() && i < logits_cand.size(); ++i) {
    double d = std::fabs(static_cast<double>(logits_ref[i]) - logits_cand[i]);
    pm.max_abs_logit_diff = std::max(pm.max_abs_logit_diff, d);
    sl += d;
  }
  for (size_t i = 0; i < probs_ref.p.size() && i < probs_cand.p.size(); ++i) {
    double d = std::fabs(probs_ref.p[i] - probs_cand.p[i]);
    pm.max_abs_prob_diff = std::max(pm.max_abs_prob_diff, d);
    sp += d;
  }
  pm.mean_abs_logit_diff = logits_ref.empty() ? 0 : sl / logits_ref.size();
  pm.mean_abs_prob_diff = probs_ref.p.empty() ? 0 : sp / probs_ref.p.size();
  return pm;
}

// ---------------------------------------------------------------------------------------------

GroupGaps compute_gaps(const std::vector<const ModelMetrics*>& groups) {
  GroupGaps g;
  auto gap = [&](auto get) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    int n = 0;
    for (const ModelMetrics* m : groups) {
      double v = get(*m);
      if (std::isnan(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      ++n;
    }
    return n >= 2 ? hi - lo : kNaN;
  };
  bool binary = !groups.empty() && groups[0]->has_binary;
  g.auroc_basis = binary ? "binary" : "macro";
  if (binary) {
    g.auroc = gap([](const ModelMetrics& m) { return m.binary.auroc.auc; });
    g.sensitivity = gap([](const ModelMetrics& m) { return m.binary.sensitivity; });
    g.fpr = gap([](const ModelMetrics& m) { return m.binary.fpr; });
  } else {
    g.auroc = gap([](const ModelMetrics& m) { return m.macro_auroc; });
    g.sensitivity = gap([](const ModelMetrics& m) { return m.macro_sensitivity; });
    g.fpr = gap([](const ModelMetrics& m) { return 1 - m.macro_specificity; });
  }
  g.equalized_odds = std::isnan(g.sensitivity) || std::isnan(g.fpr) ? kNaN : std::max(g.sensitivity, g.fpr);
  g.accuracy = gap([](const ModelMetrics& m) { return m.accuracy; });
  return g;
}

SubgroupAnalysis compute_subgroups(const std::string& key, const std::vector<std::string>& groups,
                                   const ProbMatrix& probs_ref, const ProbMatrix* probs_cand,
                                   const std::vector<int>& y, const MetricOptions& opt, int64_t min_size) {
  SubgroupAnalysis sa;
  sa.key = key;
  sa.has_cand = probs_cand != nullptr;
  std::map<std::string, std::vector<size_t>> members;
  for (size_t i = 0; i < groups.size(); ++i) members[groups[i]].push_back(i);
  MetricOptions o = opt;
  o.keep_curves = false;
  std::vector<const ModelMetrics*> eligible_ref, eligible_cand;
  sa.groups.reserve(members.size());
  for (const auto& [value, idx] : members) {
    SubgroupResult r;
    r.value = value;
    r.n = static_cast<int64_t>(idx.size());
    r.small = r.n < min_size;
    auto subset = [&](const ProbMatrix& pm) {
      ProbMatrix s;
      s.k = pm.k;
      s.p.reserve(idx.size() * pm.k);
      for (size_t i : idx) s.p.insert(s.p.end(), pm.p.begin() + i * pm.k, pm.p.begin() + (i + 1) * pm.k);
      return s;
    };
    std::vector<int> ys;
    for (size_t i : idx) ys.push_back(y[i]);
    r.ref = compute_metrics(subset(probs_ref), ys, o);
    if (probs_cand) {
      r.cand = compute_metrics(subset(*probs_cand), ys, o);
      r.has_cand = true;
    }
    sa.groups.push_back(std::move(r));
  }
  for (const SubgroupResult& r : sa.groups) {
    if (r.small) continue;
    eligible_ref.push_back(&r.ref);
    if (r.has_cand) eligible_cand.push_back(&r.cand);
  }
  sa.gaps_ref = compute_gaps(eligible_ref);
  if (probs_cand) {
    sa.gaps_cand = compute_gaps(eligible_cand);
    GroupGaps& d = sa.gap_increase;
    d.auroc_basis = sa.gaps_ref.auroc_basis;
    d.auroc = sa.gaps_cand.auroc - sa.gaps_ref.auroc;
    d.sensitivity = sa.gaps_cand.sensitivity - sa.gaps_ref.sensitivity;
    d.fpr = sa.gaps_cand.fpr - sa.gaps_ref.fpr;
    d.equalized_odds = sa.gaps_cand.equalized_odds - sa.gaps_ref.equalized_odds;
    d.accuracy = sa.gaps_cand.accuracy - sa.gaps_ref.accuracy;
  }
  return sa;
}

}  // namespace medq::eval
