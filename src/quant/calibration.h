// Calibration for static quantization: streamed per-tensor statistics and the
// range-selection methods (minmax, percentile, entropy/KL as TensorRT, MSE).
//
// StreamingHistogram keeps a fixed number of bins over a symmetric range
// [-R, R] that grows by powers of two when a batch exceeds it: old bins merge
// exactly into the wider ones (bin edges stay aligned), so memory is bounded
// (num_bins counters per tensor) and activations are never stored. This is
// ONNX Runtime's HistogramCollector idea with a fixed bin count instead of a
// growing one. Exact min/max are tracked beside the histogram.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"
#include "kernels/dnnl/dnnl_layout.h"

namespace medq {

enum class CalibMethod { kMinMax, kPercentile, kEntropy, kMse };
Result<CalibMethod> parse_calib_method(const std::string& s);
const char* calib_method_name(CalibMethod m);

class StreamingHistogram {
 public:
  // num_bins: even, >= 2 (bins over [-R, R]); num_bins/2 bins cover [0, R].
  explicit StreamingHistogram(int num_bins = 4096);

  // Adds n values (NaN ignored). Grows the range (rebinning) when needed.
  void add(const float* x, int64_t n);
  // Updates only min/max/count (the minmax method needs no bins).
  void add_minmax(const float* x, int64_t n);

  int num_bins() const { return static_cast<int>(bins_.size()); }
  double range() const { return range_; }  // R: bins cover [-R, R]
  double bin_width() const { return range_ > 0 ? 2 * range_ / bins_.size() : 0; }
  const std::vector<int64_t>& bins() const { return bins_; }
  int64_t count() const { return count_; }  // values added (zeros before the range was known included)
  float min() const { return min_; }
  float max() const { return max_; }
  // Histogram of |x| with num_bins/2 bins over [0, R].
  std::vector<double> abs_bins() const;

  // Per-channel means along axis 1 of the tensors added with add_channels (x viewed as
  // [outer, channels, inner]); used by bias correction. Empty until the first call.
  void add_channels(const float* x, int64_t outer, int64_t channels, int64_t inner);
  // The same for channels-last data: `rows` rows of `channels` values (an nhwc activation).
  void add_channels_last(const float* x, int64_t rows, int64_t channels);
  std::vector<double> channel_means() const;

 private:
  void grow_to(double amax);
  std::vector<int64_t> bins_;
  double range_ = 0;
  int64_t pending_zeros_ = 0;  // values seen while R == 0 (all exactly zero)
  int64_t count_ = 0;
  float min_ = 0, max_ = 0;
  bool has_data_ = false;
  std::vector<double> channel_sum_;
  int64_t channel_count_ = 0;  // values per channel summed
};

struct TensorRange {
  float lo = 0, hi = 0;
};

struct RangeOptions {
  CalibMethod method = CalibMethod::kMinMax;
  double percentile = 99.99;  // for kPercentile
  bool symmetric = false;     // the range will be made symmetric (symmetric activations)
  int num_quantized_bins = 128;  // entropy target bins (TensorRT: 128)
};

// Threshold (on |x|) minimising KL(P||Q) as TensorRT's entropy calibration.
// `hist` is a histogram of |x| with bins of equal width `width` starting at 0.
double entropy_threshold(const std::vector<double>& hist, double width, int num_quantized_bins = 128);
// Threshold minimising the expected quantization MSE (clipping error beyond the
// threshold + uniform rounding noise step^2/12 inside it) with `steps` levels over [0, t].
double mse_threshold(const std::vector<double>& hist, double width, double steps);
// Smallest threshold t with P(|x| <= t) >= p/100 (p in (0, 100]).
double percentile_threshold(const std::vector<double>& hist, double width, double p);

// The calibrated range of a tensor from its statistics. Always clipped to the
// observed [min, max]; 0 is added by the quantization parameters, not here.
// The MSE method assumes 255 steps over [0, t] for a non-negative tensor with an
// asymmetric range, 127 otherwise.
TensorRange compute_range(const StreamingHistogram& h, const RangeOptions& opts);

// Collects statistics for named float tensors through Session's ValueObserver.
class Calibrator {
 public:
  // channel_means: also keep per-channel means (StreamingHistogram::add_channels), for bias correction.
  Calibrator(std::set<std::string> tensors, bool need_histograms, int num_bins = 4096, bool channel_means = false);
  // Records a tensor (called by the observer; thread-safe). Ignores other names/dtypes.
  void observe(const Value& v, const Tensor& t, Layout layout = Layout::kPlain);
  // A channel-mean tensor arrived in a layout other than plain / nhwc (then the means are off).
  bool channel_layout_error() const { return channel_layout_error_; }
  const std::map<std::string, StreamingHistogram>& stats() const { return stats_; }
  int64_t batches() const { return batches_; }
  void count_batch() { ++batches_; }

 private:
  std::set<std::string> tensors_;
  bool need_histograms_;
  int num_bins_;
  bool channel_means_;
  std::mutex mu_;
  std::map<std::string, StreamingHistogram> stats_;
  int64_t batches_ = 0;
  bool channel_layout_error_ = false;
};

}  // namespace medq
