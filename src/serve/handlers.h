// Pure request/response helpers of `medq serve` (no sockets): upload decoding, KServe v2
// tensor parsing, response bodies and HTTP status mapping. Unit-testable without a server.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/model_spec.h"

#include "core/status.h"
#include "core/tensor.h"
#include "data/image.h"

namespace medq::serve {

// An error with the HTTP status to answer.
struct ApiError {
  int http = 500;
  std::string message;
};

// 400 for bad input, 413 for a decompression bomb / too many pixels, 415 for an unsupported
// image format, 404 for not found, 500 otherwise.
int http_status_for(const Status& st);

// The checks of an upload that need no decoding: not empty (400), a PNG, JPEG or DICOM by its
// first bytes (415). `name` only appears in error messages.
Status check_upload(const std::string& bytes, const std::string& name);

// Decodes an uploaded PNG/JPEG/DICOM (format sniffed from the bytes, not the name; check_upload
// first). `name` is the client's file name or "body" and only appears in error messages.
Result<Image> decode_upload(const std::string& bytes, const std::string& name, int64_t max_pixels);

// KServe v2 inference request -> rows of a [rows, C, H, W] float32 batch.
// Checks: exactly one input (named like the model input, or unnamed), datatype "FP32", shape of
// rank 4 equal to [rows, C, H, W] with 1 <= rows <= max_rows, data (flat or nested) with
// prod(shape) numbers.
struct InferInput {
  std::vector<float> data;
  int64_t rows = 0;
  std::string id;  // request "id" echoed back
};
bool parse_infer_request(const std::string& body, const std::string& input_name, const Shape& row_shape,
                         int64_t max_rows, InferInput* out, ApiError* err);

nlohmann::json infer_response(const std::string& model, const std::string& id, const std::string& output_name,
                              const std::vector<float>& logits, int64_t rows, int64_t classes,
                              const std::string& model_used);

// One image's prediction from its n output values: labels, "outputs" (the raw values),
// "output_kind", "probabilities" (class probabilities under the model's output semantics: softmax
// of logits, sigmoid outputs as they are, a single output as [1 - p, p]), top class; "logits"
// only when the outputs are logits.
nlohmann::json prediction_json(const float* outputs, int64_t n, OutputKind kind, const std::vector<std::string>& labels);

nlohmann::json error_json(int http, const std::string& message, const std::string& request_id);

// A request id from the client's X-Request-Id when it is safe to echo (1-64 of [A-Za-z0-9._-]),
// otherwise a fresh random 128-bit hex id.
std::string make_request_id(const std::string& client_value);

}  // namespace medq::serve
