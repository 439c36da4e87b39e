// Helpers for the medq serve tests: tiny generated bundles (a 3-class GlobalAveragePool + Gemm
// classifier on 8x8 RGB images), a server on an ephemeral loopback port and a log capture.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../passes/onnx_test_builder.h"
#include "core/fileio.h"
#include "eval/runner.h"
#include "serve/log.h"
#include "serve/server.h"

namespace medq::serve_test {

namespace fs = std::filesystem;
using nlohmann::json;

// The tiny classifier: logits = W * mean_rgb(x) + b (W: 3x3). Preprocessing: RGB 8x8, /255.
inline std::string tiny_model_bytes(const std::vector<float>& w) {
  testing_onnx::OnnxBuilder b;
  b.input("x", {-1, 3, 8, 8}).output("logits");
  b.init("W", Tensor::from_vector(w, {3, 3}));
  b.init("B", Tensor::from_vector(std::vector<float>{0.1f, 0.f, -0.1f}, {3}));
  b.node("GlobalAveragePool", {"x"}, {"p"});
  b.node("Flatten", {"p"}, {"f"});
  auto* g = b.node("Gemm", {"f", "W", "B"}, {"logits"});
  testing_onnx::attr_i(g, "transB", 1);
  auto add_meta = [&](const std::string& k, const std::string& v) {
    auto* m = b.proto().add_metadata_props();
    m->set_key(k);
    m->set_value(v);
  };
  add_meta("labels", R"(["red", "green", "blue"])");
  add_meta("preprocess", R"({"color": "RGB", "resize": [8, 8], "interpolation": "bilinear", "scale": 0.00392156862745098, "mean": [0, 0, 0], "std": [1, 1, 1], "layout": "NCHW"})");
  return b.bytes();
}

// Identity-like weights: the top class is the dominant colour channel.
inline std::vector<float> kAgreeW() { return {4, 0, 0, 0, 4, 0, 0, 0, 4}; }
// Rows rotated: predicts a different class than kAgreeW for every image with a clear top.
inline std::vector<float> kDisagreeW() { return {0, 4, 0, 0, 0, 4, 4, 0, 0}; }

// Writes DIR/<name>/{fp32.onnx, model.onnx, report.json}. compressed: "" (none), "agree",
// "disagree" or "corrupt"; verdict: the report's gate verdict ("" = no report).
inline void write_bundle(const std::string& dir, const std::string& name, const std::string& compressed,
                         const std::string& verdict = "APPROVED") {
  fs::create_directories(fs::path(dir) / name);
  const fs::path d = fs::path(dir) / name;
  ASSERT_TRUE(write_file_atomic((d / "fp32.onnx").string(), tiny_model_bytes(kAgreeW())).is_ok());
  if (compressed.empty()) return;
  std::string cb = compressed == "corrupt"    ? std::string("this is not an ONNX model")
                   : compressed == "disagree" ? tiny_model_bytes(kDisagreeW())
                                              : tiny_model_bytes(kAgreeW());
  ASSERT_TRUE(write_file_atomic((d / "model.onnx").string(), cb).is_ok());
  if (verdict.empty()) return;
  json rep = {{"command", "validate"},
              {"models", {{"candidate", {{"path", "model.onnx"}, {"sha256", eval::sha256_hex(cb)}}}}},
              {"gate", {{"verdict", verdict}, {"rules", json::array()}}}};
  ASSERT_TRUE(write_file_atomic((d / "report.json").string(), rep.dump()).is_ok());
}

inline std::string temp_dir(const std::string& tag) {
  auto p = fs::temp_directory_path() /
           ("medq_serve_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(std::rand()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

inline serve::ServeConfig base_config(const std::string& model_dir) {
  serve::ServeConfig c;
  c.model_dir = model_dir;
  c.host = "127.0.0.1";
  c.port = 0;
  c.threads = 1;
  c.http_threads = 24;
  c.max_batch = 4;
  c.max_delay_ms = 2;
  c.selection = "compressed";  // tests must not depend on the CPU's VNNI
  return c;
}

// Captures log lines for the lifetime of the object.
class LogCapture {
 public:
  LogCapture() {
    serve::set_log_sink([this](const std::string& l) {
      std::lock_guard<std::mutex> lk(mu_);
      lines_.push_back(l);
    });
  }
  ~LogCapture() { serve::set_log_sink(nullptr); }
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> lk(mu_);
    return lines_;
  }
  std::string all() {
    std::string s;
    for (auto& l : lines()) s += l + "\n";
    return s;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

inline std::string png_bytes(const std::string& file = "rgb8.png") {
  auto r = read_file(std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + file);
  EXPECT_TRUE(r.is_ok());
  return r.is_ok() ? r.value() : std::string();
}

inline json body_json(const httplib::Result& r) {
  if (!r) return json();
  return json::parse(r->body, nullptr, false);
}

}  // namespace medq::serve_test
