// Configuration of `medq serve`: defaults, a JSON or simple-YAML file (eval::parse_simple_yaml:
// nested maps and scalars; lists are written as comma-separated strings) and CLI overrides.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace medq::serve {

struct ServeConfig {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 8000;                 // 0: pick a free port (tests)
  int threads = 0;                 // compute threads per model session (0: all cores)
  int http_threads = 128;          // connection handler threads (one per open keep-alive connection)
  bool tune_kernels = false;       // time oneDNN's convolution implementations per batch size at warm-up
  // Model input overrides for every bundle (flags --color --resize ... --outputs; model_spec.h):
  // applied over each fp32.onnx's metadata, inferred from its input shape where neither says.
  std::map<std::string, std::string> spec_overrides;

  // Dynamic batching (per model).
  int max_batch = 8;               // rows per Session::run
  double max_delay_ms = 3;         // how long the first queued request waits for company
  int queue_capacity = 256;        // queued rows; beyond -> 503 + Retry-After
  double deadline_ms = 10000;      // per-request deadline (queue + compute) -> 504
  int instances = 1;               // batches of a model in flight at once (each on its own thread)
  int64_t batch_decode_max_bytes = 1 << 20;  // larger uploads are decoded on their connection
                                             // thread before queueing (no batch waits on them)

  // Limits.
  int64_t max_body_bytes = 32 << 20;   // 413
  int64_t max_pixels = 40000000;       // decoded width*height (decompression bombs) -> 413
  int max_batch_images = 64;           // images per predict_batch request
  int socket_timeout_s = 30;           // read/write timeout of a connection

  // Security.
  std::map<std::string, std::string> api_keys;  // key name -> lowercase hex SHA-256 of the key
  double rate_limit_rps = 0;                     // per key (or per client address without keys); 0: off
  double rate_limit_burst = 0;                   // bucket size (0: max(1, rps))
  std::vector<std::string> cors_origins;         // exact origins; "*" allows any
  std::string tls_cert, tls_key;                 // both set: HTTPS

  // Model selection and fallback.
  std::string selection = "auto";  // auto | compressed | fp32
  double shadow_fraction = 0;      // fraction of compressed batches also run on fp32
  int shadow_window = 200;         // rows in the disagreement window
  double shadow_threshold = 0.05;  // disagreement rate over a full window that switches to fp32
  bool debug_fail_compressed = false;  // test hook: every compressed run fails

  bool log_requests = true;        // one JSON line per request
};

// Applies the keys of a parsed config object (unknown keys are errors naming the key).
Status apply_config_json(const nlohmann::json& j, ServeConfig* cfg);
// Reads FILE (.json, or the YAML subset otherwise) into cfg.
Status load_config_file(const std::string& path, ServeConfig* cfg);
Status validate_config(const ServeConfig& cfg);

}  // namespace medq::serve
