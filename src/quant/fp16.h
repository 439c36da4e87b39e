// float32 -> float16 model conversion (standard ONNX, like onnxconverter-common's
// convert_float_to_float16): float32 initializers become float16 and nodes compute
// in float16; a block list of numerically fragile ops stays float32 with Cast nodes
// around it; with keep_io_types the graph inputs/outputs stay float32 (Cast after
// each input and before each output, output names unchanged).
//
// Initializer values beyond the float16 range are clamped to +-65504 (never Inf);
// the converted initializers are verified free of NaN/Inf.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "ir/graph.h"

namespace medq {

struct Fp16Options {
  bool keep_io_types = true;
  // Ops kept in float32. Defaults: softmax/normalisation/reductions/exp-log family and Resize.
  std::vector<std::string> block_ops = default_fp16_block_ops();
  std::vector<std::string> block_nodes;  // node names kept in float32
  // The output layer (Gemm/MatMul/Conv whose result is a graph output, directly or through
  // Flatten/Reshape/Squeeze/Softmax) stays float32: -1 auto = when its weights are at most 2%
  // of the model's (the logits layer of a few-class classifier: a decision-critical layer for
  // almost no bytes), 1 always, 0 never.
  int keep_output_layers = -1;
  static std::vector<std::string> default_fp16_block_ops();
};

// Converts `m` in place (after identity/fold/bn/dce preparation). Returns a report:
// converted/blocked node counts, casts inserted, clamped values, sizes.
Result<nlohmann::json> convert_fp16(Model& m, const Fp16Options& o = {});

// Stores the float32 weight (input 1, rank >= 2, read by that node only) of each named node
// as float16 behind a Cast to float32: the node still computes in float32, the file carries
// 2 bytes per weight instead of 4 (mixed precision's `--fallback-weights fp16`). A weight
// whose values do not survive the conversion (beyond the float16 range) stays float32.
// Returns the number of weights converted.
Result<int> store_weights_fp16(Model& m, const std::vector<std::string>& node_names);

}  // namespace medq
