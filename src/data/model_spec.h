// What a classifier expects and what its output means, resolved once for every command that
// reads images (run, eval, validate, quantize, preprocess, bench --images, serve, annotate).
//
// Sources, each overriding the one before:
//   1. the model itself: layout (NCHW / NHWC), channel count (1 -> colour "L", 3 -> "RGB") and
//      spatial size from the input shape; scale 1/255, no mean/std; output semantics from the
//      graph (the op producing output 0, looking through Identity/Reshape/Flatten/Squeeze/Cast/
//      Q/DQ: Softmax -> probabilities, Sigmoid -> independent sigmoid probabilities, anything
//      else -> logits);
//   2. metadata_props: "preprocess" (JSON object, keys of PreprocessConfig), "labels" (JSON list
//      of strings), "outputs" ("logits" | "probabilities" | "sigmoid");
//   3. the command line: --color --resize --interpolation --scale --mean --std --layout
//      --outputs (SpecOverrides).
// A key given at one level never drags in another level's default of a different channel count:
// mean/std default to one broadcast value.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/preprocess.h"
#include "ir/graph.h"

namespace medq {

enum class OutputKind { kLogits, kProbabilities, kSigmoid };
const char* output_kind_name(OutputKind k);
Result<OutputKind> parse_output_kind(const std::string& s);  // error names the accepted values

// Command-line overrides: key (color, resize, interpolation, scale, mean, std, layout, outputs)
// -> the flag's text as given (resize "W,H" or "S"; mean/std comma-separated).
using SpecOverrides = std::map<std::string, std::string>;
// The flag names (with "--") every image-reading command accepts, in SpecOverrides key order.
const std::vector<std::string>& spec_override_flags();
// One usage block describing them (for --help texts).
const char* spec_override_usage();

struct ModelSpec {
  std::string model_path;  // for messages
  Shape input_shape;       // of input 0 (-1 where symbolic)
  PreprocessConfig preprocess;
  std::vector<std::string> assumed;  // preprocess keys inferred (no metadata, no flag)
  bool has_preprocess_metadata = false;
  std::vector<std::string> labels;  // may be empty
  OutputKind outputs = OutputKind::kLogits;
  std::string outputs_source;     // "graph (Softmax)", "metadata", "--outputs", ...
  int64_t num_outputs = -1;       // static last-axis size of output 0, -1 if unknown
  // Why images cannot be fed to this model (its input has, e.g., 4 or 12 channels and no colour
  // was given); empty for image models. Tensor inputs (.npy, .pb) still run.
  std::string not_image;
  Status require_image_input() const { return not_image.empty() ? Status::ok() : invalid_argument(not_image); }

  // Classes the outputs describe: a single output is binary (negative, positive).
  int64_t num_classes() const { return num_outputs == 1 ? 2 : num_outputs; }
  int channels() const { return preprocess.color == "L" ? 1 : 3; }
  // The preprocessing as the metadata JSON object (every key written).
  std::string preprocess_json() const;
  // One line naming what was assumed and how to record it; empty when nothing was.
  std::string assumption_warning() const;
  // Prints assumption_warning() to stderr (once per process per model path) unless quiet.
  void warn_assumptions(bool quiet = false) const;
};

// Resolves the spec of `m` (its graph must have at least one input). Errors: malformed metadata
// (naming the key), a flag value that does not parse (naming the flag), a colour whose channel
// count or a layout/resize that contradicts a static input shape (naming the flag that fixes it),
// an unknown spatial size with no --resize.
// strict = false (medq preprocess, which writes inputs for other runtimes): the flags may
// contradict the input shape (e.g. NHWC rows for an NCHW model); the size then comes from the
// shape in its inferred layout.
Result<ModelSpec> resolve_model_spec(const Model& m, const SpecOverrides& overrides, const std::string& path = "",
                                     bool strict = true);

// Output semantics from the graph alone (see the top of the file); *why names the op.
OutputKind infer_output_kind(const Graph& g, std::string* why = nullptr);

// Class probabilities of one output row of n values (num_classes(n) values at out): logits ->
// softmax (a single logit -> sigmoid); probabilities / sigmoid -> as they are; a single
// probability p -> [1 - p, p].
void class_probabilities(const float* row, int64_t n, OutputKind kind, float* out);
inline int64_t classes_of_outputs(int64_t n) { return n == 1 ? 2 : n; }

// Writes labels / preprocess / outputs of `spec` into m's metadata_props (labels only when
// non-empty).
void record_spec(const ModelSpec& spec, Model* m);

}  // namespace medq
