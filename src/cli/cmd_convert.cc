// `medq convert --fp16 MODEL -o OUT.onnx`: float32 -> float16 model (standard ONNX),
// float32 I/O kept by default, fragile ops kept float32 (see quant/fp16.h).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fileio.h"
#include "onnx/model_io.h"
#include "quant/fp16.h"
#include "quant/quantize.h"

namespace medq::cli {

namespace {

std::vector<std::string> split_csv_list(const std::string& s) {
  std::vector<std::string> r;
  size_t p = 0;
  while (p <= s.size()) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    std::string item = s.substr(p, e - p);
    if (!item.empty()) r.push_back(item);
    p = e + 1;
  }
  return r;
}

std::string usage_text() {
  std::string ops;
  for (const auto& o : Fp16Options::default_fp16_block_ops()) ops += (ops.empty() ? "" : ",") + o;
  return "usage: medq convert --fp16 MODEL.onnx -o OUT.onnx [options]\n"
         "\n"
         "float32 -> float16: initializers and compute in float16, Cast nodes where needed.\n"
         "  --keep-io-types            float32 graph inputs/outputs (default)\n"
         "  --no-keep-io-types         float16 graph inputs/outputs\n"
         "  --block-ops A,B            ops kept in float32 (replaces the default list; 'none' for none)\n"
         "                             default: " + ops + "\n"
         "  --block-nodes N1,N2        node names kept in float32\n"
         "  --keep-output-layer auto|on|off  the layer producing the outputs (logits Gemm/MatMul/Conv)\n"
         "                             stays float32; auto (default): when its weights are <= 2% of the\n"
         "                             model's (few-class classifiers: decisions for almost no bytes)\n"
         "  --report R.json            conversion report\n"
         "the output records the model's preprocessing and output semantics (metadata, flags below)\n" +
         std::string(spec_override_usage());
}

}  // namespace

int cmd_convert(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       with_spec_flags({"--output", "--block-ops", "--block-nodes", "--keep-output-layer", "--report"}),
                       {"--fp16", "--keep-io-types", "--no-keep-io-types", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help")) {
    std::fputs(usage_text().c_str(), stdout);
    return 0;
  }
  if (a.positional.size() != 1) {
    std::fputs(usage_text().c_str(), stderr);
    return 2;
  }
  if (!a.has("--fp16")) return report_error(invalid_argument("convert: choose a conversion (--fp16)"));
  const std::string model_path = a.positional[0], out_path = a.get("--output");
  if (out_path.empty()) return report_error(invalid_argument("-o OUT.onnx is required"));
  if (a.has("--keep-io-types") && a.has("--no-keep-io-types"))
    return report_error(invalid_argument("--keep-io-types and --no-keep-io-types exclude each other"));
  Fp16Options o;
  o.keep_io_types = !a.has("--no-keep-io-types");
  if (a.has("--block-ops")) {
    o.block_ops = split_csv_list(a.get("--block-ops"));
    if (o.block_ops.size() == 1 && o.block_ops[0] == "none") o.block_ops.clear();
  }
  if (a.has("--block-nodes")) o.block_nodes = split_csv_list(a.get("--block-nodes"));
  const std::string kol = a.get("--keep-output-layer", "auto");
  if (kol != "auto" && kol != "on" && kol != "off")
    return report_error(invalid_argument("--keep-output-layer: expected auto, on or off, got '" + kol + "'"));
  o.keep_output_layers = kol == "auto" ? -1 : (kol == "on" ? 1 : 0);

  auto mr = load_model(model_path);
  if (!mr.is_ok()) return report_error(mr.status());
  Model m = std::move(mr.value());
  // The preprocessing and output semantics travel with the model: recorded when the model has an
  // image input (or flags say how to read it).
  const SpecOverrides ov = spec_overrides(a);
  auto spec = resolve_model_spec(m, ov, model_path);
  if (!spec.is_ok() && !ov.empty()) return report_error(spec.status());
  auto r = convert_fp16(m, o);
  if (!r.is_ok()) return report_error(r.status().with_context("'" + model_path + "'"));
  nlohmann::json rep = r.value();
  if (spec.is_ok() && spec.value().input_shape.size() == 4) {
    record_spec(spec.value(), &m);
    rep["preprocess"] = nlohmann::json::parse(spec.value().preprocess_json());
  }
  rep["model"] = model_path;
  rep["output"] = out_path;
  if (a.has("--report")) {
    Status st = write_file_atomic(a.get("--report"), rep.dump(2) + "\n");
    if (!st.is_ok()) return report_error(st.with_context("--report"));
  }
  auto saved = save_model_checked(m, out_path);
  if (!saved.is_ok()) {
    if (a.has("--report")) std::remove(a.get("--report").c_str());
    return report_error(saved.status().with_context("-o '" + out_path + "'"));
  }
  int64_t before = rep["size_before_bytes"], after = rep["size_after_bytes"];
  std::printf("fp16: %d nodes converted, %zu kept float32, %d casts, %lld values clamped to +-65504\n",
              rep["converted_nodes"].get<int>(), rep["blocked_nodes"].size(), rep["casts_inserted"].get<int>(),
              static_cast<long long>(rep["clamped_values"].get<int64_t>()));
  for (const auto& k : rep["kept_output_layers"])
    std::printf("kept float32 (output layer, %.1f%% of the weights): %s\n", 100 * k["share"].get<double>(),
                k["node"].get<std::string>().c_str());
  std::printf("weights: %.2f MB -> %.2f MB (%.3fx)\n", before / 1e6, after / 1e6,
              before ? static_cast<double>(after) / before : 0.0);
  std::printf("saved %s\n", out_path.c_str());
  return 0;
}

}  // namespace medq::cli
