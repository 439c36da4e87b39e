#include "data/model_spec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

namespace medq {

namespace {

using nlohmann::json;

const char* kKeys[] = {"color", "resize", "interpolation", "scale", "mean", "std", "layout", "outputs"};

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::string shape_text(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + (s[i] < 0 ? std::string("N") : std::to_string(s[i]));
  return r + "]";
}

Result<std::vector<float>> parse_floats(const std::string& flag, const std::string& s) {
  std::vector<float> v;
  size_t p = 0;
  while (p <= s.size()) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    std::string t = s.substr(p, e - p);
    try {
      size_t used = 0;
      float f = std::stof(t, &used);
      while (used < t.size() && t[used] == ' ') ++used;
      if (used != t.size()) throw std::invalid_argument(t);
      v.push_back(f);
    } catch (...) {
      return invalid_argument("--" + flag + ": expected comma-separated numbers, got '" + s + "'");
    }
    p = e + 1;
  }
  return v;
}

Result<double> parse_number(const std::string& flag, const std::string& s) {
  // Also "1/255".
  auto slash = s.find('/');
  try {
    size_t used = 0;
    if (slash != std::string::npos) {
      double a = std::stod(s.substr(0, slash), &used);
      if (used != slash) throw std::invalid_argument(s);
      std::string den = s.substr(slash + 1);
      double b = std::stod(den, &used);
      if (used != den.size() || b == 0) throw std::invalid_argument(s);
      return a / b;
    }
    double v = std::stod(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (...) {
    return invalid_argument("--" + flag + ": expected a number (or a fraction like 1/255), got '" + s + "'");
  }
}

// Position of the channel axis of a rank-4 input in `layout`.
int channel_axis(const std::string& layout) { return layout == "NHWC" ? 3 : 1; }

bool image_channels(int64_t c) { return c == 1 || c == 3; }

}  // namespace

const char* output_kind_name(OutputKind k) {
  switch (k) {
    case OutputKind::kLogits: return "logits";
    case OutputKind::kProbabilities: return "probabilities";
    case OutputKind::kSigmoid: return "sigmoid";
  }
  return "logits";
}

Result<OutputKind> parse_output_kind(const std::string& s) {
  if (s == "logits") return OutputKind::kLogits;
  if (s == "probabilities" || s == "softmax") return OutputKind::kProbabilities;
  if (s == "sigmoid") return OutputKind::kSigmoid;
  return invalid_argument("outputs: expected logits, probabilities or sigmoid, got '" + s + "'");
}

const std::vector<std::string>& spec_override_flags() {
  static const std::vector<std::string> f = [] {
    std::vector<std::string> r;
    for (const char* k : kKeys) r.push_back(std::string("--") + k);
    return r;
  }();
  return f;
}

const char* spec_override_usage() {
  return "  model input overrides (default: the model's metadata_props, else inferred from its\n"
         "  input shape: layout, channels -> colour L/RGB, size; scale 1/255, no mean/std):\n"
         "  --color RGB|L  --resize W,H  --interpolation bilinear|nearest|bicubic|lanczos|box|hamming\n"
         "  --scale S  --mean a[,b,c]  --std a[,b,c]  --layout NCHW|NHWC\n"
         "  --outputs logits|probabilities|sigmoid   what output 0 holds (default: metadata 'outputs',\n"
         "                     else the graph's last op: Softmax, Sigmoid, anything else = logits)\n";
}

OutputKind infer_output_kind(const Graph& g, std::string* why) {
  static const std::set<std::string> pass = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast",
                                             "QuantizeLinear", "DequantizeLinear", "Dropout"};
  if (g.outputs.empty()) {
    if (why) *why = "no output";
    return OutputKind::kLogits;
  }
  uint32_t v = g.outputs[0];
  for (int steps = 0; steps < 16 && v != kNoValue; ++steps) {
    const uint32_t p = g.value(v).producer;
    if (p == kNoNode || p >= g.nodes.size()) break;
    const Node& n = g.nodes[p];
    if (n.domain.empty() || n.domain == "ai.onnx") {
      if (n.op_type == "Softmax") {
        if (why) *why = "graph (" + n.label() + ")";
        return OutputKind::kProbabilities;
      }
      if (n.op_type == "Sigmoid") {
        if (why) *why = "graph (" + n.label() + ")";
        return OutputKind::kSigmoid;
      }
      if (pass.count(n.op_type) && !n.inputs.empty()) {
        v = n.inputs[0];
        continue;
      }
      if (why) *why = "graph (" + n.label() + ")";
      return OutputKind::kLogits;
    }
    break;
  }
  if (why) *why = "graph";
  return OutputKind::kLogits;
}

void class_probabilities(const float* row, int64_t n, OutputKind kind, float* out) {
  if (n == 1) {
    double p = kind == OutputKind::kLogits ? 1.0 / (1.0 + std::exp(-static_cast<double>(row[0]))) : row[0];
    out[0] = static_cast<float>(1.0 - p);
    out[1] = static_cast<float>(p);
    return;
  }
  if (kind != OutputKind::kLogits) {
    std::copy(row, row + n, out);
    return;
  }
  float mx = *std::max_element(row, row + n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += (out[i] = std::exp(row[i] - mx));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(out[i] / s);
}

std::string ModelSpec::preprocess_json() const {
  json j;
  j["color"] = preprocess.color;
  if (preprocess.resize_w > 0) j["resize"] = {preprocess.resize_w, preprocess.resize_h};
  j["interpolation"] = preprocess.interpolation;
  j["scale"] = preprocess.scale;
  j["mean"] = preprocess.mean;
  j["std"] = preprocess.std;
  j["layout"] = preprocess.layout;
  return j.dump();
}

std::string ModelSpec::assumption_warning() const {
  if (has_preprocess_metadata || assumed.empty() || !not_image.empty()) return "";
  auto has = [&](const char* k) { return std::find(assumed.begin(), assumed.end(), k) != assumed.end(); };
  std::vector<std::string> what;
  if (has("layout")) what.push_back(preprocess.layout);
  if (has("color")) what.push_back("colour " + preprocess.color);
  if (has("resize") && preprocess.resize_w > 0)
    what.push_back(std::to_string(preprocess.resize_w) + "x" + std::to_string(preprocess.resize_h));
  if (has("interpolation")) what.push_back(preprocess.interpolation);
  if (has("scale")) what.push_back(std::fabs(preprocess.scale - 1.f / 255) < 1e-9 ? "x/255" : "scale " + std::to_string(preprocess.scale));
  if (has("mean") && has("std")) what.push_back("no mean/std");
  else if (has("mean")) what.push_back("no mean");
  else if (has("std")) what.push_back("no std");
  return "medq: warning: '" + model_path + "' has no 'preprocess' metadata; assumed from its input " +
         shape_text(input_shape) + ": " + join(what) + "; outputs " + output_kind_name(outputs) + " (" +
         outputs_source + "). If wrong, pass --color/--resize/--scale/--mean/--std/--layout; record the right values " +
         "once with `medq annotate " + model_path + " --labels ... -o OUT.onnx`";
}

void ModelSpec::warn_assumptions(bool quiet) const {
  if (quiet) return;
  static std::mutex mu;
  static std::set<std::string> warned;
  std::string w = assumption_warning();
  if (w.empty()) return;
  std::lock_guard<std::mutex> lk(mu);
  if (!warned.insert(model_path).second) return;
  std::fprintf(stderr, "%s\n", w.c_str());
}

Result<ModelSpec> resolve_model_spec(const Model& m, const SpecOverrides& ov, const std::string& path_in, bool strict) {
  ModelSpec s;
  s.model_path = path_in.empty() ? m.source_path : path_in;
  const std::string where = "'" + s.model_path + "'";
  const Graph& g = m.graph;
  if (g.inputs.empty()) return invalid_argument(where + ": the model has no input");
  for (const auto& [k, v] : ov)
    if (std::find(std::begin(kKeys), std::end(kKeys), k) == std::end(kKeys))
      return invalid_argument("unknown model input override '" + k + "'");
  s.input_shape = g.value(g.inputs[0]).shape;
  const Shape& in = s.input_shape;
  const bool rank4 = in.size() == 4;

  // Labels.
  std::string lj = m.meta("labels");
  if (!lj.empty()) {
    auto j = json::parse(lj, nullptr, false);
    if (j.is_discarded() || !j.is_array()) return invalid_argument(where + ": metadata 'labels' is not a JSON list of strings");
    for (const auto& e : j) {
      if (!e.is_string()) return invalid_argument(where + ": metadata 'labels' is not a JSON list of strings");
      s.labels.push_back(e.get<std::string>());
    }
  }
  if (!g.outputs.empty()) {
    const Value& o = g.value(g.outputs[0]);
    if (o.has_shape && !o.shape.empty() && o.shape.back() > 0) s.num_outputs = o.shape.back();
  }

  // Output semantics.
  s.outputs = infer_output_kind(g, &s.outputs_source);
  std::string om = m.meta("outputs");
  if (!om.empty()) {
    auto k = parse_output_kind(om);
    if (!k.is_ok()) return invalid_argument(where + ": metadata " + k.status().message());
    s.outputs = k.value();
    s.outputs_source = "metadata 'outputs'";
  }
  if (ov.count("outputs")) {
    auto k = parse_output_kind(ov.at("outputs"));
    if (!k.is_ok()) return invalid_argument("--" + k.status().message());
    s.outputs = k.value();
    s.outputs_source = "--outputs";
  }

  // Preprocessing: metadata keys.
  std::set<std::string> given;  // keys from metadata or flags
  std::map<std::string, std::string> source;
  json cfg = json::object();
  std::string pm = m.meta("preprocess");
  if (!pm.empty()) {
    cfg = json::parse(pm, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object()) return invalid_argument(where + ": metadata 'preprocess' is not a JSON object");
    s.has_preprocess_metadata = true;
    for (auto it = cfg.begin(); it != cfg.end(); ++it) {
      given.insert(it.key());
      source[it.key()] = "metadata 'preprocess'";
    }
  }
  // Flags.
  for (const auto& [k, v] : ov) {
    if (k == "outputs") continue;
    if (k == "color" || k == "interpolation" || k == "layout") {
      cfg[k] = v;
    } else if (k == "resize") {
      ASSIGN_OR_RETURN(std::vector<float> r, parse_floats("resize", v));
      if (r.size() == 1) r.push_back(r[0]);
      if (r.size() != 2 || r[0] < 1 || r[1] < 1 || r[0] != std::floor(r[0]) || r[1] != std::floor(r[1]))
        return invalid_argument("--resize: expected W,H (positive integers), got '" + v + "'");
      cfg[k] = {static_cast<int>(r[0]), static_cast<int>(r[1])};
    } else if (k == "scale") {
      ASSIGN_OR_RETURN(double d, parse_number("scale", v));
      cfg[k] = d;
    } else {  // mean, std
      ASSIGN_OR_RETURN(std::vector<float> f, parse_floats(k, v));
      cfg[k] = f;
    }
    given.insert(k);
    source[k] = "--" + k;
  }

  // Defaults from the input shape (only where neither metadata nor a flag gave the key).
  const std::string shape_layout = rank4 && image_channels(in[3]) && !image_channels(in[1]) ? "NHWC" : "NCHW";
  if (!given.count("layout")) {
    cfg["layout"] = shape_layout;
    s.assumed.push_back("layout");
  }
  const std::string layout = cfg["layout"].is_string() ? cfg["layout"].get<std::string>() : "NCHW";
  const std::string read_layout = strict ? layout : shape_layout;  // how the shape is read
  const int64_t in_c = rank4 && (read_layout == "NCHW" || read_layout == "NHWC") ? in[channel_axis(read_layout)] : -1;
  if (!given.count("color")) {
    if (in_c > 0 && !image_channels(in_c))
      s.not_image = where + ": input " + shape_text(in) + " (" + layout + ", " +
                    (given.count("layout") ? "from " + source["layout"] : std::string("inferred")) + ") has " +
                    std::to_string(in_c) + " channels; medq reads images as 1 (L) or 3 (RGB) channels" +
                    (given.count("layout") ? "" : " (if the layout is wrong, pass --layout NCHW|NHWC)") +
                    "; tensors (.npy, .pb) can still be run";
    cfg["color"] = in_c == 1 ? "L" : "RGB";
    s.assumed.push_back("color");
  }
  if (!given.count("scale")) {
    cfg["scale"] = 1.0 / 255;
    s.assumed.push_back("scale");
  }
  if (!given.count("mean")) {
    cfg["mean"] = {0.0};
    s.assumed.push_back("mean");
  }
  if (!given.count("std")) {
    cfg["std"] = {1.0};
    s.assumed.push_back("std");
  }
  if (!given.count("interpolation")) s.assumed.push_back("interpolation");
  if (!given.count("resize")) s.assumed.push_back("resize");

  auto pc = parse_preprocess_json(cfg.dump());
  if (!pc.is_ok()) {
    std::string msg = pc.status().message();
    for (const char* k : {"mean", "std"})
      if (msg.find(std::string("'") + k + "' has") != std::string::npos)
        return invalid_argument(where + ": " + msg + " (" + k + " from " + source[k] + ", color from " +
                                (source.count("color") ? source["color"] : "the input shape") + "); pass --" + k +
                                " with " + (cfg["color"] == "L" ? "1 value" : "1 or 3 values"));
    auto src = [&](const std::string& k) { return source.count(k) ? source[k] : std::string("defaults"); };
    for (const char* k : kKeys)
      if (msg.find(std::string("'") + k + "'") != std::string::npos)
        return invalid_argument(where + ": " + msg + " (from " + src(k) + ")");
    return pc.status().with_context(where);
  }
  s.preprocess = pc.value();
  {
    PreprocessConfig sized = s.preprocess;
    sized.layout = read_layout;
    default_resize_to_input(&sized, in);
    s.preprocess.resize_w = sized.resize_w;
    s.preprocess.resize_h = sized.resize_h;
  }

  // Consistency with a static input shape.
  if (rank4 && strict && s.not_image.empty()) {
    const int ax = channel_axis(s.preprocess.layout);
    const int64_t c = in[ax];
    if (c > 0 && c != s.channels()) {
      const int other = channel_axis(s.preprocess.layout == "NHWC" ? "NCHW" : "NHWC");
      std::string fix = "pass --color " + std::string(c == 1 ? "L" : "RGB");
      if (!image_channels(c) && image_channels(in[other]))
        fix = "pass --layout " + std::string(s.preprocess.layout == "NHWC" ? "NCHW" : "NHWC");
      return invalid_argument(where + ": colour '" + s.preprocess.color + "' (" +
                              (source.count("color") ? source["color"] : "default") + ") gives " +
                              std::to_string(s.channels()) + " channel(s) but the input " + shape_text(in) + " (" +
                              s.preprocess.layout + ") has " + std::to_string(c) + "; " + fix);
    }
    const int64_t h = s.preprocess.layout == "NHWC" ? in[1] : in[2], w = s.preprocess.layout == "NHWC" ? in[2] : in[3];
    if (s.preprocess.resize_w > 0 && ((w > 0 && w != s.preprocess.resize_w) || (h > 0 && h != s.preprocess.resize_h)))
      return invalid_argument(where + ": resize " + std::to_string(s.preprocess.resize_w) + "x" +
                              std::to_string(s.preprocess.resize_h) + " (" +
                              (source.count("resize") ? source["resize"] : "default") + ") does not match the input " +
                              shape_text(in) + " (" + s.preprocess.layout + ", " + std::to_string(w) + "x" +
                              std::to_string(h) + "); pass --resize " + std::to_string(w) + "," + std::to_string(h));
  }
  return s;
}

void record_spec(const ModelSpec& spec, Model* m) {
  if (!spec.labels.empty()) m->set_meta("labels", json(spec.labels).dump());
  m->set_meta("preprocess", spec.preprocess_json());
  m->set_meta("outputs", output_kind_name(spec.outputs));
}

}  // namespace medq
