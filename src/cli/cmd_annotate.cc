// `medq annotate MODEL --labels a,b,... [preprocessing flags] [--outputs K] -o OUT.onnx`: records
// the class labels, the preprocessing and the output semantics in the model's metadata_props
// (the keys every medq command reads: "labels", "preprocess", "outputs"), so a model from any
// exporter runs without flags afterwards. The file is otherwise copied as parsed (no IR round
// trip) and written atomically.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "eval/runner.h"
#include "onnx/model_io.h"

namespace medq::cli {

namespace {

const char* kAnnotateUsage =
    "usage: medq annotate MODEL.onnx -o OUT.onnx [--labels a,b,...] [overrides]\n"
    "  --labels a,b,...   class names in output order (a single-output binary head: negative,positive)\n"
    "  -o, --output OUT   the annotated model (may be MODEL itself)\n"
    "  what is not given keeps the model's metadata, else what medq infers (printed)\n";

}  // namespace

int cmd_annotate(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2, with_spec_flags({"--labels", "--output"}),
                       {"--help", "--quiet"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help") || a.positional.size() != 1) {
    std::fprintf(a.has("--help") ? stdout : stderr, "%s%s", kAnnotateUsage, spec_override_usage());
    return a.has("--help") ? 0 : 2;
  }
  const std::string in = a.positional[0], out = a.get("--output");
  if (out.empty()) return report_error(invalid_argument("-o OUT.onnx is required"));
  auto mr = load_model(in);
  if (!mr.is_ok()) return report_error(mr.status());
  const Model& m = mr.value();
  if (m.graph.inputs.size() != 1)
    return report_error(invalid_argument("'" + in + "': annotate needs a single-input image model (has " +
                                         std::to_string(m.graph.inputs.size()) + " inputs)"));
  auto sr = resolve_model_spec(m, spec_overrides(a), in);
  if (!sr.is_ok()) return report_error(sr.status());
  ModelSpec spec = sr.value();
  if (Status st = spec.require_image_input(); !st.is_ok()) return report_error(st);
  if (a.has("--labels")) {
    std::string l = a.get("--labels");
    std::vector<std::string> labels;
    if (!l.empty() && l[0] == '[') {
      auto j = nlohmann::json::parse(l, nullptr, false);
      if (j.is_discarded() || !j.is_array()) return report_error(invalid_argument("--labels: not a JSON list of strings"));
      for (const auto& e : j) {
        if (!e.is_string()) return report_error(invalid_argument("--labels: not a JSON list of strings"));
        labels.push_back(e.get<std::string>());
      }
    } else {
      labels = eval::split_list(l);
    }
    if (labels.empty()) return report_error(invalid_argument("--labels: no label given"));
    for (size_t i = 0; i < labels.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (labels[i] == labels[j]) return report_error(invalid_argument("--labels: '" + labels[i] + "' appears twice"));
    spec.labels = labels;
  }
  if (!spec.labels.empty() && spec.num_outputs > 0 && static_cast<int64_t>(spec.labels.size()) != spec.num_classes())
    return report_error(invalid_argument("--labels: " + std::to_string(spec.labels.size()) + " labels but output 0 of '" +
                                         in + "' has " + std::to_string(spec.num_outputs) + " value(s) per image (" +
                                         std::to_string(spec.num_classes()) + " classes" +
                                         (spec.num_outputs == 1 ? ": negative,positive" : "") + ")"));
  std::vector<std::pair<std::string, std::string>> meta = {{"preprocess", spec.preprocess_json()},
                                                           {"outputs", output_kind_name(spec.outputs)}};
  if (!spec.labels.empty()) meta.push_back({"labels", nlohmann::json(spec.labels).dump()});
  if (Status st = save_with_metadata(in, meta, out); !st.is_ok()) return report_error(st.with_context("-o '" + out + "'"));
  if (!a.has("--quiet")) {
    std::vector<std::string> inferred;
    for (const std::string& k : spec.assumed)
      if (!spec.has_preprocess_metadata) inferred.push_back(k);
    std::string inf;
    for (const auto& k : inferred) inf += (inf.empty() ? "" : ", ") + k;
    std::printf("preprocess: %s%s\n", spec.preprocess_json().c_str(),
                inf.empty() ? "" : ("  (inferred or default: " + inf + ")").c_str());
    std::printf("outputs: %s (%s)\n", output_kind_name(spec.outputs), spec.outputs_source.c_str());
    if (!spec.labels.empty()) std::printf("labels: %s\n", nlohmann::json(spec.labels).dump().c_str());
  }
  std::printf("saved %s\n", out.c_str());
  return 0;
}

}  // namespace medq::cli
