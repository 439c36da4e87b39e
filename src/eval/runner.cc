#include "eval/runner.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/fileio.h"
#include "onnx/model_io.h"

namespace medq::eval {

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

}  // namespace

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> r;
  size_t p = 0;
  while (p <= s.size()) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    std::string t = s.substr(p, e - p);
    while (!t.empty() && t.front() == ' ') t.erase(t.begin());
    while (!t.empty() && t.back() == ' ') t.pop_back();
    if (!t.empty()) r.push_back(t);
    p = e + 1;
  }
  return r;
}

Result<LoadedModel> load_classifier(const std::string& path, int num_threads, const SpecOverrides& overrides,
                                    bool quiet) {
  LoadedModel lm;
  lm.path = path;
  ASSIGN_OR_RETURN(lm.model, load_model(path));
  SessionOptions so;
  so.num_threads = num_threads;
  auto sr = Session::create(lm.model, so);
  if (!sr.is_ok()) return sr.status().with_context(path);
  lm.session = std::move(sr.value());
  const Graph& g = lm.session->graph();
  if (g.inputs.size() != 1)
    return invalid_argument(path + ": a classifier must have exactly one input (has " + std::to_string(g.inputs.size()) +
                            ")");
  if (g.outputs.empty()) return invalid_argument(path + ": the model has no output");
  ASSIGN_OR_RETURN(lm.spec, resolve_model_spec(lm.model, overrides, path));
  RETURN_IF_ERROR(lm.spec.require_image_input());
  lm.spec.warn_assumptions(quiet);
  const Value& out = g.value(g.outputs[0]);
  if (out.has_shape && !out.shape.empty() && out.shape.back() > 0) lm.num_outputs = out.shape.back();
  if (lm.spec.preprocess.resize_w <= 0)
    return invalid_argument(path + ": the model input " + shape_str(lm.spec.input_shape) +
                            " has no fixed size and no 'preprocess' resize is recorded; pass --resize W,H");
  return lm;
}

ProbMatrix to_probabilities(const std::vector<float>& outputs, int64_t n, OutputKind kind) {
  ProbMatrix pm;
  if (n < 1) return pm;
  const int64_t k = classes_of_outputs(n);
  pm.k = static_cast<int>(k);
  pm.independent = kind == OutputKind::kSigmoid && n > 1;
  const size_t rows = outputs.size() / static_cast<size_t>(n);
  pm.p.resize(rows * static_cast<size_t>(k));
  std::vector<float> tmp(static_cast<size_t>(k));
  for (size_t i = 0; i < rows; ++i) {
    class_probabilities(&outputs[i * n], n, kind, tmp.data());
    for (int64_t c = 0; c < k; ++c) pm.p[i * k + c] = tmp[c];
  }
  return pm;
}

Result<std::vector<std::string>> resolve_class_names(const LoadedModel& m, const Dataset& ds) {
  std::vector<std::string> names = m.spec.labels.empty() ? ds.label_values() : m.spec.labels;
  if (m.num_outputs > 0 && m.num_classes() != static_cast<int64_t>(names.size()))
    return invalid_argument(m.path + ": the model has " +
                            (m.num_outputs == 1 ? std::string("1 output (a binary head: 2 classes)")
                                                : std::to_string(m.num_outputs) + " outputs") +
                            " but " +
                            std::to_string(names.size()) + " labels (" +
                            (m.spec.labels.empty() ? "dataset label values: " : "metadata 'labels': ") + join(names) + ")");
  if (names.empty()) return invalid_argument(m.path + ": no class labels (model metadata 'labels' and dataset both empty)");
  return names;
}

Result<std::vector<int>> map_labels(const Dataset& ds, const std::vector<std::string>& class_names) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < class_names.size(); ++i) index[class_names[i]] = static_cast<int>(i);
  std::vector<int> y(ds.size());
  std::map<std::string, size_t> unknown;
  for (size_t i = 0; i < ds.size(); ++i) {
    auto it = index.find(ds.sample(i).label);
    if (it == index.end()) {
      unknown[ds.sample(i).label]++;
      continue;
    }
    y[i] = it->second;
  }
  if (!unknown.empty()) {
    std::vector<std::string> u;
    for (const auto& [l, n] : unknown) u.push_back("'" + l + "' (" + std::to_string(n) + " samples)");
    return invalid_argument("dataset labels not in the model's label list [" + join(class_names) + "]: " + join(u) +
                            " (check --label-column, currently '" + ds.spec().label_column + "')");
  }
  return y;
}

Result<std::vector<int>> parse_positive(const std::string& list, const std::vector<std::string>& class_names) {
  std::vector<int> r;
  std::vector<std::string> bad;
  for (const std::string& p : split_list(list)) {
    auto it = std::find(class_names.begin(), class_names.end(), p);
    if (it == class_names.end()) {
      bad.push_back(p);
      continue;
    }
    int c = static_cast<int>(it - class_names.begin());
    if (std::find(r.begin(), r.end(), c) == r.end()) r.push_back(c);
  }
  if (!bad.empty())
    return invalid_argument("--positive: unknown class(es) " + join(bad) + "; the model's classes are " +
                            join(class_names));
  if (r.empty()) return invalid_argument("--positive: no class given");
  if (r.size() == class_names.size()) return invalid_argument("--positive: every class is positive; no negative class left");
  return r;
}

Result<std::vector<std::string>> group_values(const Dataset& ds, const std::string& key) {
  std::vector<std::string> cols = ds.columns();
  if (std::find(cols.begin(), cols.end(), key) == cols.end())
    return invalid_argument("--groups: no column '" + key + "' in the dataset (available: " + join(cols) + ")");
  std::vector<std::string> v(ds.size());
  size_t empty = 0;
  for (size_t i = 0; i < ds.size(); ++i) {
    const Sample& s = ds.sample(i);
    if (key == "label") {
      v[i] = s.label;
    } else {
      auto it = s.attrs.find(key);
      v[i] = it == s.attrs.end() ? "" : it->second;
    }
    if (v[i].empty()) {
      v[i] = "(missing)";
      ++empty;
    }
  }
  if (!v.empty() && empty == v.size())
    return invalid_argument("--groups: column '" + key + "' is empty for every sample (no subgroup to analyse)");
  return v;
}

Status run_models(const std::vector<const LoadedModel*>& models, const Dataset& ds, const std::vector<size_t>& indices,
                  const PreprocessConfig& cfg, int batch, int k, bool progress,
                  std::vector<std::vector<float>>* logits) {
  logits->assign(models.size(), {});
  for (auto& l : *logits) l.reserve(indices.size() * k);
  BatchLoader loader(ds, indices, cfg, batch);
  ProgressOptions po;
  po.enabled = progress;
  Progress prog(models.size() > 1 ? "validate" : "eval", indices.size(), po);
  Batch b;
  size_t done = 0;
  while (loader.next(b)) {
    for (size_t mi = 0; mi < models.size(); ++mi) {
      const LoadedModel& m = *models[mi];
      auto out = m.session->run({b.x});
      if (!out.is_ok()) return out.status().with_context(m.path);
      Tensor y = out.value()[0];
      if (y.dtype() != DataType::kFloat32) y = y.cast(DataType::kFloat32);
      const int64_t nb = static_cast<int64_t>(b.indices.size());
      if (y.rank() < 1 || y.dim(0) != nb || y.numel() != nb * k)
        return invalid_argument(m.path + ": output 0 has shape " + shape_str(y.shape()) + ", expected [" +
                                std::to_string(nb) + ", " + std::to_string(k) + "] (one score per label)");
      const float* d = y.data<float>();
      (*logits)[mi].insert((*logits)[mi].end(), d, d + y.numel());
    }
    done += b.indices.size();
    prog.update(done);
  }
  RETURN_IF_ERROR(loader.status());
  prog.finish();
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4).

namespace {

struct Sha256 {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf[64];
  size_t len = 0;
  uint64_t total = 0;

  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const uint8_t* p) {
    static const uint32_t K[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      uint32_t ch = (e & f) ^ (~e & g);
      uint32_t t1 = hh + S1 + ch + K[i] + w[i];
      uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
      uint32_t t2 = S0 + mj;
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  void update(const uint8_t* p, size_t n) {
    total += n;
    while (n > 0) {
      size_t t = std::min(n, 64 - len);
      std::memcpy(buf + len, p, t);
      len += t, p += t, n -= t;
      if (len == 64) {
        block(buf);
        len = 0;
      }
    }
  }
  std::string hex() {
    uint64_t bits = total * 8;
    uint8_t pad = 0x80;
    update(&pad, 1);
    uint8_t zero = 0;
    while (len != 56) update(&zero, 1);
    uint8_t lb[8];
    for (int i = 0; i < 8; ++i) lb[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(lb, 8);
    static const char* hx = "0123456789abcdef";
    std::string s;
    for (uint32_t v : h)
      for (int i = 28; i >= 0; i -= 4) s += hx[(v >> i) & 15];
    return s;
  }
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 s;
  s.update(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return s.hex();
}

Result<std::string> sha256_file(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  return sha256_hex(bytes);
}

Result<std::string> dataset_sha256(const Dataset& ds) {
  std::string acc;
  if (ds.kind() != DatasetKind::kImageFolder) {
    ASSIGN_OR_RETURN(std::string h, sha256_file(ds.spec().path));
    acc += "source\t" + h + "\n";
  }
  acc += "split\t" + ds.spec().split + "\nlabel_column\t" + ds.spec().label_column + "\n";
  std::vector<std::pair<std::string, std::string>> lines;
  for (size_t i = 0; i < ds.size(); ++i) {
    const Sample& s = ds.sample(i);
    std::string h;
    if (!s.path.empty()) {
      ASSIGN_OR_RETURN(h, sha256_file(s.path));
    }
    lines.emplace_back(s.id, s.label + "\t" + h);
  }
  std::sort(lines.begin(), lines.end());
  for (const auto& [id, rest] : lines) acc += id + "\t" + rest + "\n";
  return sha256_hex(acc);
}

}  // namespace medq::eval
