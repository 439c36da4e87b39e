// Accuracy-driven mixed precision (`medq quantize --max-drop D --eval DATA`).
//
// The fully int8 model is evaluated first (real int8 kernels, the caller's evaluator). When the
// metric drop against fp32 exceeds the budget, every quantized layer's sensitivity is measured
// by quantizing that layer alone (everything else fp32) on a few evaluation batches:
//   * output_sqnr_db: SQNR of the layer's own output vs fp32 (10 log10(sum x^2 / sum (x-q)^2)),
//     the per-layer output error (on a strided subsample of at most 64K values per batch so
//     memory stays bounded);
//   * logits_rel_mse: sum (y_q - y)^2 / sum y^2 of the model output, and
//   * flips: top-1 predictions changed vs fp32 - the layer's impact on the decision.
// Layers are ranked by logits_rel_mse (ties: flips, then lower SQNR) and fallen back to fp32
// one at a time - the QDQ model is re-written from the prepared fp32 graph and the kept
// calibration histograms (no re-calibration) - and re-evaluated until the budget holds. If it
// only holds with every layer in fp32, the search reports failure (within_budget = false).
//
// A "layer" (fallback unit) is a planned node plus the Relu/Clip that is its only consumer,
// because they share one quantized tensor (the pair is fused when both are int8).
// Sensitivity runs use the QDQ graph without engine rewrites (optimize = false, so every tensor
// keeps its name for the observer); all metric numbers come from the caller's evaluator.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"
#include "quant/quantize.h"

namespace medq {

struct FallbackUnit {
  std::string label;            // "Conv 'conv2' + Relu 'relu2'"
  std::string op_type;          // of the first node
  std::vector<uint32_t> nodes;  // node ids in the prepared graph
  std::string output;           // tensor whose error is measured (the last node's output)
};
// Units of a plan, in plan (graph) order.
std::vector<FallbackUnit> fallback_units(const Model& prepared, const StaticPlan& plan);

// The plan without the nodes of `fp32` (they stay float; nothing else changes).
StaticPlan plan_without(const StaticPlan& plan, const std::vector<const FallbackUnit*>& fp32);

struct LayerSensitivity {
  std::string unit, op_type, output;
  double output_sqnr_db = 0;  // +inf when the output is unchanged
  double output_rel_mse = 0;
  double logits_rel_mse = 0;
  int64_t flips = 0, samples = 0;
  int rank = 0;  // 1 = most harmful
  nlohmann::json to_json() const;
};

// Quantizes each unit alone and measures its error on `batches` (positional inputs per batch).
// progress(done) after each unit.
Result<std::vector<LayerSensitivity>> measure_sensitivity(const Model& prepared, const StaticPlan& plan,
                                                          const std::vector<FallbackUnit>& units,
                                                          const std::map<std::string, StreamingHistogram>& stats,
                                                          const QuantizeOptions& o,
                                                          const std::vector<std::vector<Tensor>>& batches,
                                                          const std::function<void(size_t)>& progress = nullptr);

// The caller's evaluation of a candidate model on the evaluation data.
struct EvalOutcome {
  double metric = 0;
  double agreement = -1;   // top-1 agreement with fp32 in [0, 1]; < 0: not measured
  nlohmann::json details;  // anything worth reporting for the step (e.g. agreement with fp32)
};
using CandidateEvaluator = std::function<Result<EvalOutcome>(const Model& candidate, const std::string& what)>;
// Whether a candidate's metric is acceptable against the reference metric (the acceptance gate).
using BudgetCheck = std::function<bool(double reference, double candidate)>;

struct MixedPrecisionOptions {
  double reference_metric = 0;  // fp32 metric on the evaluation data
  BudgetCheck within_budget;
  // Also required when > 0: the candidate's top-1 agreement with fp32 (EvalOutcome::agreement)
  // at least this (`--min-agreement`): a metric can hold while individual decisions flip.
  double min_agreement = 0;
  // `--fallback-weights fp16`: fallen-back layers keep float32 compute but store their weights
  // as float16 (+1 byte per weight over int8 instead of +3).
  bool fp16_fallback_weights = false;
  std::vector<std::vector<Tensor>> sensitivity_batches;
  std::function<void(const std::string&)> log;    // one line per step (optional)
  std::function<void(size_t, size_t)> progress;  // sensitivity progress (done, total) (optional)
};

struct MixedPrecisionStep {
  int step = 0;
  std::string fallback;  // unit fallen back at this step ("" for the all-int8 start)
  int quantized_units = 0;
  double metric = 0, drop = 0;
  bool within_budget = false;
  nlohmann::json details;
};

struct MixedPrecisionResult {
  bool within_budget = false;
  bool sensitivity_measured = false;
  std::vector<LayerSensitivity> sensitivity;  // in fallback order (rank 1 first)
  std::vector<MixedPrecisionStep> steps;
  std::vector<std::string> fp32_units;  // fallen back, in order
  Model model;                          // the final QDQ model (when within_budget)
  nlohmann::json qdq_report;            // write_qdq's report of the final model
  nlohmann::json to_json() const;       // everything but the model and qdq_report
};

// `prepared` and `plan` as given to write_qdq; `stats` from calibrate_static.
Result<MixedPrecisionResult> search_mixed_precision(const Model& prepared, const StaticPlan& plan,
                                                    const std::map<std::string, StreamingHistogram>& stats,
                                                    const QuantizeOptions& o, const MixedPrecisionOptions& mo,
                                                    const CandidateEvaluator& evaluate);

}  // namespace medq
