#include "quant/calibration.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace medq {

Result<CalibMethod> parse_calib_method(const std::string& s) {
  if (s == "minmax") return CalibMethod::kMinMax;
  if (s == "percentile") return CalibMethod::kPercentile;
  if (s == "entropy" || s == "kl") return CalibMethod::kEntropy;
  if (s == "mse") return CalibMethod::kMse;
  return invalid_argument("--method: unknown calibration method '" + s + "' (minmax, percentile, entropy, mse)");
}

const char* calib_method_name(CalibMethod m) {
  switch (m) {
    case CalibMethod::kMinMax: return "minmax";
    case CalibMethod::kPercentile: return "percentile";
    case CalibMethod::kEntropy: return "entropy";
    case CalibMethod::kMse: return "mse";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// StreamingHistogram

StreamingHistogram::StreamingHistogram(int num_bins) {
  if (num_bins < 2) num_bins = 2;
  if (num_bins % 2) ++num_bins;
  bins_.assign(num_bins, 0);
}

// Large tensors (calibration activations of tens of MB) are scanned by the session's OpenMP
// threads; results do not depend on the thread count (min/max and integer counts).
constexpr int64_t kParallelScan = 1 << 16;

static void batch_minmax(const float* x, int64_t n, float& mn, float& mx, int64_t& valid) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  int64_t nans = 0;
  // std::min/std::max keep their first argument when f is NaN, so NaNs drop out by themselves.
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) reduction(+ : nans) if (n > kParallelScan)
  for (int64_t i = 0; i < n; ++i) {
    const float f = x[i];
    nans += f != f;
    lo = std::min(lo, f);
    hi = std::max(hi, f);
  }
  mn = lo;
  mx = hi;
  valid = n - nans;
}

void StreamingHistogram::add_minmax(const float* x, int64_t n) {
  float mn, mx;
  int64_t valid;
  batch_minmax(x, n, mn, mx, valid);
  if (valid == 0) return;
  if (!has_data_) {
    min_ = mn;
    max_ = mx;
    has_data_ = true;
  } else {
    min_ = std::min(min_, mn);
    max_ = std::max(max_, mx);
  }
  count_ += valid;
}

void StreamingHistogram::grow_to(double amax) {
  const int64_t nb = static_cast<int64_t>(bins_.size()), half = nb / 2;
  if (range_ <= 0) {
    range_ = amax;
    bins_[half] += pending_zeros_;  // exact zeros fall into [0, w)
    pending_zeros_ = 0;
    return;
  }
  // Smallest power-of-two factor f with R*f >= amax; old bin j -> half + floor((j - half) / f).
  double f = 1;
  int k = 0;
  while (range_ * f < amax && k < 1000) {
    f *= 2;
    ++k;
  }
  if (f == 1) return;
  std::vector<int64_t> nb2(bins_.size(), 0);
  for (int64_t j = 0; j < nb; ++j) {
    if (!bins_[j]) continue;
    double d = std::floor(static_cast<double>(j - half) / f);
    int64_t idx = half + static_cast<int64_t>(d);
    idx = std::min<int64_t>(std::max<int64_t>(idx, 0), nb - 1);
    nb2[idx] += bins_[j];
  }
  bins_.swap(nb2);
  range_ *= f;
}

void StreamingHistogram::add(const float* x, int64_t n) {
  float mn, mx;
  int64_t valid;
  batch_minmax(x, n, mn, mx, valid);
  if (valid == 0) return;
  if (!has_data_) {
    min_ = mn;
    max_ = mx;
    has_data_ = true;
  } else {
    min_ = std::min(min_, mn);
    max_ = std::max(max_, mx);
  }
  count_ += valid;
  double amax = std::max(std::fabs(static_cast<double>(mn)), std::fabs(static_cast<double>(mx)));
  if (!std::isfinite(amax)) amax = std::numeric_limits<float>::max();
  if (amax > range_) {
    if (amax == 0) {  // R == 0 and the batch is all zeros
      pending_zeros_ += valid;
      return;
    }
    grow_to(amax);
  }
  if (range_ <= 0) {
    pending_zeros_ += valid;
    return;
  }
  const int64_t nb = static_cast<int64_t>(bins_.size());
  const double inv_w = nb / (2 * range_);
  const double half = static_cast<double>(nb / 2);
  auto bin_range = [&](int64_t i0, int64_t i1, int64_t* b) {
    for (int64_t i = i0; i < i1; ++i) {
      float f = x[i];
      if (std::isnan(f)) continue;
      double p = std::floor(static_cast<double>(f) * inv_w + half);
      int64_t idx = p < 0 ? 0 : (p >= nb ? nb - 1 : static_cast<int64_t>(p));
      ++b[idx];
    }
  };
  const int threads = n > kParallelScan ? omp_get_max_threads() : 1;
  if (threads <= 1) {
    bin_range(0, n, bins_.data());
    return;
  }
  // Per-thread bins, summed: integer counts, the same for any thread count.
  std::vector<int64_t> local(static_cast<size_t>(threads) * nb, 0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    bin_range(n * t / nt, n * (t + 1) / nt, local.data() + static_cast<size_t>(t) * nb);
  }
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < nb; ++j) bins_[j] += local[static_cast<size_t>(t) * nb + j];
}

std::vector<double> StreamingHistogram::abs_bins() const {
  const size_t half = bins_.size() / 2;
  std::vector<double> a(half, 0.0);
  for (size_t j = 0; j < half; ++j) a[j] = static_cast<double>(bins_[half + j] + bins_[half - 1 - j]);
  a[0] += static_cast<double>(pending_zeros_);
  return a;
}

// ---------------------------------------------------------------------------
// Threshold search

static size_t used_bins(const std::vector<double>& h) {
  size_t l = h.size();
  while (l > 0 && h[l - 1] == 0) --l;
  return l;
}

double percentile_threshold(const std::vector<double>& hist, double width, double p) {
  double total = 0;
  for (double v : hist) total += v;
  if (total <= 0) return 0;
  double target = std::min(1.0, p / 100.0) * total, cum = 0;
  for (size_t i = 0; i < hist.size(); ++i) {
    cum += hist[i];
    if (cum >= target * (1 - 1e-12)) return (i + 1) * width;
  }
  return hist.size() * width;
}

// MXNet/ORT smoothing: move eps of mass onto zero bins so KL stays finite. Returns false when all zero.
static bool smooth(std::vector<double>& p) {
  const double eps = 1e-4;
  size_t zeros = 0;
  for (double v : p) zeros += v == 0;
  size_t nonzeros = p.size() - zeros;
  if (!nonzeros) return false;
  double eps1 = eps * static_cast<double>(zeros) / static_cast<double>(nonzeros);
  for (double& v : p) v = v == 0 ? eps : v - eps1;
  return true;
}

double entropy_threshold(const std::vector<double>& hist, double width, int nq) {
  const size_t L = used_bins(hist);
  if (L == 0) return 0;
  if (nq < 2) nq = 2;
  if (L <= static_cast<size_t>(nq)) return L * width;
  std::vector<double> suffix(L + 1, 0.0);
  for (size_t i = L; i-- > 0;) suffix[i] = suffix[i + 1] + hist[i];
  double best_kl = std::numeric_limits<double>::infinity();
  size_t best_i = L;
  std::vector<double> p, q, qb(nq);
  for (size_t i = nq; i <= L; ++i) {
    p.assign(hist.begin(), hist.begin() + i);
    p[i - 1] += suffix[i];
    const size_t m = i / nq;
    std::fill(qb.begin(), qb.end(), 0.0);
    for (int j = 0; j < nq; ++j) {
      size_t s = j * m, e = (j == nq - 1) ? i : s + m;
      for (size_t k = s; k < e; ++k) qb[j] += hist[k];
    }
    q.assign(i, 0.0);
    for (int j = 0; j < nq; ++j) {
      size_t s = j * m, e = (j == nq - 1) ? i : s + m;
      size_t norm = 0;
      for (size_t k = s; k < e; ++k) norm += p[k] != 0;
      if (!norm) continue;
      double v = qb[j] / static_cast<double>(norm);
      for (size_t k = s; k < e; ++k) q[k] = p[k] != 0 ? v : 0.0;
    }
    if (!smooth(p) || !smooth(q)) continue;
    double sp = 0, sq = 0;
    for (size_t k = 0; k < i; ++k) {
      sp += p[k];
      sq += q[k];
    }
    double kl = 0;
    for (size_t k = 0; k < i; ++k) {
      double pk = p[k] / sp, qk = q[k] / sq;
      if (pk > 0 && qk > 0) kl += pk * std::log(pk / qk);
    }
    if (kl < best_kl) {
      best_kl = kl;
      best_i = i;
    }
  }
  return best_i * width;
}

double mse_threshold(const std::vector<double>& hist, double width, double steps) {
  const size_t L = used_bins(hist);
  if (L == 0) return 0;
  // Suffix sums of n, n*c, n*c^2 (c = bin centre) give the clipping error in O(1) per candidate.
  std::vector<double> s0(L + 1, 0.0), s1(L + 1, 0.0), s2(L + 1, 0.0);
  for (size_t k = L; k-- > 0;) {
    double c = (k + 0.5) * width, n = hist[k];
    s0[k] = s0[k + 1] + n;
    s1[k] = s1[k + 1] + n * c;
    s2[k] = s2[k + 1] + n * c * c;
  }
  double best = std::numeric_limits<double>::infinity(), best_t = L * width;
  for (size_t i = 1; i <= L; ++i) {
    double t = i * width, step = t / steps;
    double in = s0[0] - s0[i];
    double clip = s2[i] - 2 * t * s1[i] + t * t * s0[i];
    double err = in * step * step / 12.0 + clip;
    if (err < best) {
      best = err;
      best_t = t;
    }
  }
  return best_t;
}

TensorRange compute_range(const StreamingHistogram& h, const RangeOptions& o) {
  TensorRange r{h.min(), h.max()};
  if (o.method == CalibMethod::kMinMax || h.count() == 0 || h.range() <= 0) return r;
  const double w = h.range() / (h.num_bins() / 2);
  const bool signed_asym = !o.symmetric && h.min() < 0 && h.max() > 0;
  if (o.method == CalibMethod::kPercentile && signed_asym) {
    // Two-sided percentile on the signed histogram (ORT's non-symmetric percentile).
    const auto& b = h.bins();
    double total = 0;
    for (auto v : b) total += static_cast<double>(v);
    double lo_target = (1 - o.percentile / 100.0) * total, hi_target = o.percentile / 100.0 * total, cum = 0;
    int64_t lo_i = 0, hi_i = static_cast<int64_t>(b.size()) - 1;
    bool lo_set = false;
    for (size_t i = 0; i < b.size(); ++i) {
      cum += static_cast<double>(b[i]);
      if (!lo_set && cum > lo_target) {
        lo_i = static_cast<int64_t>(i);
        lo_set = true;
      }
      if (cum >= hi_target * (1 - 1e-12)) {
        hi_i = static_cast<int64_t>(i);
        break;
      }
    }
    double lo = -h.range() + lo_i * w, hi = -h.range() + (hi_i + 1) * w;
    r.lo = static_cast<float>(std::max<double>(h.min(), std::min(lo, 0.0)));
    r.hi = static_cast<float>(std::min<double>(h.max(), std::max(hi, 0.0)));
    return r;
  }
  std::vector<double> a = h.abs_bins();
  // Ignore the zero spike (ReLU outputs: most values are exactly 0, which every
  // threshold represents exactly) as NVIDIA's pytorch-quantization does
  // (bins[0] = bins[1]); otherwise KL/MSE clip far too aggressively.
  if (o.method != CalibMethod::kPercentile && a.size() > 1) a[0] = std::min(a[0], a[1]);
  double t = 0;
  switch (o.method) {
    case CalibMethod::kPercentile: t = percentile_threshold(a, w, o.percentile); break;
    case CalibMethod::kEntropy: t = entropy_threshold(a, w, o.num_quantized_bins); break;
    case CalibMethod::kMse: t = mse_threshold(a, w, (!o.symmetric && h.min() >= 0) ? 255.0 : 127.0); break;
    default: break;
  }
  r.lo = static_cast<float>(std::max<double>(h.min(), -t));
  r.hi = static_cast<float>(std::min<double>(h.max(), t));
  return r;
}

// ---------------------------------------------------------------------------
// Calibrator

Calibrator::Calibrator(std::set<std::string> tensors, bool need_histograms, int num_bins, bool channel_means)
    : tensors_(std::move(tensors)), need_histograms_(need_histograms), num_bins_(num_bins), channel_means_(channel_means) {}

void Calibrator::observe(const Value& v, const Tensor& t, Layout layout) {
  if (t.dtype() != DataType::kFloat32 || !tensors_.count(v.name)) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stats_.find(v.name);
  if (it == stats_.end()) it = stats_.emplace(v.name, StreamingHistogram(num_bins_)).first;
  if (need_histograms_)
    it->second.add(t.data<float>(), t.numel());
  else
    it->second.add_minmax(t.data<float>(), t.numel());
  // Channel means (axis 1) of [N, C, ...] activations for bias correction.
  if (channel_means_ && t.rank() >= 2 && t.dim(1) > 0) {
    int64_t inner = 1;
    for (int d = 2; d < t.rank(); ++d) inner *= t.dim(d);
    if (layout == Layout::kNhwc)
      it->second.add_channels_last(t.data<float>(), t.dim(0) * inner, t.dim(1));
    else if (layout == Layout::kPlain)
      it->second.add_channels(t.data<float>(), t.dim(0), t.dim(1), inner);
    else
      channel_layout_error_ = true;  // calibration sessions store activations plain or nhwc only
  }
}

namespace {

// Sum of the finite values of p[0..n), in float blocks of 256 added in double (vectorizes; the
// result depends only on n and the values).
double finite_sum(const float* p, int64_t n) {
  double s = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 256) {
    const int64_t i1 = std::min(n, i0 + 256);
    float b = 0;
#pragma omp simd reduction(+ : b)
    for (int64_t i = i0; i < i1; ++i) {
      const float f = p[i];
      b += f - f == 0.f ? f : 0.f;  // NaN and +-inf give NaN in f - f
    }
    s += b;
  }
  return s;
}

}  // namespace

void StreamingHistogram::add_channels(const float* x, int64_t outer, int64_t channels, int64_t inner) {
  if (channel_sum_.empty() && channel_count_ == 0) channel_sum_.assign(channels, 0.0);
  if (static_cast<int64_t>(channel_sum_.size()) != channels) return;  // shape changed: keep the first
  // One channel per iteration (its sums in sample order): the same for any thread count.
#pragma omp parallel for schedule(static) if (outer * channels * inner > kParallelScan)
  for (int64_t c = 0; c < channels; ++c) {
    double s = 0;
    for (int64_t o = 0; o < outer; ++o) s += finite_sum(x + (o * channels + c) * inner, inner);
    channel_sum_[c] += s;
  }
  channel_count_ += outer * inner;
}

void StreamingHistogram::add_channels_last(const float* x, int64_t rows, int64_t channels) {
  if (channel_sum_.empty() && channel_count_ == 0) channel_sum_.assign(channels, 0.0);
  if (static_cast<int64_t>(channel_sum_.size()) != channels) return;
  // Fixed blocks of rows summed in float, blocks added in block order (thread-count independent).
  constexpr int64_t kRows = 256;
  const int64_t nblocks = (rows + kRows - 1) / kRows;
  std::vector<double> part(static_cast<size_t>(nblocks * channels), 0.0);
#pragma omp parallel for schedule(static) if (rows * channels > kParallelScan)
  for (int64_t b = 0; b < nblocks; ++b) {
    std::vector<float> acc(static_cast<size_t>(channels), 0.f);
    float* a = acc.data();
    for (int64_t r = b * kRows; r < std::min(rows, (b + 1) * kRows); ++r) {
      const float* p = x + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) a[c] += p[c] - p[c] == 0.f ? p[c] : 0.f;
    }
    for (int64_t c = 0; c < channels; ++c) part[static_cast<size_t>(b * channels + c)] = a[c];
  }
  for (int64_t b = 0; b < nblocks; ++b)
    for (int64_t c = 0; c < channels; ++c) channel_sum_[c] += part[static_cast<size_t>(b * channels + c)];
  channel_count_ += rows;
}

std::vector<double> StreamingHistogram::channel_means() const {
  std::vector<double> m(channel_sum_.size(), 0.0);
  if (channel_count_ > 0)
    for (size_t c = 0; c < m.size(); ++c) m[c] = channel_sum_[c] / static_cast<double>(channel_count_);
  return m;
}

}  // namespace medq
