// Running classifiers over an evaluation dataset: model loading with label/preprocess metadata,
// mapping dataset labels to the model's class indices, one streaming pass that runs one or more
// models on every batch, and SHA-256 hashes of the inputs for reports.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/dataset.h"
#include "data/model_spec.h"
#include "data/preprocess.h"
#include "eval/metrics.h"
#include "ir/graph.h"
#include "runtime/session.h"

namespace medq::eval {

struct LoadedModel {
  std::string path;
  Model model;
  std::unique_ptr<Session> session;
  ModelSpec spec;  // labels (may be empty), preprocessing, output semantics (metadata, flags, inferred)
  int64_t num_outputs = -1;         // static size of output 0's last axis, -1 if unknown
  // Classes the outputs describe (a single output: 2), -1 if unknown.
  int64_t num_classes() const { return num_outputs < 0 ? -1 : classes_of_outputs(num_outputs); }
  // Output values per sample for `classes` classes (a single-output binary head: 1).
  int output_width(size_t classes) const {
    return static_cast<int>(num_outputs > 0 ? num_outputs : static_cast<int64_t>(classes));
  }
};

// Loads and compiles a single-input classifier and resolves its spec (model_spec.h) with the
// command line's overrides; prints the assumption warning unless quiet.
Result<LoadedModel> load_classifier(const std::string& path, int num_threads, const SpecOverrides& overrides = {},
                                    bool quiet = false);

// Class probabilities of raw output rows (n values each) under the model's output semantics.
ProbMatrix to_probabilities(const std::vector<float>& outputs, int64_t n, OutputKind kind);

// Class names of the evaluation: the model's labels, or the dataset's label values when the
// model has none. Errors: a model whose output count differs from the label count; dataset
// labels missing from the model's list (all named).
Result<std::vector<std::string>> resolve_class_names(const LoadedModel& m, const Dataset& ds);
Result<std::vector<int>> map_labels(const Dataset& ds, const std::vector<std::string>& class_names);

// Indices of the positive classes named in a comma-separated list (error naming unknown ones).
Result<std::vector<int>> parse_positive(const std::string& list, const std::vector<std::string>& class_names);
std::vector<std::string> split_list(const std::string& s);

// Per-sample values of a grouping column ("label" = the label). Error if the column does not
// exist (naming the available ones) or is empty for every sample; empty values become "(missing)".
Result<std::vector<std::string>> group_values(const Dataset& ds, const std::string& key);

// Runs every model on each batch of `indices` (one decode pass). logits[m] receives
// indices.size() * k raw output values (row-major; k = the models' output count, which is the
// class count except for a single-output binary head). Errors name the model; an output whose
// per-sample size differs from k is an error.
Status run_models(const std::vector<const LoadedModel*>& models, const Dataset& ds, const std::vector<size_t>& indices,
                  const PreprocessConfig& cfg, int batch, int k, bool progress,
                  std::vector<std::vector<float>>* logits);

// Hex SHA-256 of bytes / of a file.
std::string sha256_hex(const std::string& bytes);
Result<std::string> sha256_file(const std::string& path);
// Hash of a dataset: of the manifest / npz file, or for an image folder of the sorted
// "id\tsha256(file)" lines.
Result<std::string> dataset_sha256(const Dataset& ds);

}  // namespace medq::eval
