// ONNX protobuf <-> medq IR. Loading runs the ONNX checker and shape inference,
// resolves external data (relative to the model's folder; locations that escape
// it are rejected) and keeps metadata_props. Models outside opsets
// kMinOpset..kMaxOpset and unknown default-domain ops (all listed in one error)
// are rejected before the checker runs; saving writes a standard ONNX file via temp file + rename.
#pragma once

#include <string>

#include "core/fileio.h"  // write_file_atomic, read_file
#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"

namespace onnx {
class TensorProto;
class ModelProto;
}  // namespace onnx

namespace medq {

// Default-domain (ai.onnx) opsets medq loads; others are rejected with kUnsupported.
// Opset 6 is accepted: its ops differ from opset 7 only by legacy attributes, which the
// loader checks (see check_legacy_attributes in model_io.cc).
constexpr int64_t kMinOpset = 6;
constexpr int64_t kMaxOpset = 18;

struct LoadOptions {
  bool run_checker = true;
  bool infer_shapes = true;
};

Result<Model> load_model(const std::string& path, const LoadOptions& opts = {});
Result<Model> load_model_from_bytes(const std::string& bytes, const std::string& name, const LoadOptions& opts = {});
Status save_model(const Model& model, const std::string& path);
// Copies the ONNX file `in` to `out` with metadata_props entries set (same keys replaced, others
// kept), everything else byte-for-byte as parsed (no IR round trip), written atomically. A model
// with external data may only be written into its own folder (the locations are relative).
Status save_with_metadata(const std::string& in, const std::vector<std::pair<std::string, std::string>>& meta,
                          const std::string& out);

// TensorProto conversion. `base_dir` resolves external data.
Result<Tensor> tensor_from_proto(const onnx::TensorProto& tp, const std::string& base_dir);
void tensor_to_proto(const Tensor& t, const std::string& name, onnx::TensorProto* tp);
// A serialized TensorProto file (.pb), as in the ONNX backend test data.
Result<Tensor> load_tensor_pb(const std::string& path, std::string* name = nullptr);
Status save_tensor_pb(const Tensor& t, const std::string& name, const std::string& path);

// IR <-> proto (exposed for tests and tools).
Result<Model> model_from_proto(onnx::ModelProto& mp, const std::string& base_dir, const std::string& name,
                               const LoadOptions& opts);
void model_to_proto(const Model& m, onnx::ModelProto* mp);

// Writes bytes to `path` atomically (temp file in the same folder, then rename).

}  // namespace medq
