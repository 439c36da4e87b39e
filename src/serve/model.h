// Model bundles of `medq serve` and the compressed/fp32 selection.
//
// Bundle layout (one sub-directory per served model; the directory name is the model name):
//   MODEL_DIR/<name>/fp32.onnx    required: the reference model (fallback)
//   MODEL_DIR/<name>/model.onnx   optional: the compressed (e.g. int8) model
//   MODEL_DIR/<name>/report.json  optional: `medq validate --reference fp32.onnx --candidate
//                                 model.onnx` report; gate.verdict must be "APPROVED" and
//                                 models.candidate.sha256 must match model.onnx
// Labels, preprocessing and output semantics come from the fp32 model's metadata_props
// ("labels", "preprocess", "outputs"), overridden by the config's spec_overrides and inferred
// from the input shape where neither says (as in `medq run`).
#pragma once

#include "core/cpu.h"  // cpu_has_vnni: int8 selection
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "data/image.h"
#include "data/model_spec.h"
#include "data/preprocess.h"
#include "runtime/session.h"
#include "serve/config.h"
#include "serve/metrics.h"

namespace medq::serve {


struct RunOutput {
  Tensor logits;            // [rows, classes] float32
  std::string model_used;   // "compressed" | "fp32"
  bool fallback = false;    // the compressed run failed and fp32 answered
};

class ServedModel {
 public:
  // Loads DIR (one bundle), compiles the sessions and warms them up (batch 1 and max_batch).
  static Result<std::shared_ptr<ServedModel>> load(const std::string& name, const std::string& dir,
                                                   const ServeConfig& cfg, Metrics* metrics);

  const std::string& name() const { return name_; }
  const std::vector<std::string>& labels() const { return labels_; }
  const Shape& input_shape() const { return input_shape_; }  // [-1 or N, C, H, W] or [N, H, W, C] as in fp32.onnx
  const ModelSpec& spec() const { return spec_; }  // preprocessing, output semantics
  const std::string& input_name() const { return input_name_; }
  const std::string& output_name() const { return output_name_; }
  int64_t num_classes() const { return num_classes_; }  // values per row of output 0
  bool has_compressed() const { return compressed_ != nullptr; }
  std::string active() const { return use_compressed_.load() ? "compressed" : "fp32"; }
  std::string selection_reason() const {
    std::lock_guard<std::mutex> lk(reason_mu_);
    return reason_;
  }

  // Floats in one input row: C*H*W (the batch dimension may be symbolic).
  int64_t row_elems() const {
    int64_t n = 1;
    for (size_t i = 1; i < input_shape_.size(); ++i) n *= input_shape_[i];
    return n;
  }
  // OpenMP threads of the model's sessions (config `threads`, 0 resolved to the CPUs available).
  int threads() const { return fp32_->num_threads(); }
  // Decoded image -> one input row (row_elems() floats written at dst), with the model's
  // preprocessing.
  Status preprocess_into(const Image& img, float* dst) const;
  // Runs a [rows, ...input row shape] batch with fallback and shadow validation. Thread-safe; the batcher
  // calls it from one thread per model.
  Result<RunOutput> run(const Tensor& x);

 private:
  static Result<std::shared_ptr<ServedModel>> load_here(const std::string& name, const std::string& dir,
                                                        const ServeConfig& cfg, Metrics* metrics);
  void record_shadow(const Tensor& a, const Tensor& b);
  void switch_to_fp32(const std::string& why);

  std::string name_, reason_;
  ServeConfig cfg_;
  Metrics* metrics_ = nullptr;
  std::unique_ptr<Session> fp32_, compressed_;
  std::vector<std::string> labels_;
  PreprocessConfig pre_;
  ModelSpec spec_;
  Shape input_shape_;
  std::string input_name_, output_name_;
  int64_t num_classes_ = 0;
  std::atomic<bool> use_compressed_{false};
  mutable std::mutex reason_mu_;  // reason_ changes on a switch
  std::mutex shadow_mu_;
  double shadow_acc_ = 0;          // fraction accumulator: deterministic sampling
  std::deque<bool> shadow_window_;
  int shadow_disagree_ = 0;
};

// Sub-directories of model_dir that hold fp32.onnx, sorted.
Result<std::vector<std::string>> list_bundles(const std::string& model_dir);

// Class probabilities of one output row under the model's output semantics (model_spec.h).
std::vector<float> to_probabilities(const float* row, int64_t n, OutputKind kind);
// Predicted class of one output row.
int64_t predicted_class(const float* row, int64_t n, OutputKind kind);

}  // namespace medq::serve
