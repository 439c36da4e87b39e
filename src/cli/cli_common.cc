#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cli/cli.h"
#include "core/npy.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "onnx/model_io.h"

namespace medq::cli {

Result<int64_t> Args::get_int(const std::string& f, int64_t def) const {
  auto it = flags.find(f);
  if (it == flags.end()) return def;
  try {
    size_t pos = 0;
    long long v = std::stoll(it->second, &pos);
    if (pos != it->second.size()) throw std::invalid_argument("x");
    return static_cast<int64_t>(v);
  } catch (...) {
    return invalid_argument(f + ": expected an integer, got '" + it->second + "'");
  }
}

Result<double> Args::get_double(const std::string& f, double def) const {
  auto it = flags.find(f);
  if (it == flags.end()) return def;
  try {
    size_t pos = 0;
    double v = std::stod(it->second, &pos);
    if (pos != it->second.size()) throw std::invalid_argument("x");
    return v;
  } catch (...) {
    return invalid_argument(f + ": expected a number, got '" + it->second + "'");
  }
}

Result<Args> parse_args(int argc, char** argv, int start, const std::vector<std::string>& value_flags,
                        const std::vector<std::string>& bool_flags) {
  Args a;
  for (int i = start; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0 && s.size() > 2) {
      std::string name = s, val;
      auto eq = s.find('=');
      if (eq != std::string::npos) {
        name = s.substr(0, eq);
        val = s.substr(eq + 1);
      }
      bool takes_value = std::find(value_flags.begin(), value_flags.end(), name) != value_flags.end();
      bool is_bool = std::find(bool_flags.begin(), bool_flags.end(), name) != bool_flags.end();
      if (!takes_value && !is_bool) return invalid_argument("unknown flag '" + name + "'");
      if (takes_value && eq == std::string::npos) {
        if (i + 1 >= argc) return invalid_argument("flag '" + name + "' needs a value");
        val = argv[++i];
      }
      a.flags[name] = takes_value ? val : "1";
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

int report_error(const Status& st) {
  std::fprintf(stderr, "medq: error: %s\n", st.message().c_str());
  return st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound ? 2 : 1;
}

std::vector<std::string> model_labels(const Model& m) {
  std::vector<std::string> r;
  std::string s = m.meta("labels");
  if (s.empty()) return r;
  auto j = nlohmann::json::parse(s, nullptr, false);
  if (j.is_array())
    for (const auto& e : j)
      if (e.is_string()) r.push_back(e.get<std::string>());
  return r;
}

Result<std::string> preprocess_json_for(const Model& m, const Args& a) {
  nlohmann::json cfg = nlohmann::json::object();
  std::string meta = m.meta("preprocess");
  if (!meta.empty()) {
    cfg = nlohmann::json::parse(meta, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      return invalid_argument("model metadata 'preprocess' is not a JSON object");
  }
  auto floats = [](const std::string& s) {
    std::vector<float> v;
    size_t p = 0;
    while (p < s.size()) {
      size_t e = s.find(',', p);
      if (e == std::string::npos) e = s.size();
      v.push_back(std::stof(s.substr(p, e - p)));
      p = e + 1;
    }
    return v;
  };
  try {
    if (a.has("--color")) cfg["color"] = a.get("--color");
    if (a.has("--resize")) {
      auto v = floats(a.get("--resize"));
      if (v.size() == 1) v.push_back(v[0]);
      if (v.size() != 2) return invalid_argument("--resize: expected W,H");
      cfg["resize"] = {static_cast<int>(v[0]), static_cast<int>(v[1])};
    }
    if (a.has("--interpolation")) cfg["interpolation"] = a.get("--interpolation");
    if (a.has("--scale")) cfg["scale"] = std::stod(a.get("--scale"));
    if (a.has("--mean")) cfg["mean"] = floats(a.get("--mean"));
    if (a.has("--std")) cfg["std"] = floats(a.get("--std"));
    if (a.has("--layout")) cfg["layout"] = a.get("--layout");
  } catch (const std::exception&) {
    return invalid_argument("malformed preprocessing flag value");
  }
  return cfg.dump();
}

static bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && std::equal(suf.rbegin(), suf.rend(), s.rbegin(), [](char a, char b) {
           return std::tolower(a) == std::tolower(b);
         });
}

Result<Tensor> load_input(const std::string& path, const std::string& preprocess_json, const Shape& in_shape) {
  if (ends_with(path, ".npy")) {
    ASSIGN_OR_RETURN(Tensor t, load_npy(path));
    if (t.rank() + 1 == static_cast<int>(in_shape.size())) {
      Shape s = t.shape();
      s.insert(s.begin(), 1);
      t = t.reshaped(s);
    }
    return t;
  }
  if (ends_with(path, ".pb")) {
    ASSIGN_OR_RETURN(Tensor t, load_tensor_pb(path));
    return t;
  }
  ASSIGN_OR_RETURN(Image img, decode_image_file(path));
  ASSIGN_OR_RETURN(PreprocessConfig cfg, parse_preprocess_json(preprocess_json));
  // Default resize: the model's static spatial size.
  if (cfg.resize_w <= 0 && in_shape.size() == 4) {
    bool nhwc = cfg.layout == "NHWC";
    cfg.resize_h = static_cast<int>(nhwc ? in_shape[1] : in_shape[2]);
    cfg.resize_w = static_cast<int>(nhwc ? in_shape[2] : in_shape[3]);
  }
  if (cfg.resize_w <= 0) return invalid_argument("'" + path + "': no resize size in the model metadata; pass --resize W,H");
  auto pre = preprocess_image(img, cfg);
  if (!pre.is_ok()) return pre.status().with_context("'" + path + "'");
  std::vector<float>& v = pre.value();
  int c = cfg.color == "L" ? 1 : 3;
  Shape s = cfg.layout == "NHWC" ? Shape{1, cfg.resize_h, cfg.resize_w, c} : Shape{1, c, cfg.resize_h, cfg.resize_w};
  return Tensor::from_vector(v, s);
}

Result<Tensor> stack_batch(const std::vector<Tensor>& items) {
  if (items.empty()) return invalid_argument("no inputs");
  const Tensor& f = items[0];
  Shape s = f.shape();
  if (s.empty() || s[0] != 1) s.insert(s.begin(), 1);
  for (const auto& t : items)
    if (t.shape() != f.shape() || t.dtype() != f.dtype())
      return invalid_argument("inputs differ in shape: " + f.desc() + " vs " + t.desc());
  int64_t per = f.numel();
  s[0] = static_cast<int64_t>(items.size()) * (f.shape().empty() || f.shape()[0] != 1 ? 1 : 1);
  if (!f.shape().empty() && f.shape()[0] == 1) s[0] = static_cast<int64_t>(items.size());
  Tensor out(f.dtype(), s);
  size_t bytes = f.nbytes();
  for (size_t i = 0; i < items.size(); ++i)
    std::memcpy(static_cast<uint8_t*>(out.raw()) + i * bytes, items[i].raw(), bytes);
  (void)per;
  return out;
}

}  // namespace medq::cli
