// Shared helpers of the medq command-line tool: a tiny flag parser, model
// loading with one-line errors, and input loading (image/DICOM/.npy/.pb).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "data/model_spec.h"
#include "ir/graph.h"

namespace medq::cli {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;  // "--batch" -> "8"; boolean flags -> "1"
  bool has(const std::string& f) const { return flags.count(f) > 0; }
  std::string get(const std::string& f, const std::string& def = "") const {
    auto it = flags.find(f);
    return it == flags.end() ? def : it->second;
  }
  Result<int64_t> get_int(const std::string& f, int64_t def) const;
  Result<double> get_double(const std::string& f, double def) const;
};

// `value_flags` lists flags that take a value; every other --flag is boolean.
Result<Args> parse_args(int argc, char** argv, int start, const std::vector<std::string>& value_flags,
                        const std::vector<std::string>& bool_flags);

// Model input/output contract (src/data/model_spec.h): metadata_props, overridden by the
// flags of spec_override_flags() (--color --resize --interpolation --scale --mean --std --layout
// --outputs), inferred from the input shape / graph where neither gives a key.
SpecOverrides spec_overrides(const Args& a);
// Resolves the spec and prints the one-line assumption warning (unless --quiet).
Result<ModelSpec> model_spec_for(const Model& m, const Args& a, const std::string& path);
// value_flags + the spec override flags (for parse_args).
std::vector<std::string> with_spec_flags(std::vector<std::string> value_flags);
// Loads one input file (image, DICOM, .npy, .pb) as a tensor with a leading batch axis: an image
// is one row; a tensor without the batch axis gets one; a batched [N, ...] tensor stays N rows.
// Tensors are checked against the model input's static dims before anything runs.
Result<Tensor> load_input(const std::string& path, const ModelSpec& spec);
// Stacks tensors [n_i, ...] with equal trailing dims along the batch axis.
Result<Tensor> stack_batch(const std::vector<Tensor>& items);
int report_error(const Status& st);

int cmd_info(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_validate(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_preprocess(int argc, char** argv);
int cmd_annotate(int argc, char** argv);

}  // namespace medq::cli
