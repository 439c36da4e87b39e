// Helpers for the model-level tests: locating shared data/fixtures and
// comparing outputs relative to their range.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/tensor.h"

namespace medq::testing_models {

inline bool path_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

inline std::string shared_data() { return MEDQ_SHARED_DATA; }

// The torchvision fixture folder (scripts/test.sh generates it), or "" if absent.
inline std::string torchvision_fixtures() {
  const char* e = std::getenv("MEDQ_TORCHVISION_FIXTURES");
  std::string d = e && *e ? e : std::string(MEDQ_BINARY_DIR) + "/fixtures/torchvision";
  return path_exists(d + "/manifest.json") ? d : "";
}

struct Diff {
  double max_abs = 0;   // max |a - b|
  double range = 0;     // max(b) - min(b) of the reference
  double rel() const { return max_abs / std::max(range, 1e-12); }
};

inline Diff compare_f32(const Tensor& got, const Tensor& ref) {
  Diff d;
  const float* a = got.data<float>();
  const float* b = ref.data<float>();
  float lo = b[0], hi = b[0];
  for (int64_t i = 0; i < ref.numel(); ++i) {
    d.max_abs = std::max(d.max_abs, static_cast<double>(std::fabs(a[i] - b[i])));
    lo = std::min(lo, b[i]);
    hi = std::max(hi, b[i]);
  }
  d.range = hi - lo;
  return d;
}

inline int64_t argmax_row(const float* r, int64_t n) { return std::max_element(r, r + n) - r; }

}  // namespace medq::testing_models
