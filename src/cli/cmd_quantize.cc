// `medq quantize MODEL --calib DATA -o OUT.onnx`: static int8 QDQ quantization with
// calibration on a (balanced) sample of a dataset, or `--mode dynamic`.
// The output is a standard ONNX QDQ model (see quant/quantize.h).
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fileio.h"
#include "data/dataset.h"
#include "data/preprocess.h"
#include "onnx/model_io.h"
#include "quant/quantize.h"

namespace medq::cli {

namespace {

const char* kUsage =
    "usage: medq quantize MODEL.onnx --calib DATA -o OUT.onnx [options]\n"
    "\n"
    "Static int8 quantization (standard ONNX QuantizeLinear/DequantizeLinear, opset >= 13).\n"
    "  --calib DATA               image folder, CSV manifest or MedMNIST .npz (required for static)\n"
    "  --split NAME               split to calibrate on (default: train when the data has one)\n"
    "  --label-column COL         manifest label column (default: label)\n"
    "  --samples N                calibration samples (default: 500)\n"
    "  --balance-by K1,K2         stratify the sample by these columns (default: label)\n"
    "  --seed S                   sampling seed (default: 0)\n"
    "  --batch N                  calibration batch size (default: 16)\n"
    "  --method M                 minmax | percentile | entropy | mse (default: minmax)\n"
    "  --percentile P             for --method percentile (default: 99.99)\n"
    "  --activations u8|s8        activation type (default: u8, asymmetric)\n"
    "  --symmetric-activations    symmetric activation ranges\n"
    "  --per-tensor               per-tensor weight scales (default: per output channel)\n"
    "  --exclude NAME|OP[,...]    keep these nodes / op types in fp32 (repeatable)\n"
    "  --quantize-outputs         also quantize graph outputs (logits)\n"
    "  --mode static|dynamic      dynamic: int8 MatMul/Gemm weights, activations quantized at run time\n"
    "  --report R.json            per-layer ranges, scales, zero points, sizes, calibration sample\n"
    "  --quiet                    no progress\n"
    "  preprocessing overrides: --color --resize W,H --interpolation --scale --mean --std --layout\n";

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> r;
  size_t p = 0;
  while (p <= s.size()) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    std::string item = s.substr(p, e - p);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) r.push_back(item);
    p = e + 1;
  }
  return r;
}

// The folder that will hold `path` exists (checked before any long work).
Status check_output_dir(const std::string& flag, const std::string& path) {
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return invalid_argument(flag + " '" + path + "': folder '" + dir + "' does not exist");
  return Status::ok();
}

std::string mb(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MB", b / 1e6);
  return buf;
}

// "-o X" -> "--output X"; collects every --exclude value (repeatable).
std::vector<std::string> normalize_argv(int argc, char** argv, std::vector<std::string>* excludes) {
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "-o") s = "--output";
    if (s == "--exclude" && i + 1 < argc) {
      for (auto& e : split_list(argv[i + 1])) excludes->push_back(e);
    } else if (s.rfind("--exclude=", 0) == 0) {
      for (auto& e : split_list(s.substr(10))) excludes->push_back(e);
    }
    out.push_back(s);
  }
  return out;
}

int run_quantize(const Args& a, const std::vector<std::string>& excludes) {
  const std::string model_path = a.positional[0];
  const std::string out_path = a.get("--output");
  if (out_path.empty()) return report_error(invalid_argument("-o OUT.onnx is required"));
  if (Status st = check_output_dir("-o", out_path); !st.is_ok()) return report_error(st);
  if (a.has("--report"))
    if (Status st = check_output_dir("--report", a.get("--report")); !st.is_ok()) return report_error(st);

  QuantizeOptions o;
  o.mode = a.get("--mode", "static");
  if (o.mode != "static" && o.mode != "dynamic")
    return report_error(invalid_argument("--mode: expected static or dynamic, got '" + o.mode + "'"));
  auto method = parse_calib_method(a.get("--method", "minmax"));
  if (!method.is_ok()) return report_error(method.status());
  o.method = method.value();
  auto pct = a.get_double("--percentile", 99.99);
  if (!pct.is_ok()) return report_error(pct.status());
  o.percentile = pct.value();
  if (!(o.percentile > 0 && o.percentile <= 100))
    return report_error(invalid_argument("--percentile: expected a value in (0, 100], got " + a.get("--percentile")));
  if (a.has("--percentile") && o.method != CalibMethod::kPercentile)
    return report_error(invalid_argument("--percentile needs --method percentile"));
  std::string act = a.get("--activations", "u8");
  if (act == "u8" || act == "uint8")
    o.activation_dtype = DataType::kUInt8;
  else if (act == "s8" || act == "int8")
    o.activation_dtype = DataType::kInt8;
  else
    return report_error(invalid_argument("--activations: expected u8 or s8, got '" + act + "'"));
  o.symmetric_activations = a.has("--symmetric-activations");
  o.per_channel = !a.has("--per-tensor");
  o.quantize_outputs = a.has("--quantize-outputs");
  o.exclude = excludes;
  auto samples = a.get_int("--samples", 500);
  if (!samples.is_ok()) return report_error(samples.status());
  if (samples.value() <= 0) return report_error(invalid_argument("--samples: expected a positive integer"));
  auto seed = a.get_int("--seed", 0);
  if (!seed.is_ok()) return report_error(seed.status());
  auto batch_flag = a.get_int("--batch", 16);
  if (!batch_flag.is_ok()) return report_error(batch_flag.status());
  if (batch_flag.value() <= 0) return report_error(invalid_argument("--batch: expected a positive integer"));

  auto mr = load_model(model_path);
  if (!mr.is_ok()) return report_error(mr.status());
  Model m = std::move(mr.value());
  const int64_t fp32_file = [&] {
    auto b = read_file(model_path);
    return b.is_ok() ? static_cast<int64_t>(b.value().size()) : int64_t(0);
  }();

  nlohmann::json report;
  if (o.mode == "dynamic") {
    if (a.has("--calib")) std::fprintf(stderr, "note: --calib is not used by --mode dynamic\n");
    auto r = quantize_dynamic(m, o);
    if (!r.is_ok()) return report_error(r.status().with_context("'" + model_path + "'"));
    report = std::move(r.value());
  } else {
    if (!a.has("--calib"))
      return report_error(invalid_argument("--calib DATA is required for --mode static (image folder, CSV manifest or .npz)"));
    if (m.graph.inputs.size() != 1)
      return report_error(invalid_argument("'" + model_path + "': calibration supports single-input models, this one has " +
                                           std::to_string(m.graph.inputs.size())));
    const Value& in = m.graph.value(m.graph.inputs[0]);
    DatasetSpec spec;
    spec.path = a.get("--calib");
    spec.label_column = a.get("--label-column", "label");
    spec.label_names = model_labels(m);
    std::unique_ptr<Dataset> ds;
    if (a.has("--split")) {
      spec.split = a.get("--split");
      auto d = Dataset::open(spec);
      if (!d.is_ok()) return report_error(d.status().with_context("--calib '" + spec.path + "'"));
      ds = std::move(d.value());
    } else {
      spec.split = "train";
      auto d = Dataset::open(spec);
      if (!d.is_ok()) {
        spec.split = "";
        auto d2 = Dataset::open(spec);
        if (!d2.is_ok()) return report_error(d2.status().with_context("--calib '" + spec.path + "'"));
        ds = std::move(d2.value());
      } else {
        ds = std::move(d.value());
      }
    }
    std::vector<std::string> balance = a.has("--balance-by") ? split_list(a.get("--balance-by")) : std::vector<std::string>{"label"};
    std::string table;
    SampleReport srep;
    auto idx = balanced_sample(*ds, static_cast<size_t>(samples.value()), balance, static_cast<uint64_t>(seed.value()),
                               &table, &srep);
    if (!idx.is_ok()) return report_error(idx.status().with_context("--balance-by"));
    std::printf("calibration data: %s\n", ds->describe().c_str());
    std::printf("calibration sample (%zu of %zu requested):\n%s", idx.value().size(), static_cast<size_t>(samples.value()),
                table.c_str());
    if (!table.empty() && table.back() != '\n') std::printf("\n");
    std::fflush(stdout);

    auto pj = preprocess_json_for(m, a);
    if (!pj.is_ok()) return report_error(pj.status());
    auto cfgr = parse_preprocess_json(pj.value());
    if (!cfgr.is_ok()) return report_error(cfgr.status().with_context("preprocessing"));
    PreprocessConfig cfg = cfgr.value();
    if (cfg.resize_w <= 0 && in.shape.size() == 4) {
      bool nhwc = cfg.layout == "NHWC";
      cfg.resize_h = static_cast<int>(nhwc ? in.shape[1] : in.shape[2]);
      cfg.resize_w = static_cast<int>(nhwc ? in.shape[2] : in.shape[3]);
    }
    if (cfg.resize_w <= 0)
      return report_error(invalid_argument("'" + model_path + "': no resize size in the model metadata; pass --resize W,H"));
    int64_t fixed_batch = !in.shape.empty() && in.shape[0] > 0 ? in.shape[0] : 0;
    int batch = fixed_batch > 0 ? static_cast<int>(fixed_batch) : static_cast<int>(batch_flag.value());

    BatchLoader loader(*ds, idx.value(), cfg, batch);
    ProgressOptions popt;
    popt.enabled = !a.has("--quiet");
    Progress progress("calibrate", idx.value().size(), popt);
    BatchSource next = [&](std::vector<Tensor>& inputs) -> Result<bool> {
      Batch b;
      for (;;) {
        if (!loader.next(b)) {
          RETURN_IF_ERROR(loader.status().with_context("--calib"));
          return false;
        }
        if (fixed_batch > 0 && b.x.dim(0) != fixed_batch) continue;  // short last batch of a fixed-batch model
        inputs = {b.x};
        return true;
      }
    };
    auto r = quantize_static(m, o, next, [&](int64_t done) { progress.update(static_cast<size_t>(done)); });
    if (!r.is_ok()) return report_error(r.status().with_context("'" + model_path + "'"));
    progress.finish();
    report = std::move(r.value());
    report["calibration"] = srep.to_json();
    report["calibration"]["dataset"] = ds->describe();
    report["calibration"]["split"] = spec.split;
  }
  report["model"] = model_path;
  report["output"] = out_path;

  // Report first (atomic), then the model (checked + atomic); no partial output on failure.
  if (a.has("--report")) {
    Status st = write_file_atomic(a.get("--report"), report.dump(2) + "\n");
    if (!st.is_ok()) return report_error(st.with_context("--report"));
  }
  auto saved = save_model_checked(m, out_path);
  if (!saved.is_ok()) {
    if (a.has("--report")) std::remove(a.get("--report").c_str());
    return report_error(saved.status().with_context("-o '" + out_path + "'"));
  }
  int64_t before = report.value("size_before_bytes", int64_t(0)), after = report.value("size_after_bytes", int64_t(0));
  size_t nw = report.contains("weight_layers") ? report["weight_layers"].size() : 0;
  size_t na = report.contains("layers") ? report["layers"].size() : 0;
  if (o.mode == "static")
    std::printf("quantized (static, %s): %zu weight tensors int8, %zu activation tensors %s\n",
                calib_method_name(o.method), nw, na, dtype_name(o.activation_dtype));
  else
    std::printf("quantized (dynamic): %zu MatMul/Gemm weight tensors int8, activations uint8 at run time\n", nw);
  if (report.contains("excluded") && !report["excluded"].empty())
    std::printf("kept fp32 (--exclude): %zu nodes\n", report["excluded"].size());
  std::printf("weights: %s -> %s (%.3fx); file: %s -> %s (%.3fx)\n", mb(before).c_str(), mb(after).c_str(),
              before ? static_cast<double>(after) / before : 0.0, mb(fp32_file).c_str(), mb(saved.value()).c_str(),
              fp32_file ? static_cast<double>(saved.value()) / fp32_file : 0.0);
  std::printf("saved %s\n", out_path.c_str());
  if (a.has("--report")) std::printf("report %s\n", a.get("--report").c_str());
  return 0;
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  std::vector<std::string> excludes;
  std::vector<std::string> args = normalize_argv(argc, argv, &excludes);
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  auto pa = parse_args(static_cast<int>(av.size()), av.data(), 2,
                       {"--calib", "--split", "--label-column", "--samples", "--balance-by", "--seed", "--batch",
                        "--method", "--percentile", "--activations", "--exclude", "--mode", "--report", "--output",
                        "--color", "--resize", "--interpolation", "--scale", "--mean", "--std", "--layout"},
                       {"--symmetric-activations", "--per-tensor", "--quantize-outputs", "--quiet", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (a.positional.size() != 1) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  return run_quantize(a, excludes);
}

}  // namespace medq::cli
