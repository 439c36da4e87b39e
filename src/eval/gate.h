// Acceptance gate: a policy of thresholds on any number of the validation report, evaluated
// to APPROVED / REJECTED with every failed rule and its numbers.
//
// Policy (JSON, or the YAML subset "key: value" nested by indentation, '#' comments):
//   {
//     "min": {"candidate.binary.sensitivity": 0.95},        // absolute floors  (value >= x)
//     "max": {"paired.accuracy_drop": 0.01},                 // ceilings / drops (value <= x)
//     "rules": [{"metric": "paired.mcnemar.p_value", "op": ">=", "value": 0.05}],  // JSON only
//     "auroc_noninferiority_margin": 0.02,   // paired DeLong CI lower bound of cand - ref > -margin
//     "max_subgroup_gap_increase": 0.02,     // every subgroup gap (auroc, sensitivity, fpr,
//                                            // equalized_odds) may grow by at most this, or a
//                                            // map per gap: {"auroc": 0.005, "sensitivity": 0.02}
//     "max_subgroup_gap": {"auroc": 0.05},   // the candidate's own gaps (max - min over the
//                                            // groups) for every --groups key; a number = auroc
//     "min_subgroup_size": 30                // smaller groups are reported, flagged, not gated
//   }
// Metric names are dotted paths into report.json, e.g. "candidate.accuracy",
// "candidate.per_class.mel.sensitivity", "paired.binary_auroc.diff",
// "batch_robustness.candidate.prediction_mismatches", "subgroups.sex.gaps.increase.auroc".
// A rule whose metric is missing or null fails (naming it); subgroup gap rules whose gap is not
// computable (fewer than two groups of the minimum size with the value defined) pass, noted.
// Gap names: auroc, sensitivity (equal opportunity), fpr, equalized_odds, accuracy.
#pragma once

#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace medq::eval {

struct GateRule {
  std::string metric;
  std::string op;  // ">=", ">", "<=", "<", "=="
  double value = 0;
  std::string source;  // "min", "max", "rules", "auroc_noninferiority_margin", ...
};

struct GatePolicy {
  std::vector<GateRule> rules;
  double auroc_margin = std::numeric_limits<double>::quiet_NaN();
  std::map<std::string, double> max_gap_increase;  // gap name -> max increase (cand - ref)
  std::map<std::string, double> max_gap;           // gap name -> max candidate gap
  int64_t min_subgroup_size = 30;
  nlohmann::json source;  // the parsed policy
};

struct GateOutcome {
  GateRule rule;
  bool passed = false;
  bool missing = false;
  double actual = 0;
  std::string message;  // "candidate.binary.sensitivity = 0.9123 (required >= 0.95)"
};

struct GateResult {
  bool approved = true;
  std::vector<GateOutcome> outcomes;
  nlohmann::json to_json() const;
};

// The default policy when none is given: accuracy drop <= 0.01, AUROC non-inferiority margin
// 0.02, subgroup gap increase <= 0.02, no batch-size dependence of the candidate's predictions.
GatePolicy default_policy();
Result<GatePolicy> parse_policy_text(const std::string& text, const std::string& name);
Result<GatePolicy> load_policy(const std::string& path);
// The YAML subset: maps nested by indentation, scalar values (numbers, true/false, strings,
// optionally quoted), '#' comments. Returns the equivalent JSON.
Result<nlohmann::json> parse_simple_yaml(const std::string& text, const std::string& name);

// Looks a dotted path up in the report (object keys; array elements by index).
const nlohmann::json* lookup_metric(const nlohmann::json& report, const std::string& path);

// Evaluates the policy against a validation report (paired + subgroup sections are used for
// the margin and gap rules).
GateResult apply_gate(const GatePolicy& policy, const nlohmann::json& report);

}  // namespace medq::eval
