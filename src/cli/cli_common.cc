#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

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
  const bool has_output = std::find(value_flags.begin(), value_flags.end(), "--output") != value_flags.end();
  for (int i = start; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "-o" && has_output) s = "--output";  // -o is short for --output wherever that exists
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
  // Bad input: a malformed or missing file/flag, or one medq cannot handle (an unsupported DICOM
  // transfer syntax such as JPEG 2000, an op it lacks).
  return st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound ||
                 st.code() == StatusCode::kUnsupported
             ? 2
             : 1;
}

SpecOverrides spec_overrides(const Args& a) {
  SpecOverrides o;
  for (const std::string& f : spec_override_flags())
    if (a.has(f)) o[f.substr(2)] = a.get(f);
  return o;
}

Result<ModelSpec> model_spec_for(const Model& m, const Args& a, const std::string& path) {
  ASSIGN_OR_RETURN(ModelSpec s, resolve_model_spec(m, spec_overrides(a), path));
  s.warn_assumptions(a.has("--quiet"));
  return s;
}

std::vector<std::string> with_spec_flags(std::vector<std::string> value_flags) {
  for (const std::string& f : spec_override_flags())
    if (std::find(value_flags.begin(), value_flags.end(), f) == value_flags.end()) value_flags.push_back(f);
  return value_flags;
}

static bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && std::equal(suf.rbegin(), suf.rend(), s.rbegin(), [](char a, char b) {
           return std::tolower(a) == std::tolower(b);
         });
}

namespace {

// A tensor input against the model input's shape: a missing batch axis is added; every static
// non-batch dim must match (checked before anything runs).
Result<Tensor> check_tensor_input(Tensor t, const std::string& path, const Shape& in) {
  if (!in.empty() && t.rank() + 1 == static_cast<int>(in.size())) {
    Shape s = t.shape();
    s.insert(s.begin(), 1);
    t = t.reshaped(s);
  }
  if (!in.empty()) {
    bool ok = t.rank() == static_cast<int>(in.size());
    for (size_t i = 1; ok && i < in.size(); ++i) ok = in[i] < 0 || in[i] == t.dim(static_cast<int>(i));
    if (!ok)
      return invalid_argument("'" + path + "': tensor of shape " + shape_str(t.shape()) +
                              " does not fit the model input " + shape_str(in) +
                              " (expected [rows, ...] or one row without the batch axis)");
    if (in[0] > 0 && t.dim(0) != in[0] && t.dim(0) != 1)
      return invalid_argument("'" + path + "': tensor has " + std::to_string(t.dim(0)) + " rows but the model input " +
                              shape_str(in) + " has a fixed batch of " + std::to_string(in[0]));
  }
  if (t.rank() == 0 || t.dim(0) < 1) return invalid_argument("'" + path + "': empty tensor " + shape_str(t.shape()));
  return t;
}

}  // namespace

Result<Tensor> load_input(const std::string& path, const ModelSpec& spec) {
  if (ends_with(path, ".npy")) {
    ASSIGN_OR_RETURN(Tensor t, load_npy(path));
    return check_tensor_input(std::move(t), path, spec.input_shape);
  }
  if (ends_with(path, ".pb")) {
    ASSIGN_OR_RETURN(Tensor t, load_tensor_pb(path));
    return check_tensor_input(std::move(t), path, spec.input_shape);
  }
  RETURN_IF_ERROR(spec.require_image_input());
  ASSIGN_OR_RETURN(Image img, decode_image_file(path));
  PreprocessConfig cfg = spec.preprocess;
  if (cfg.resize_w <= 0)
    return invalid_argument("'" + path + "': the model input " + shape_str(spec.input_shape) +
                            " has no fixed size and no 'preprocess' resize is recorded; pass --resize W,H");
  auto pre = preprocess_image(img, cfg);
  if (!pre.is_ok()) return pre.status().with_context("'" + path + "'");
  std::vector<float>& v = pre.value();
  int c = spec.channels();
  Shape s = cfg.layout == "NHWC" ? Shape{1, cfg.resize_h, cfg.resize_w, c} : Shape{1, c, cfg.resize_h, cfg.resize_w};
  return Tensor::from_vector(v, s);
}

Result<Tensor> stack_batch(const std::vector<Tensor>& items) {
  if (items.empty()) return invalid_argument("no inputs");
  const Tensor& f = items[0];
  if (items.size() == 1) return f;
  Shape s = f.shape();
  int64_t rows = 0;
  for (const auto& t : items) {
    bool same = t.dtype() == f.dtype() && t.rank() == f.rank();
    for (int i = 1; same && i < f.rank(); ++i) same = t.dim(i) == f.dim(i);
    if (!same) return invalid_argument("inputs differ in shape: " + f.desc() + " vs " + t.desc());
    rows += t.dim(0);
  }
  s[0] = rows;
  Tensor out(f.dtype(), s);
  size_t off = 0;
  for (const auto& t : items) {
    std::memcpy(static_cast<uint8_t*>(out.raw()) + off, t.raw(), t.nbytes());
    off += t.nbytes();
  }
  return out;
}

}  // namespace medq::cli
