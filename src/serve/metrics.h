// Prometheus metrics of `medq serve`: counters, gauges and fixed-bucket histograms keyed by
// name + label set, rendered in the text exposition format (version 0.0.4).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace medq::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  Metrics();
  void inc(const std::string& name, const Labels& labels = {}, double v = 1);
  void set(const std::string& name, const Labels& labels, double v);
  void observe(const std::string& name, const Labels& labels, double v);
  double value(const std::string& name, const Labels& labels = {}) const;  // counter/gauge (0 if absent)
  // Sum of a counter over every label set whose labels include `match`.
  double sum(const std::string& name, const Labels& match = {}) const;
  std::string render() const;

 private:
  struct Hist {
    std::vector<double> counts;  // per bucket (non-cumulative)
    double sum = 0;
    double count = 0;
  };
  struct Family {
    std::string type, help;
    std::vector<double> buckets;  // histograms
    std::map<Labels, double> values;
    std::map<Labels, Hist> hists;
  };
  void declare(const std::string& name, const std::string& type, const std::string& help,
               std::vector<double> buckets = {});
  mutable std::mutex mu_;
  std::map<std::string, Family> fam_;
};

}  // namespace medq::serve
