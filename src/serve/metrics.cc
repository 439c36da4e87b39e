#include "serve/metrics.h"

#include <algorithm>
#include <cstdio>

namespace medq::serve {

namespace {

std::string escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '\\' || c == '"') r += '\\';
    if (c == '\n') {
      r += "\\n";
      continue;
    }
    r += c;
  }
  return r;
}

std::string label_str(const Labels& l, const std::string& extra_k = "", const std::string& extra_v = "") {
  if (l.empty() && extra_k.empty()) return "";
  std::string s = "{";
  bool first = true;
  for (const auto& [k, v] : l) {
    s += (first ? "" : ",") + k + "=\"" + escape(v) + "\"";
    first = false;
  }
  if (!extra_k.empty()) s += (first ? "" : ",") + extra_k + "=\"" + extra_v + "\"";
  return s + "}";
}

std::string fmt(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

}  // namespace

Metrics::Metrics() {
  const std::vector<double> lat = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  declare("medq_requests_total", "counter", "HTTP requests by endpoint and status code");
  declare("medq_errors_total", "counter", "HTTP error responses (status >= 400) by status code");
  declare("medq_request_seconds", "histogram", "End-to-end request latency by endpoint", lat);
  declare("medq_queue_seconds", "histogram", "Time a request waited in the batch queue", lat);
  declare("medq_compute_seconds", "histogram", "Session run time of a batch", lat);
  declare("medq_decode_seconds", "histogram", "Decode + preprocessing time of a batch's uploads (on the compute threads)", lat);
  declare("medq_batch_size", "histogram", "Rows per executed batch", {1, 2, 4, 8, 16, 32, 64});
  declare("medq_model_used_total", "counter", "Rows answered, by model and variant (compressed/fp32)");
  declare("medq_fallbacks_total", "counter", "Compressed model failures answered by the fp32 model");
  declare("medq_shadow_rows_total", "counter", "Rows also run on fp32 for shadow validation");
  declare("medq_shadow_disagreements_total", "counter", "Shadow rows whose top class differed");
  declare("medq_model_switches_total", "counter", "Switches of a model from compressed to fp32, by reason");
  declare("medq_queue_rows", "gauge", "Rows waiting in the batch queue");
  declare("medq_model_active", "gauge", "1 for the variant currently answering a model");
  declare("medq_ready", "gauge", "1 when every model is loaded and warmed up");
}

void Metrics::declare(const std::string& name, const std::string& type, const std::string& help,
                      std::vector<double> buckets) {
  Family& f = fam_[name];
  f.type = type;
  f.help = help;
  f.buckets = std::move(buckets);
}

void Metrics::inc(const std::string& name, const Labels& labels, double v) {
  std::lock_guard<std::mutex> lk(mu_);
  fam_[name].values[labels] += v;
}

void Metrics::set(const std::string& name, const Labels& labels, double v) {
  std::lock_guard<std::mutex> lk(mu_);
  fam_[name].values[labels] = v;
}

void Metrics::observe(const std::string& name, const Labels& labels, double v) {
  std::lock_guard<std::mutex> lk(mu_);
  Family& f = fam_[name];
  Hist& h = f.hists[labels];
  if (h.counts.empty()) h.counts.assign(f.buckets.size() + 1, 0);
  size_t i = std::lower_bound(f.buckets.begin(), f.buckets.end(), v) - f.buckets.begin();
  h.counts[i] += 1;
  h.sum += v;
  h.count += 1;
}

double Metrics::value(const std::string& name, const Labels& labels) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto f = fam_.find(name);
  if (f == fam_.end()) return 0;
  auto it = f->second.values.find(labels);
  if (it != f->second.values.end()) return it->second;
  auto h = f->second.hists.find(labels);
  return h == f->second.hists.end() ? 0 : h->second.count;
}

double Metrics::sum(const std::string& name, const Labels& match) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto f = fam_.find(name);
  if (f == fam_.end()) return 0;
  auto matches = [&](const Labels& l) {
    for (const auto& m : match)
      if (std::find(l.begin(), l.end(), m) == l.end()) return false;
    return true;
  };
  double s = 0;
  for (const auto& [l, v] : f->second.values)
    if (matches(l)) s += v;
  for (const auto& [l, h] : f->second.hists)
    if (matches(l)) s += h.count;
  return s;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::string out;
  for (const auto& [name, f] : fam_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    for (const auto& [l, v] : f.values) out += name + label_str(l) + " " + fmt(v) + "\n";
    for (const auto& [l, h] : f.hists) {
      double cum = 0;
      for (size_t i = 0; i < f.buckets.size(); ++i) {
        cum += h.counts[i];
        out += name + "_bucket" + label_str(l, "le", fmt(f.buckets[i])) + " " + fmt(cum) + "\n";
      }
      out += name + "_bucket" + label_str(l, "le", "+Inf") + " " + fmt(h.count) + "\n";
      out += name + "_sum" + label_str(l) + " " + fmt(h.sum) + "\n";
      out += name + "_count" + label_str(l) + " " + fmt(h.count) + "\n";
    }
  }
  return out;
}

}  // namespace medq::serve
