// Machine-readable (JSON) and human-readable (text summary, self-contained HTML) forms of the
// evaluation results. NaN (undefined) values are written as JSON null.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "eval/metrics.h"

namespace medq::eval {

// Every number of a model's metrics. curves: include ROC points and reliability bins.
nlohmann::json metrics_json(const ModelMetrics& m, const std::vector<std::string>& names, bool curves = true);
nlohmann::json paired_json(const PairedMetrics& p, const std::vector<std::string>& names);
// {"groups": [{"value", "n", "small", "reference": {...}, "candidate": {...}}],
//  "gaps": {"reference": {...}, "candidate": {...}, "increase": {...}}, "min_size"}
nlohmann::json subgroups_json(const SubgroupAnalysis& s, const std::vector<std::string>& names, int64_t min_size);

// Readable multi-line summary of one model's metrics (for the terminal).
std::string metrics_text(const ModelMetrics& m, const std::vector<std::string>& names);
std::string subgroups_text(const SubgroupAnalysis& s, bool paired);

// Self-contained HTML report (inline CSS + SVG, no external assets) from the report JSON of
// `medq validate` (see cmd_validate.cc for the layout).
std::string render_html_report(const nlohmann::json& report);

// Writes `files` (name -> content) into dir atomically as a set: every file is written to a
// temporary name first and only renamed once all writes succeeded (dir is created if needed).
Status write_report_files(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace medq::eval
