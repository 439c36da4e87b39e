#include "serve/handlers.h"

#include <random>

#include "serve/model.h"

namespace medq::serve {

using nlohmann::json;

int http_status_for(const Status& st) {
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
      return st.message().find("decompression bomb") != std::string::npos ? 413 : 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kUnsupported:
      return 415;
    default:
      return 500;
  }
}

Status check_upload(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) return invalid_argument("'" + name + "': empty upload");
  if (detect_image_format(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) == ImageFormat::kUnknown)
    return unsupported("'" + name + "': not a PNG, JPEG or DICOM image");
  return Status::ok();
}

Result<Image> decode_upload(const std::string& bytes, const std::string& name, int64_t max_pixels) {
  RETURN_IF_ERROR(check_upload(bytes, name));
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  DecodeLimits lim;
  lim.max_pixels = max_pixels;
  auto r = decode_image_bytes(p, bytes.size(), name, lim);
  if (!r.is_ok() && r.status().code() == StatusCode::kIoError)
    return invalid_argument(r.status().message());  // a corrupt upload is the client's problem
  return r;
}

namespace {

// Flattens nested arrays of numbers; false on a non-number or on nesting deeper than
// max_depth (a tensor's data is nested at most once per dimension: a body nested 100,000 levels
// deep overflowed the connection thread's stack).
bool flatten(const json& j, std::vector<float>* out, int64_t limit, int max_depth) {
  if (j.is_number()) {
    if (static_cast<int64_t>(out->size()) >= limit) return false;
    out->push_back(j.get<float>());
    return true;
  }
  if (!j.is_array() || max_depth <= 0) return false;
  for (const auto& e : j)
    if (!flatten(e, out, limit, max_depth - 1)) return false;
  return true;
}

}  // namespace

bool parse_infer_request(const std::string& body, const std::string& input_name, const Shape& row_shape,
                         int64_t max_rows, InferInput* out, ApiError* err) {
  auto fail = [&](const std::string& m) {
    err->http = 400;
    err->message = m;
    return false;
  };
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("request body is not a JSON object");
  if (j.contains("id")) {
    if (!j["id"].is_string()) return fail("'id' must be a string");
    out->id = j["id"].get<std::string>();
  }
  if (!j.contains("inputs") || !j["inputs"].is_array() || j["inputs"].size() != 1)
    return fail("'inputs' must be an array with exactly one tensor (model input '" + input_name + "')");
  const json& in = j["inputs"][0];
  if (!in.is_object()) return fail("inputs[0] must be an object");
  if (in.contains("name") && (!in["name"].is_string() || in["name"] != input_name))
    return fail("inputs[0].name must be '" + input_name + "'");
  if (!in.contains("datatype") || in["datatype"] != "FP32")
    return fail("inputs[0].datatype must be \"FP32\"");
  if (!in.contains("shape") || !in["shape"].is_array()) return fail("inputs[0].shape must be an array");
  Shape shape;
  for (const auto& d : in["shape"]) {
    if (!d.is_number_integer()) return fail("inputs[0].shape must hold integers");
    shape.push_back(d.get<int64_t>());
  }
  Shape want = row_shape;
  want.insert(want.begin(), -1);
  if (shape.size() != want.size()) return fail("inputs[0].shape " + shape_str(shape) + " must be " + shape_str(want));
  for (size_t i = 1; i < shape.size(); ++i)
    if (shape[i] != want[i]) return fail("inputs[0].shape " + shape_str(shape) + " must be " + shape_str(want));
  if (shape[0] < 1 || shape[0] > max_rows)
    return fail("inputs[0].shape[0] = " + std::to_string(shape[0]) + " must be in 1.." + std::to_string(max_rows));
  if (!in.contains("data")) return fail("inputs[0].data is missing");
  const int64_t n = shape_numel(shape);
  out->data.clear();
  out->data.reserve(static_cast<size_t>(n));
  if (!flatten(in["data"], &out->data, n, static_cast<int>(shape.size())) || static_cast<int64_t>(out->data.size()) != n)
    return fail("inputs[0].data must hold " + std::to_string(n) + " numbers (prod of shape " + shape_str(shape) + ")");
  out->rows = shape[0];
  return true;
}

json infer_response(const std::string& model, const std::string& id, const std::string& output_name,
                    const std::vector<float>& logits, int64_t rows, int64_t classes, const std::string& model_used) {
  json r = {{"model_name", model},
            {"model_version", "1"},
            {"outputs", json::array({{{"name", output_name},
                                      {"datatype", "FP32"},
                                      {"shape", {rows, classes}},
                                      {"data", logits}}})},
            {"parameters", {{"model_used", model_used}}}};
  if (!id.empty()) r["id"] = id;
  return r;
}

json prediction_json(const float* outputs, int64_t n, OutputKind kind, const std::vector<std::string>& labels) {
  std::vector<float> p = to_probabilities(outputs, n, kind);
  const int64_t classes = static_cast<int64_t>(p.size());
  std::vector<std::string> names;
  for (int64_t c = 0; c < classes; ++c)
    names.push_back(c < static_cast<int64_t>(labels.size()) ? labels[c] : "class_" + std::to_string(c));
  int64_t top = std::max_element(p.begin(), p.end()) - p.begin();
  json j = {{"labels", names},
            {"probabilities", p},
            {"outputs", std::vector<float>(outputs, outputs + n)},
            {"output_kind", output_kind_name(kind)},
            {"top_class", names[top]},
            {"top_index", top},
            {"top_probability", p[top]}};
  if (kind == OutputKind::kLogits) j["logits"] = j["outputs"];
  return j;
}

json error_json(int http, const std::string& message, const std::string& request_id) {
  return {{"error", message}, {"code", http}, {"request_id", request_id}};
}

std::string make_request_id(const std::string& v) {
  bool ok = !v.empty() && v.size() <= 64;
  for (char c : v)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) ok = false;
  if (ok) return v;
  thread_local std::mt19937_64 rng(std::random_device{}());
  char b[33];
  std::snprintf(b, sizeof b, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return b;
}

}  // namespace medq::serve
