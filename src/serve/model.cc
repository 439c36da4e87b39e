#include "serve/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fileio.h"
#include "eval/runner.h"
#include "onnx/model_io.h"
#include "serve/log.h"

namespace medq::serve {

namespace fs = std::filesystem;

std::vector<float> to_probabilities(const float* x, int64_t n, OutputKind kind) {
  std::vector<float> p(static_cast<size_t>(classes_of_outputs(n)));
  class_probabilities(x, n, kind, p.data());
  return p;
}

int64_t predicted_class(const float* x, int64_t n, OutputKind kind) {
  std::vector<float> p = to_probabilities(x, n, kind);
  return std::max_element(p.begin(), p.end()) - p.begin();
}

Result<std::vector<std::string>> list_bundles(const std::string& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) return not_found("model directory '" + model_dir + "' does not exist");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(model_dir, ec))
    if (e.is_directory() && fs::exists(e.path() / "fp32.onnx")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  if (names.empty())
    return not_found("model directory '" + model_dir + "' holds no bundle (expected <name>/fp32.onnx)");
  return names;
}

namespace {

Status check_io(const Session& s, const std::string& path) {
  if (s.graph().inputs.size() != 1 || s.graph().outputs.empty())
    return invalid_argument("'" + path + "': medq serve needs a model with exactly one input");
  const Value& in = s.input_value(0);
  if (in.shape.size() != 4 || in.dtype != DataType::kFloat32)
    return invalid_argument("'" + path + "': input '" + in.name + "' must be a float32 image batch [N, C, H, W] or [N, H, W, C]");
  for (int i = 1; i < 4; ++i)
    if (in.shape[i] <= 0)
      return invalid_argument("'" + path + "': input '" + in.name + "' " + shape_str(in.shape) +
                              " needs static channel and spatial dims");
  return Status::ok();
}

Tensor as_f32(const Tensor& t) { return t.dtype() == DataType::kFloat32 ? t : t.cast(DataType::kFloat32); }

Status check_output(const Tensor& y, int64_t rows, const std::string& what) {
  if (y.rank() != 2 || y.dim(0) != rows)
    return internal_error(what + " output has shape " + shape_str(y.shape()) + ", expected [" + std::to_string(rows) +
                          ", classes]");
  return Status::ok();
}

}  // namespace

Result<std::shared_ptr<ServedModel>> ServedModel::load(const std::string& name, const std::string& dir,
                                                       const ServeConfig& cfg, Metrics* metrics) {
  // Loading and warm-up run OpenMP regions (kernel plans, arenas), which give the calling thread
  // an OpenMP pool of its own that lives as long as that thread. libgomp counts every pooled
  // thread, and once there are more than CPUs it cuts the spin of all waiting workers from
  // GOMP_SPINCOUNT to 100 iterations: the batcher's compute threads then sleep and are woken
  // around every barrier (a 2-core server loading on its main thread measured ~35 futex sleeps per
  // int8 batch of 8, 17 context switches per request). A thread that exits releases its pool, so
  // the work runs on one that does; the batcher's thread then owns the only pool.
  Result<std::shared_ptr<ServedModel>> out = internal_error("model load did not run");
  std::thread([&] { out = load_here(name, dir, cfg, metrics); }).join();
  return out;
}

Result<std::shared_ptr<ServedModel>> ServedModel::load_here(const std::string& name, const std::string& dir,
                                                            const ServeConfig& cfg, Metrics* metrics) {
  auto m = std::shared_ptr<ServedModel>(new ServedModel());
  m->name_ = name;
  m->cfg_ = cfg;
  m->metrics_ = metrics;
  SessionOptions so;
  so.num_threads = cfg.threads;
  so.tune_kernels = cfg.tune_kernels;

  const std::string fp32_path = (fs::path(dir) / "fp32.onnx").string();
  ASSIGN_OR_RETURN(Model fp32, load_model(fp32_path));
  auto fs32 = Session::create(fp32, so);
  if (!fs32.is_ok()) return fs32.status().with_context("'" + fp32_path + "'");
  m->fp32_ = std::move(fs32).value();
  RETURN_IF_ERROR(check_io(*m->fp32_, fp32_path));
  const Value& in = m->fp32_->input_value(0);
  m->input_shape_ = in.shape;
  m->input_name_ = in.name;
  m->output_name_ = m->fp32_->output_names()[0];

  // Labels, preprocessing and output semantics as `medq run` resolves them.
  auto spec = resolve_model_spec(fp32, cfg.spec_overrides, fp32_path);
  if (!spec.is_ok()) return spec.status();
  m->spec_ = spec.value();
  RETURN_IF_ERROR(m->spec_.require_image_input());
  if (!m->spec_.has_preprocess_metadata && cfg.spec_overrides.empty())
    log_event("warn", "preprocess_assumed", {{"model", name}, {"message", m->spec_.assumption_warning()}});
  m->labels_ = m->spec_.labels;
  m->pre_ = m->spec_.preprocess;
  RETURN_IF_ERROR(validate_preprocess_config(m->pre_).with_context("'" + fp32_path + "'"));

  // Warm-up: plans + arenas for batch 1 and max_batch (with tune_kernels: every batch size the
  // batcher can form, so no request pays for tuning); also yields the class count.
  std::vector<int64_t> warm_rows{1, cfg.max_batch};
  if (cfg.tune_kernels)
    for (int64_t r = 2; r < cfg.max_batch; ++r) warm_rows.push_back(r);
  auto warm = [&](const Session& s, const std::string& what) -> Status {
    for (int64_t rows : warm_rows) {
      Tensor x = Tensor::zeros(DataType::kFloat32, {rows, in.shape[1], in.shape[2], in.shape[3]});  // the model's own layout
      auto r = s.run({x});
      if (!r.is_ok()) return r.status().with_context(what + " warm-up");
      Tensor y = as_f32(r.value()[0]);
      RETURN_IF_ERROR(check_output(y, rows, what));
      if (m->num_classes_ == 0) m->num_classes_ = y.dim(1);
      if (y.dim(1) != m->num_classes_)
        return invalid_argument(what + " has " + std::to_string(y.dim(1)) + " classes, fp32.onnx has " +
                                std::to_string(m->num_classes_));
    }
    return Status::ok();
  };
  RETURN_IF_ERROR(warm(*m->fp32_, "'" + fp32_path + "'"));
  if (!m->labels_.empty() && static_cast<int64_t>(m->labels_.size()) != classes_of_outputs(m->num_classes_))
    return invalid_argument("'" + fp32_path + "': " + std::to_string(m->labels_.size()) + " labels for " +
                            std::to_string(classes_of_outputs(m->num_classes_)) + " classes (" +
                            std::to_string(m->num_classes_) + " output values)");

  // The compressed model: only when it exists, the selection allows it and the report approves it.
  const std::string comp_path = (fs::path(dir) / "model.onnx").string();
  const std::string report_path = (fs::path(dir) / "report.json").string();
  auto decide = [&]() -> std::string {  // "" = use it; else why not
    if (!fs::exists(comp_path)) return "no compressed model (model.onnx)";
    if (cfg.selection == "fp32") return "selection: fp32";
    if (cfg.selection == "auto" && !cpu_has_vnni()) return "CPU has no VNNI (avx512_vnni/avx_vnni)";
    auto text = read_file(report_path);
    if (!text.is_ok()) return "no validation report (report.json)";
    auto rep = nlohmann::json::parse(text.value(), nullptr, false);
    if (rep.is_discarded()) return "report.json is not valid JSON";
    const auto verdict = rep.value("/gate/verdict"_json_pointer, std::string());
    if (verdict != "APPROVED") return "validation report verdict is '" + verdict + "', not APPROVED";
    const auto want = rep.value("/models/candidate/sha256"_json_pointer, std::string());
    if (!want.empty()) {
      auto have = eval::sha256_file(comp_path);
      if (!have.is_ok() || have.value() != want) return "model.onnx does not match the report's candidate sha256";
    }
    return "";
  };
  m->reason_ = decide();
  if (m->reason_.empty()) {
    Status st = [&]() -> Status {
      ASSIGN_OR_RETURN(Model cm, load_model(comp_path));
      auto cs = Session::create(cm, so);
      if (!cs.is_ok()) return cs.status();
      RETURN_IF_ERROR(check_io(*cs.value(), comp_path));
      if (cs.value()->input_value(0).shape != in.shape) return invalid_argument("input shape differs from fp32.onnx");
      RETURN_IF_ERROR(warm(*cs.value(), "'" + comp_path + "'"));
      m->compressed_ = std::move(cs).value();
      return Status::ok();
    }();
    if (st.is_ok()) {
      m->use_compressed_ = true;
      m->reason_ = "compressed model approved by report.json" +
                   std::string(cfg.selection == "auto" ? " and CPU has VNNI" : " (selection: compressed)");
    } else {
      m->reason_ = "compressed model failed to load: " + st.message();
      if (metrics) metrics->inc("medq_fallbacks_total", {{"model", name}, {"reason", "load"}});
      log_event("warn", "compressed_load_failed", {{"model", name}, {"error", st.message()}});
    }
  }
  if (metrics) {
    metrics->set("medq_model_active", {{"model", name}, {"variant", "compressed"}}, m->use_compressed_ ? 1 : 0);
    metrics->set("medq_model_active", {{"model", name}, {"variant", "fp32"}}, m->use_compressed_ ? 0 : 1);
  }
  log_event("info", "model_loaded", {{"model", name}, {"active", m->active()}, {"reason", m->reason_},
                                     {"input", shape_str(in.shape)}, {"classes", m->num_classes_}});
  return m;
}

Status ServedModel::preprocess_into(const Image& img, float* dst) const {
  return preprocess_image_into(img, pre_, dst, static_cast<size_t>(row_elems()));
}

void ServedModel::switch_to_fp32(const std::string& why) {
  if (use_compressed_.exchange(false)) {
    {
      std::lock_guard<std::mutex> lk(reason_mu_);
      reason_ = "switched to fp32: " + why;
    }
    if (metrics_) {
      metrics_->inc("medq_model_switches_total", {{"model", name_}, {"reason", why}});
      metrics_->set("medq_model_active", {{"model", name_}, {"variant", "compressed"}}, 0);
      metrics_->set("medq_model_active", {{"model", name_}, {"variant", "fp32"}}, 1);
    }
    log_event("warn", "model_switched", {{"model", name_}, {"to", "fp32"}, {"reason", why}});
  }
}

void ServedModel::record_shadow(const Tensor& a, const Tensor& b) {
  const int64_t rows = a.dim(0), n = a.dim(1);
  int disagree_now = 0;
  std::lock_guard<std::mutex> lk(shadow_mu_);
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.data<float>() + r * n;
    const float* y = b.data<float>() + r * n;
    bool differ = predicted_class(x, n, spec_.outputs) != predicted_class(y, n, spec_.outputs);
    disagree_now += differ;
    shadow_window_.push_back(differ);
    shadow_disagree_ += differ;
    if (static_cast<int>(shadow_window_.size()) > cfg_.shadow_window) {
      shadow_disagree_ -= shadow_window_.front();
      shadow_window_.pop_front();
    }
  }
  if (metrics_) {
    metrics_->inc("medq_shadow_rows_total", {{"model", name_}}, static_cast<double>(rows));
    if (disagree_now) metrics_->inc("medq_shadow_disagreements_total", {{"model", name_}}, disagree_now);
  }
  if (static_cast<int>(shadow_window_.size()) >= cfg_.shadow_window &&
      static_cast<double>(shadow_disagree_) / shadow_window_.size() > cfg_.shadow_threshold)
    switch_to_fp32("shadow_disagreement");
}

Result<RunOutput> ServedModel::run(const Tensor& x) {
  const int64_t rows = x.dim(0);
  RunOutput out;
  if (compressed_ && use_compressed_.load()) {
    Result<std::vector<Tensor>> r =
        cfg_.debug_fail_compressed ? Result<std::vector<Tensor>>(internal_error("debug.fail_compressed is set"))
                                   : compressed_->run({x});
    Status st = r.is_ok() ? check_output(as_f32(r.value()[0]), rows, "compressed model") : r.status();
    if (st.is_ok()) {
      out.logits = as_f32(r.value()[0]);
      out.model_used = "compressed";
      bool shadow = false;
      if (cfg_.shadow_fraction > 0) {
        std::lock_guard<std::mutex> lk(shadow_mu_);
        shadow_acc_ += cfg_.shadow_fraction;
        if (shadow_acc_ >= 1 - 1e-9) {
          shadow_acc_ -= 1;
          shadow = true;
        }
      }
      if (shadow) {
        // The answer stays the compressed one; the fp32 run only feeds the disagreement window.
        auto ref = fp32_->run({x});
        if (ref.is_ok() && check_output(as_f32(ref.value()[0]), rows, "fp32").is_ok())
          record_shadow(out.logits, as_f32(ref.value()[0]));
      }
      return out;
    }
    if (metrics_) metrics_->inc("medq_fallbacks_total", {{"model", name_}, {"reason", "run"}});
    log_event("error", "compressed_run_failed", {{"model", name_}, {"error", st.message()}});
    switch_to_fp32("run_error");
    out.fallback = true;
  }
  auto r = fp32_->run({x});
  if (!r.is_ok()) return r.status();
  out.logits = as_f32(r.value()[0]);
  RETURN_IF_ERROR(check_output(out.logits, rows, "fp32 model"));
  out.model_used = "fp32";
  return out;
}

}  // namespace medq::serve
