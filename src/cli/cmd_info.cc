// `medq info MODEL`: inputs, outputs, opsets, op histogram, parameter count,
// file size and metadata; `--json` for machine-readable output.
#include <sys/stat.h>

#include <cstdio>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq::cli {

namespace {

std::string value_sig(const Value& v) {
  std::string s = std::string(dtype_name(v.dtype)) + "[";
  for (size_t i = 0; i < v.shape.size(); ++i) {
    if (i) s += ",";
    if (v.shape[i] >= 0)
      s += std::to_string(v.shape[i]);
    else
      s += (i < v.dim_params.size() && !v.dim_params[i].empty()) ? v.dim_params[i] : "?";
  }
  return s + "]";
}

nlohmann::json dims_json(const Value& v) {
  nlohmann::json d = nlohmann::json::array();
  for (size_t i = 0; i < v.shape.size(); ++i) {
    if (v.shape[i] >= 0)
      d.push_back(v.shape[i]);
    else
      d.push_back((i < v.dim_params.size() && !v.dim_params[i].empty()) ? v.dim_params[i] : "?");
  }
  return d;
}

}  // namespace

int cmd_info(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2, {}, {"--json", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help") || a.positional.size() != 1) {
    std::fprintf(a.has("--help") ? stdout : stderr, "usage: medq info MODEL.onnx [--json]\n");
    return a.has("--help") ? 0 : 2;
  }
  const std::string path = a.positional[0];
  auto mr = load_model(path);
  if (!mr.is_ok()) return report_error(mr.status());
  const Model& m = mr.value();
  const Graph& g = m.graph;

  std::map<std::string, int> hist;
  for (const Node& n : g.nodes) {
    if (n.dead) continue;
    hist[(n.domain.empty() || n.domain == "ai.onnx" ? "" : n.domain + ".") + n.op_type]++;
  }
  int64_t params = 0, param_bytes = 0;
  for (const Value& v : g.values)
    if (v.is_constant()) {
      params += v.initializer.numel();
      param_bytes += static_cast<int64_t>(v.initializer.nbytes());
    }
  struct stat st {};
  int64_t file_size = ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
  std::string unsupported = unsupported_ops_report(g);

  // How medq reads an image model (one 4-D input): resolved once for both outputs.
  std::optional<Result<ModelSpec>> sp;
  if (g.inputs.size() == 1 && g.value(g.inputs[0]).shape.size() == 4) sp = resolve_model_spec(m, {}, path);
  if (a.has("--json")) {
    nlohmann::json j;
    j["path"] = path;
    j["file_bytes"] = file_size;
    j["ir_version"] = m.ir_version;
    j["producer"] = m.producer_name + (m.producer_version.empty() ? "" : " " + m.producer_version);
    nlohmann::json ops = nlohmann::json::object();
    for (auto& [d, v] : m.opset_imports) ops[d.empty() ? "ai.onnx" : d] = v;
    j["opsets"] = ops;
    for (uint32_t id : g.inputs) {
      const Value& v = g.value(id);
      j["inputs"].push_back({{"name", v.name}, {"dtype", dtype_name(v.dtype)}, {"shape", dims_json(v)}});
    }
    for (uint32_t id : g.outputs) {
      const Value& v = g.value(id);
      j["outputs"].push_back({{"name", v.name}, {"dtype", dtype_name(v.dtype)}, {"shape", dims_json(v)}});
    }
    j["ops"] = hist;
    j["nodes"] = g.nodes.size();
    j["parameters"] = params;
    j["parameter_bytes"] = param_bytes;
    nlohmann::json meta = nlohmann::json::object();
    for (auto& [k, v] : m.metadata) meta[k] = v;
    j["metadata"] = meta;
    if (sp && sp->is_ok()) {
      const ModelSpec& s = sp->value();
      j["input_spec"] = {{"preprocess", nlohmann::json::parse(s.preprocess_json())},
                         {"preprocess_from_metadata", s.has_preprocess_metadata},
                         {"assumed", s.has_preprocess_metadata ? std::vector<std::string>{} : s.assumed},
                         {"outputs", output_kind_name(s.outputs)},
                         {"outputs_source", s.outputs_source},
                         {"labels", s.labels}};
    } else if (sp) {
      j["input_spec"] = {{"error", sp->status().message()}};
    }
    j["supported"] = unsupported.empty();
    if (!unsupported.empty()) j["unsupported"] = unsupported;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  std::printf("model:      %s (%.2f MB)\n", path.c_str(), file_size / 1e6);
  std::printf("producer:   %s %s, IR version %lld\n", m.producer_name.c_str(), m.producer_version.c_str(),
              static_cast<long long>(m.ir_version));
  std::printf("opsets:    ");
  for (auto& [d, v] : m.opset_imports) std::printf(" %s=%lld", d.empty() ? "ai.onnx" : d.c_str(), static_cast<long long>(v));
  std::printf("\ninputs:\n");
  for (uint32_t id : g.inputs) std::printf("  %-20s %s\n", g.value(id).name.c_str(), value_sig(g.value(id)).c_str());
  std::printf("outputs:\n");
  for (uint32_t id : g.outputs) std::printf("  %-20s %s\n", g.value(id).name.c_str(), value_sig(g.value(id)).c_str());
  std::printf("parameters: %lld (%.2f MB)\n", static_cast<long long>(params), param_bytes / 1e6);
  std::printf("nodes:      %zu\nops:\n", g.nodes.size());
  for (auto& [op, c] : hist) std::printf("  %-28s %d\n", op.c_str(), c);
  if (!m.metadata.empty()) {
    std::printf("metadata:\n");
    for (auto& [k, v] : m.metadata) std::printf("  %s: %s\n", k.c_str(), v.c_str());
  }
  if (sp && sp->is_ok()) {
    const ModelSpec& s = sp->value();
    std::printf("as medq reads it:\n  preprocess: %s%s\n  outputs:    %s (%s)\n  labels:     %s\n",
                s.preprocess_json().c_str(),
                s.has_preprocess_metadata ? " (metadata)" : " (inferred from the input shape: no 'preprocess' metadata; record with medq annotate)",
                output_kind_name(s.outputs), s.outputs_source.c_str(),
                s.labels.empty() ? "(none: class_0, class_1, ...)" : nlohmann::json(s.labels).dump().c_str());
  } else if (sp) {
    std::printf("as medq reads it: %s\n", sp->status().message().c_str());
  }
  if (!unsupported.empty()) std::printf("unsupported: %s\n", unsupported.c_str());
  return 0;
}

}  // namespace medq::cli
