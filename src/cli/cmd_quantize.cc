// `medq quantize MODEL --calib DATA -o OUT.onnx`: static int8 QDQ quantization with
// calibration on a (balanced) sample of a dataset, or `--mode dynamic`.
// The output is a standard ONNX QDQ model (see quant/quantize.h).
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/fileio.h"
#include "data/dataset.h"
#include "data/preprocess.h"
#include "onnx/model_io.h"
#include "eval/gate.h"
#include "eval/metrics.h"
#include "eval/runner.h"
#include "quant/mixed_precision.h"
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
    "  --batch N                  calibration batch size (default: 16, or as many images as keep the\n"
    "                             largest activation tensor within 32 MiB, at least 1)\n"
    "  --threads T                worker threads (default: all cores)\n"
    "  --method M                 minmax | percentile | entropy | mse (default: minmax)\n"
    "  --percentile P             for --method percentile (default: 99.99)\n"
    "  --activations u8|s8        activation type (default: u8, asymmetric)\n"
    "  --symmetric-activations    symmetric activation ranges\n"
    "  --per-tensor               per-tensor weight scales (default: per output channel)\n"
    "  --exclude NAME|OP[,...]    keep these nodes / op types in fp32 (repeatable)\n"
    "  --quantize-outputs         also quantize graph outputs (logits)\n"
    "  --mode static|dynamic      dynamic: int8 MatMul/Gemm weights, activations quantized at run time\n"
    "  --report R.json            per-layer ranges, scales, zero points, sizes, calibration sample,\n"
    "                             peak memory; with --max-drop also per-layer sensitivity and each step\n"
    "\n"
    "Accuracy-driven mixed precision (static mode):\n"
    "  --max-drop D               largest allowed metric drop vs fp32 (e.g. 0.005 = 0.5 points); layers\n"
    "                             are fallen back to fp32, most harmful first, until it holds; exit 1 and\n"
    "                             no model written when it only holds with every layer fp32\n"
    "  --min-agreement A          also require int8/fp32 top-1 agreement >= A on the evaluation data\n"
    "                             (e.g. 0.99); with or without --max-drop\n"
    "  --fallback-weights fp32|fp16  how fallen-back layers store their weights (default: fp32); fp16:\n"
    "                             float32 compute, weights stored as float16 behind a Cast (half the bytes)\n"
    "  --eval DATA                evaluation data (must not share images with the calibration sample)\n"
    "  --eval-split NAME          its split (default: val, else test, else all rows)\n"
    "  --eval-samples N           evaluate on a label-balanced sample of N images (default: all)\n"
    "  --metric M                 accuracy | balanced_accuracy | macro_f1 (default: accuracy)\n"
    "  --sensitivity-samples N    evaluation images used for the per-layer sensitivity (default: 32)\n"
    "  --quiet                    no progress\n"
    "  the output records the preprocessing and output semantics used (metadata_props)\n";

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

// Peak resident set size of this process so far (getrusage: KiB on Linux).
double peak_rss_mib() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

// Identity of a sample's image for the calibration/evaluation overlap check: the resolved file
// (so "a/../x.png" and "x.png" match), or for npz rows the archive plus the row id.
std::string sample_key(const Dataset& ds, size_t i) {
  const Sample& s = ds.sample(i);
  std::string p = s.path.empty() ? ds.spec().path : s.path;
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf)) p = buf;
  return s.path.empty() ? p + "#" + s.id : p;
}

// The metric of --metric from evaluation logits.
Result<double> metric_value(const std::string& metric, const std::vector<float>& logits, int k, OutputKind kind,
                            const std::vector<int>& y) {
  eval::ProbMatrix probs = eval::to_probabilities(logits, k, kind);
  eval::MetricOptions mo;
  mo.keep_curves = false;
  eval::ModelMetrics mm = eval::compute_metrics(probs, y, mo);
  if (metric == "accuracy") return mm.accuracy;
  if (metric == "balanced_accuracy") return mm.balanced_accuracy;
  if (metric == "macro_f1") return mm.macro_f1;
  return invalid_argument("--metric: expected accuracy, balanced_accuracy or macro_f1, got '" + metric + "'");
}

// Predicted class per row of k raw outputs (class probabilities' argmax: a single output is binary).
std::vector<int> argmax_rows(const std::vector<float>& logits, int k, OutputKind kind) {
  return eval::to_probabilities(logits, k, kind).argmax();
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
  auto threads = a.get_int("--threads", 0);
  if (!threads.is_ok()) return report_error(threads.status());
  if (threads.value() < 0) return report_error(invalid_argument("--threads: expected >= 0"));
  o.num_threads = static_cast<int>(threads.value());

  // Mixed precision flags (checked before any long work).
  const bool use_eval = a.has("--eval");
  double max_drop = std::numeric_limits<double>::infinity();
  if (a.has("--max-drop")) {
    auto d = a.get_double("--max-drop", 0);
    if (!d.is_ok()) return report_error(d.status());
    max_drop = d.value();
    if (!(max_drop >= 0 && max_drop < 1))
      return report_error(invalid_argument("--max-drop: expected a metric drop in [0, 1) (0.005 = 0.5 points), got " +
                                           a.get("--max-drop")));
    if (!use_eval)
      return report_error(invalid_argument(
          "--max-drop needs --eval DATA: held-out evaluation data (not the calibration images) to measure the drop on"));
  }
  double min_agreement = 0;
  if (a.has("--min-agreement")) {
    auto d = a.get_double("--min-agreement", 0);
    if (!d.is_ok()) return report_error(d.status());
    min_agreement = d.value();
    if (!(min_agreement > 0 && min_agreement <= 1))
      return report_error(invalid_argument("--min-agreement: expected a fraction in (0, 1] (0.99 = 99%), got " +
                                           a.get("--min-agreement")));
  }
  const std::string fallback_weights = a.get("--fallback-weights", "fp32");
  if (fallback_weights != "fp32" && fallback_weights != "fp16")
    return report_error(invalid_argument("--fallback-weights: expected fp32 or fp16, got '" + fallback_weights + "'"));
  for (const char* f : {"--eval-split", "--eval-samples", "--metric", "--sensitivity-samples", "--min-agreement",
                        "--fallback-weights"})
    if (a.has(f) && !use_eval) return report_error(invalid_argument(std::string(f) + " needs --eval DATA"));
  if (use_eval && o.mode == "dynamic")
    return report_error(invalid_argument("--eval/--max-drop work with --mode static only"));
  const std::string metric = a.get("--metric", "accuracy");
  if (metric != "accuracy" && metric != "balanced_accuracy" && metric != "macro_f1")
    return report_error(
        invalid_argument("--metric: expected accuracy, balanced_accuracy or macro_f1, got '" + metric + "'"));
  auto eval_samples = a.get_int("--eval-samples", 0);
  if (!eval_samples.is_ok()) return report_error(eval_samples.status());
  if (a.has("--eval-samples") && eval_samples.value() <= 0)
    return report_error(invalid_argument("--eval-samples: expected a positive integer"));
  auto sens_samples = a.get_int("--sensitivity-samples", 32);
  if (!sens_samples.is_ok()) return report_error(sens_samples.status());
  if (sens_samples.value() <= 0) return report_error(invalid_argument("--sensitivity-samples: expected a positive integer"));

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
    auto spec_r = model_spec_for(m, a, model_path);
    if (!spec_r.is_ok()) return report_error(spec_r.status());
    DatasetSpec spec;
    spec.path = a.get("--calib");
    spec.label_column = a.get("--label-column", "label");
    spec.label_names = spec_r.value().labels;
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

    const ModelSpec& mspec = spec_r.value();
    if (Status st = mspec.require_image_input(); !st.is_ok()) return report_error(st);
    const PreprocessConfig cfg = mspec.preprocess;
    if (cfg.resize_w <= 0)
      return report_error(invalid_argument("'" + model_path + "': the model input " + shape_str(in.shape) +
                                           " has no fixed size and no 'preprocess' resize is recorded; pass --resize W,H"));
    int64_t fixed_batch = !in.shape.empty() && in.shape[0] > 0 ? in.shape[0] : 0;
    int batch = fixed_batch > 0 ? static_cast<int>(fixed_batch) : static_cast<int>(batch_flag.value());
    if (fixed_batch <= 0 && !a.has("--batch")) {
      // Large activations (e.g. 32 x 238 x 238 floats = 7 MiB per image after a 240x240 input's
      // first convolution): a batch of 16 held 0.5 GiB of activations and reorders; keep the
      // largest activation of a batch within 32 MiB.
      int64_t per_image = 0;
      for (const Value& v : m.graph.values) {
        if (v.is_constant() || !v.has_shape || v.shape.size() < 2) continue;
        int64_t n = 1;
        for (size_t d = 1; d < v.shape.size() && n > 0; ++d) n = v.shape[d] > 0 ? n * v.shape[d] : -1;
        if (n > 0) per_image = std::max(per_image, n * static_cast<int64_t>(dtype_size(v.dtype == DataType::kUndefined ? DataType::kFloat32 : v.dtype)));
      }
      if (per_image > 0) batch = static_cast<int>(std::clamp<int64_t>((int64_t{32} << 20) / per_image, 1, batch));
    }

    // Evaluation data: opened and checked against the calibration sample before calibrating.
    std::unique_ptr<Dataset> eds;
    std::vector<size_t> eval_idx;
    std::vector<int> eval_y;
    std::vector<std::string> class_names;
    if (use_eval) {
      DatasetSpec es;
      es.path = a.get("--eval");
      es.label_column = spec.label_column;
      es.label_names = spec.label_names;
      std::vector<std::string> tries = a.has("--eval-split") ? std::vector<std::string>{a.get("--eval-split")}
                                                             : std::vector<std::string>{"val", "test", ""};
      Status last = Status::ok();
      for (const auto& sp : tries) {
        es.split = sp;
        auto d = Dataset::open(es);
        if (d.is_ok()) {
          eds = std::move(d.value());
          break;
        }
        last = d.status();
      }
      if (!eds) return report_error(last.with_context("--eval '" + es.path + "'"));
      if (a.has("--eval-samples")) {
        auto ei = balanced_sample(*eds, static_cast<size_t>(eval_samples.value()), {"label"},
                                  static_cast<uint64_t>(seed.value()), nullptr);
        if (!ei.is_ok()) return report_error(ei.status().with_context("--eval-samples"));
        eval_idx = ei.value();
      } else {
        eval_idx.resize(eds->size());
        for (size_t i = 0; i < eval_idx.size(); ++i) eval_idx[i] = i;
      }
      // The evaluation must not see calibration images (the drop would be measured on data the
      // ranges were fitted to).
      std::set<std::string> calib_keys;
      for (size_t i : idx.value()) calib_keys.insert(sample_key(*ds, i));
      size_t overlap = 0;
      std::string example;
      for (size_t i : eval_idx)
        if (calib_keys.count(sample_key(*eds, i))) {
          if (overlap++ == 0) example = eds->sample(i).id;
        }
      if (overlap > 0)
        return report_error(invalid_argument(
            "--eval: " + std::to_string(overlap) + " of the " + std::to_string(eval_idx.size()) +
            " evaluation images are also in the calibration sample (e.g. '" + example +
            "'); evaluate on a disjoint split (--eval-split test, or a manifest 'val' split of held-out rows)"));
      class_names = spec.label_names.empty() ? eds->label_values() : spec.label_names;
      auto y = eval::map_labels(*eds, class_names);
      if (!y.is_ok()) return report_error(y.status().with_context("--eval '" + es.path + "'"));
      for (size_t i : eval_idx) eval_y.push_back(y.value()[i]);
      std::printf("evaluation data: %s; %zu images, metric %s\n", eds->describe().c_str(), eval_idx.size(),
                  metric.c_str());
      std::fflush(stdout);
    }

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
    const Model original = m;
    if (Status st = prepare_for_quantization(m); !st.is_ok())
      return report_error(st.with_context("'" + model_path + "'"));
    auto plan = plan_static(m, o);
    if (!plan.is_ok()) return report_error(plan.status().with_context("'" + model_path + "'"));
    auto cal = calibrate_static(m, plan.value(), o, next, [&](int64_t done) { progress.update(static_cast<size_t>(done)); });
    if (!cal.is_ok()) return report_error(cal.status().with_context("'" + model_path + "'"));
    progress.finish();
    std::printf("calibration: %lld samples in %.1f s; histograms %s (%zu tensors, bounded by the bin count)\n",
                static_cast<long long>(cal.value().samples), cal.value().seconds,
                mb(cal.value().histogram_bytes).c_str(), cal.value().stats.size());
    std::fflush(stdout);

    std::vector<std::string> fp32_fallback;
    if (!use_eval) {
      auto r = write_qdq(m, plan.value(), cal.value().stats, o);
      if (!r.is_ok()) return report_error(r.status().with_context("'" + model_path + "'"));
      report = std::move(r.value());
    } else {
      const int k = static_cast<int>(mspec.num_outputs > 0 ? mspec.num_outputs : static_cast<int64_t>(class_names.size()));
      if (classes_of_outputs(k) != static_cast<int64_t>(class_names.size()))
        return report_error(invalid_argument("'" + model_path + "': the model has " + std::to_string(k) +
                                             " output(s) but --eval has " + std::to_string(class_names.size()) +
                                             " classes; record the labels with `medq annotate --labels`"));
      const OutputKind kind = mspec.outputs;
      SessionOptions so;
      so.num_threads = o.num_threads;
      auto run_eval = [&](const Model& model, const std::string& what) -> Result<std::vector<float>> {
        eval::LoadedModel lm;
        lm.path = what;
        auto sr = Session::create(model, so);
        if (!sr.is_ok()) return sr.status().with_context(what);
        lm.session = std::move(sr.value());
        std::vector<std::vector<float>> logits;
        RETURN_IF_ERROR(
            eval::run_models({&lm}, *eds, eval_idx, cfg, batch, k, !a.has("--quiet"), &logits).with_context("--eval"));
        return logits[0];
      };
      auto ref_logits = run_eval(original, "fp32");
      if (!ref_logits.is_ok()) return report_error(ref_logits.status());
      auto ref_metric = metric_value(metric, ref_logits.value(), k, kind, eval_y);
      if (!ref_metric.is_ok()) return report_error(ref_metric.status());
      const std::vector<int> ref_pred = argmax_rows(ref_logits.value(), k, kind);
      std::printf("fp32 %s: %.4f\n", metric.c_str(), ref_metric.value());
      std::fflush(stdout);

      // The budget goes through the acceptance gate of `medq validate` (one rule on the drop).
      eval::GatePolicy policy;
      policy.rules.push_back({"paired." + metric + "_drop", "<=", max_drop, "max"});
      auto gate_report = [&](double ref, double cand) {
        return nlohmann::json{{"paired", {{metric + "_drop", ref - cand}}}};
      };
      MixedPrecisionOptions mo;
      mo.reference_metric = ref_metric.value();
      mo.min_agreement = min_agreement;
      mo.fp16_fallback_weights = fallback_weights == "fp16";
      mo.within_budget = [&](double ref, double cand) {
        return !std::isfinite(max_drop) || eval::apply_gate(policy, gate_report(ref, cand)).approved;
      };
      mo.log = [](const std::string& line) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      };
      // Sensitivity batches: the first images of the (label-balanced) evaluation sample.
      {
        std::vector<size_t> sidx(eval_idx.begin(),
                                 eval_idx.begin() + std::min<size_t>(eval_idx.size(), sens_samples.value()));
        BatchLoader sl(*eds, sidx, cfg, batch);
        Batch b;
        while (sl.next(b)) mo.sensitivity_batches.push_back({b.x});
        if (!sl.status().is_ok()) return report_error(sl.status().with_context("--eval"));
      }
      ProgressOptions sp;
      sp.enabled = !a.has("--quiet");
      std::unique_ptr<Progress> sprog;
      mo.progress = [&](size_t done, size_t total) {
        if (!sprog) sprog = std::make_unique<Progress>("sensitivity", total, sp);
        sprog->update(done);
        if (done == total) sprog->finish();
      };
      CandidateEvaluator evaluate = [&](const Model& cand, const std::string& what) -> Result<EvalOutcome> {
        ASSIGN_OR_RETURN(std::vector<float> logits, run_eval(cand, what));
        ASSIGN_OR_RETURN(double v, metric_value(metric, logits, k, kind, eval_y));
        std::vector<int> pred = argmax_rows(logits, k, kind);
        size_t agree = 0;
        for (size_t i = 0; i < pred.size(); ++i) agree += pred[i] == ref_pred[i];
        EvalOutcome ev;
        ev.metric = v;
        ev.agreement = pred.empty() ? 0.0 : static_cast<double>(agree) / pred.size();
        ev.details = {{"agreement_with_fp32", ev.agreement}};
        return ev;
      };
      auto mp = search_mixed_precision(m, plan.value(), cal.value().stats, o, mo, evaluate);
      if (!mp.is_ok()) return report_error(mp.status().with_context("'" + model_path + "'"));
      MixedPrecisionResult& res = mp.value();
      const MixedPrecisionStep& last = res.steps.back();
      nlohmann::json mpj = res.to_json();
      mpj["metric"] = metric;
      mpj["max_drop"] = std::isfinite(max_drop) ? nlohmann::json(max_drop) : nlohmann::json(nullptr);
      mpj["min_agreement"] = min_agreement > 0 ? nlohmann::json(min_agreement) : nlohmann::json(nullptr);
      mpj["fp32_metric"] = ref_metric.value();
      mpj["final_metric"] = last.metric;
      mpj["final_drop"] = last.drop;
      mpj["evaluation"] = {{"dataset", eds->describe()}, {"split", eds->spec().split}, {"samples", eval_idx.size()},
                           {"sensitivity_samples", std::min<size_t>(eval_idx.size(), sens_samples.value())}};
      eval::GateResult gate = eval::apply_gate(policy, gate_report(ref_metric.value(), last.metric));
      mpj["gate"] = gate.to_json();
      mpj["gate"]["approved"] = gate.approved;
      if (!res.within_budget) {
        // No model: the budget only holds with every layer in fp32. The report (when asked)
        // still records the sensitivities and every step.
        nlohmann::json fail{{"model", model_path}, {"output", nullptr}, {"mixed_precision", mpj},
                            {"peak_rss_mib", peak_rss_mib()}};
        if (a.has("--report")) {
          Status st = write_file_atomic(a.get("--report"), fail.dump(2) + "\n");
          if (!st.is_ok()) return report_error(st.with_context("--report"));
        }
        std::fprintf(stderr,
                     "medq: error: the %s drop stays above --max-drop %g%s unless every quantized layer is fp32 "
                     "(best with int8: %+.4f); no model written\n",
                     metric.c_str(), max_drop, min_agreement > 0 ? " or the agreement below --min-agreement" : "",
                     res.steps.front().drop);
        return 1;
      }
      m = std::move(res.model);
      report = std::move(res.qdq_report);
      fp32_fallback = res.fp32_units;
      report["mixed_precision"] = mpj;
      // Per-layer sensitivity beside the ranges: attach to the matching activation/weight entries.
      std::map<std::string, nlohmann::json> by_output;
      for (const auto& sj : mpj["sensitivity"]) by_output[sj["output"].get<std::string>()] = sj;
      for (auto& l : report["layers"]) {
        auto it = by_output.find(l["tensor"].get<std::string>());
        if (it != by_output.end()) l["sensitivity"] = it->second;
      }
      if (fp32_fallback.empty())
        std::printf("mixed precision: every layer int8, %s drop %+.4f within %g\n", metric.c_str(), last.drop, max_drop);
      else
        std::printf("mixed precision: %zu layer(s) kept fp32, %s %.4f (fp32 %.4f, drop %+.4f) within %g:\n",
                    fp32_fallback.size(), metric.c_str(), last.metric, ref_metric.value(), last.drop, max_drop);
      if (min_agreement > 0)
        std::printf("mixed precision: agreement with fp32 %.4f (--min-agreement %g)\n",
                    last.details.value("agreement_with_fp32", 0.0), min_agreement);
      if (report.contains("fallback_weights"))
        std::printf("mixed precision: the fallen-back layers compute in float32 and store %d weight tensor(s) as "
                    "float16\n",
                    report["fallback_weights"].value("converted", 0));
      for (const auto& f : fp32_fallback) {
        const LayerSensitivity* s = nullptr;
        for (const auto& x : res.sensitivity)
          if (x.unit == f) s = &x;
        if (s)
          std::printf("  fp32: %s (rank %d: logits rel. MSE %.3g, %lld/%lld top-1 flips when quantized alone)\n",
                      f.c_str(), s->rank, s->logits_rel_mse, static_cast<long long>(s->flips),
                      static_cast<long long>(s->samples));
      }
    }
    set_quantization_metadata(m, o, plan.value(), cal.value().samples, fp32_fallback);
    report["samples"] = cal.value().samples;
    report["batches"] = cal.value().batches;
    report["histogram_bytes"] = cal.value().histogram_bytes;
    report["calibration_seconds"] = cal.value().seconds;
    report["calibration"] = srep.to_json();
    report["calibration"]["dataset"] = ds->describe();
    report["calibration"]["split"] = spec.split;
    report["calibration"]["samples"] = cal.value().samples;
    report["calibration"]["seconds"] = cal.value().seconds;
    report["calibration"]["histogram_bytes"] = cal.value().histogram_bytes;
    // The output carries the preprocessing and output semantics calibration used.
    record_spec(mspec, &m);
    report["preprocess"] = nlohmann::json::parse(mspec.preprocess_json());
  }
  report["model"] = model_path;
  report["output"] = out_path;
  report["peak_rss_mib"] = peak_rss_mib();

  // Report first (atomic), then the model (checked + atomic); no partial output on failure.
  if (a.has("--report")) {
    Status st = write_file_atomic(a.get("--report"), report.dump(2) + "\n");
    if (!st.is_ok()) return report_error(st.with_context("--report"));
  }
  auto saved = save_model_checked(m, out_path, /*intermediate_value_info=*/false);
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
  std::printf("peak RSS: %.1f MiB\n", peak_rss_mib());
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
                       with_spec_flags({"--calib", "--split", "--label-column", "--samples", "--balance-by", "--seed", "--batch",
                        "--method", "--percentile", "--activations", "--exclude", "--mode", "--report", "--output",
                        "--max-drop", "--min-agreement", "--fallback-weights", "--eval", "--eval-split", "--eval-samples", "--metric", "--sensitivity-samples", "--threads"}),
                       {"--symmetric-activations", "--per-tensor", "--quantize-outputs", "--quiet", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help")) {
    std::fputs(kUsage, stdout);
    std::fputs(spec_override_usage(), stdout);
    return 0;
  }
  if (a.positional.size() != 1) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  return run_quantize(a, excludes);
}

}  // namespace medq::cli
