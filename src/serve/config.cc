#include "serve/config.h"

#include <nlohmann/json.hpp>

#include "core/fileio.h"
#include "eval/gate.h"

namespace medq::serve {

namespace {

using nlohmann::json;

Result<double> num(const json& v, const std::string& key) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    try {
      size_t pos = 0;
      double d = std::stod(v.get<std::string>(), &pos);
      if (pos == v.get<std::string>().size()) return d;
    } catch (...) {
    }
  }
  return invalid_argument("config: '" + key + "' must be a number, got " + v.dump());
}

Result<bool> boolean(const json& v, const std::string& key) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string() && (v == "true" || v == "false")) return v == "true";
  return invalid_argument("config: '" + key + "' must be true or false, got " + v.dump());
}

Result<std::string> str(const json& v, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  return invalid_argument("config: '" + key + "' must be a string, got " + v.dump());
}

// A JSON array of strings or one comma-separated string (the YAML subset has no lists).
Result<std::vector<std::string>> str_list(const json& v, const std::string& key) {
  std::vector<std::string> out;
  auto add = [&](std::string s) {
    size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(s.substr(b, e - b + 1));
  };
  if (v.is_array()) {
    for (const auto& e : v) {
      if (!e.is_string()) return invalid_argument("config: '" + key + "' must list strings");
      add(e.get<std::string>());
    }
    return out;
  }
  if (!v.is_string()) return invalid_argument("config: '" + key + "' must be a list of strings");
  std::string s = v.get<std::string>();
  size_t p = 0;
  while (p <= s.size()) {
    size_t e = s.find(',', p);
    if (e == std::string::npos) e = s.size();
    add(s.substr(p, e - p));
    p = e + 1;
  }
  return out;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

Status apply_config_json(const json& j, ServeConfig* c) {
  if (!j.is_object()) return invalid_argument("config: expected a mapping at the top level");
  for (const auto& [k, v] : j.items()) {
    auto set_num = [&](auto* dst) -> Status {
      ASSIGN_OR_RETURN(double d, num(v, k));
      *dst = static_cast<std::remove_pointer_t<decltype(dst)>>(d);
      return Status::ok();
    };
    if (k == "model_dir") {
      ASSIGN_OR_RETURN(c->model_dir, str(v, k));
    } else if (k == "host") {
      ASSIGN_OR_RETURN(c->host, str(v, k));
    } else if (k == "port") {
      RETURN_IF_ERROR(set_num(&c->port));
    } else if (k == "threads") {
      RETURN_IF_ERROR(set_num(&c->threads));
    } else if (k == "http_threads") {
      RETURN_IF_ERROR(set_num(&c->http_threads));
    } else if (k == "decode_threads" || k == "decode_priority") {
      return invalid_argument("config: '" + k + "' is gone: uploads are decoded on the model's compute threads "
                              "('threads') right before their batch runs");
    } else if (k == "tune_kernels") {
      ASSIGN_OR_RETURN(c->tune_kernels, boolean(v, k));
    } else if (k == "batching") {
      if (!v.is_object()) return invalid_argument("config: 'batching' must be a mapping");
      for (const auto& [bk, bv] : v.items()) {
        std::string key = "batching." + bk;
        ASSIGN_OR_RETURN(double d, num(bv, key));
        if (bk == "max_batch") c->max_batch = static_cast<int>(d);
        else if (bk == "max_delay_ms") c->max_delay_ms = d;
        else if (bk == "queue_capacity") c->queue_capacity = static_cast<int>(d);
        else if (bk == "deadline_ms") c->deadline_ms = d;
        else if (bk == "instances") c->instances = static_cast<int>(d);
        else if (bk == "batch_decode_max_bytes") c->batch_decode_max_bytes = static_cast<int64_t>(d);
        else return invalid_argument("config: unknown key '" + key + "'");
      }
    } else if (k == "limits") {
      if (!v.is_object()) return invalid_argument("config: 'limits' must be a mapping");
      for (const auto& [lk, lv] : v.items()) {
        std::string key = "limits." + lk;
        ASSIGN_OR_RETURN(double d, num(lv, key));
        if (lk == "max_body_bytes") c->max_body_bytes = static_cast<int64_t>(d);
        else if (lk == "max_pixels") c->max_pixels = static_cast<int64_t>(d);
        else if (lk == "max_batch_images") c->max_batch_images = static_cast<int>(d);
        else if (lk == "socket_timeout_s") c->socket_timeout_s = static_cast<int>(d);
        else return invalid_argument("config: unknown key '" + key + "'");
      }
    } else if (k == "api_keys") {
      // name -> sha256 hex of the key (never the key itself).
      if (!v.is_object()) return invalid_argument("config: 'api_keys' must map key names to SHA-256 hex digests");
      for (const auto& [name, h] : v.items()) {
        ASSIGN_OR_RETURN(std::string hs, str(h, "api_keys." + name));
        for (auto& ch : hs) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (!is_hex64(hs))
          return invalid_argument("config: api_keys." + name +
                                  " must be the 64-hex-digit SHA-256 of the key (medq serve --hash-key KEY)");
        c->api_keys[name] = hs;
      }
    } else if (k == "rate_limit") {
      if (!v.is_object()) return invalid_argument("config: 'rate_limit' must be a mapping");
      for (const auto& [rk, rv] : v.items()) {
        std::string key = "rate_limit." + rk;
        ASSIGN_OR_RETURN(double d, num(rv, key));
        if (rk == "rps") c->rate_limit_rps = d;
        else if (rk == "burst") c->rate_limit_burst = d;
        else return invalid_argument("config: unknown key '" + key + "'");
      }
    } else if (k == "cors_origins") {
      ASSIGN_OR_RETURN(c->cors_origins, str_list(v, k));
    } else if (k == "tls") {
      if (!v.is_object()) return invalid_argument("config: 'tls' must be a mapping with cert and key");
      for (const auto& [tk, tv] : v.items()) {
        if (tk == "cert") {
          ASSIGN_OR_RETURN(c->tls_cert, str(tv, "tls.cert"));
        } else if (tk == "key") {
          ASSIGN_OR_RETURN(c->tls_key, str(tv, "tls.key"));
        } else {
          return invalid_argument("config: unknown key 'tls." + tk + "'");
        }
      }
    } else if (k == "selection") {
      ASSIGN_OR_RETURN(c->selection, str(v, k));
    } else if (k == "shadow") {
      if (!v.is_object()) return invalid_argument("config: 'shadow' must be a mapping");
      for (const auto& [sk, sv] : v.items()) {
        std::string key = "shadow." + sk;
        ASSIGN_OR_RETURN(double d, num(sv, key));
        if (sk == "fraction") c->shadow_fraction = d;
        else if (sk == "window") c->shadow_window = static_cast<int>(d);
        else if (sk == "threshold") c->shadow_threshold = d;
        else return invalid_argument("config: unknown key '" + key + "'");
      }
    } else if (k == "debug") {
      if (!v.is_object()) return invalid_argument("config: 'debug' must be a mapping");
      for (const auto& [dk, dv] : v.items()) {
        if (dk != "fail_compressed") return invalid_argument("config: unknown key 'debug." + dk + "'");
        ASSIGN_OR_RETURN(c->debug_fail_compressed, boolean(dv, "debug." + dk));
      }
    } else if (k == "log_requests") {
      ASSIGN_OR_RETURN(c->log_requests, boolean(v, k));
    } else {
      return invalid_argument("config: unknown key '" + k + "'");
    }
  }
  return Status::ok();
}

Status load_config_file(const std::string& path, ServeConfig* cfg) {
  ASSIGN_OR_RETURN(std::string text, read_file(path));
  json j;
  bool is_json = path.size() >= 5 && path.substr(path.size() - 5) == ".json";
  if (is_json) {
    j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return invalid_argument("'" + path + "': not valid JSON");
  } else {
    ASSIGN_OR_RETURN(j, eval::parse_simple_yaml(text, path));
  }
  return apply_config_json(j, cfg).with_context("'" + path + "'");
}

Status validate_config(const ServeConfig& c) {
  if (c.model_dir.empty()) return invalid_argument("no model directory (--model-dir DIR)");
  if (c.port < 0 || c.port > 65535) return invalid_argument("port " + std::to_string(c.port) + " out of range");
  if (c.threads < 0) return invalid_argument("threads must be >= 0");
  if (c.http_threads < 2) return invalid_argument("http_threads must be >= 2");
  if (c.max_batch < 1) return invalid_argument("batching.max_batch must be >= 1");
  if (c.max_delay_ms < 0) return invalid_argument("batching.max_delay_ms must be >= 0");
  if (c.instances < 1 || c.instances > 64) return invalid_argument("batching.instances must be 1..64");
  if (c.batch_decode_max_bytes < 0) return invalid_argument("batching.batch_decode_max_bytes must be >= 0");
  if (c.queue_capacity < 1) return invalid_argument("batching.queue_capacity must be >= 1");
  if (c.deadline_ms <= 0) return invalid_argument("batching.deadline_ms must be > 0");
  if (c.max_body_bytes < 1024) return invalid_argument("limits.max_body_bytes must be >= 1024");
  if (c.max_pixels < 1) return invalid_argument("limits.max_pixels must be >= 1");
  if (c.max_batch_images < 1) return invalid_argument("limits.max_batch_images must be >= 1");
  if (c.socket_timeout_s < 1) return invalid_argument("limits.socket_timeout_s must be >= 1");
  if (c.rate_limit_rps < 0 || c.rate_limit_burst < 0) return invalid_argument("rate_limit values must be >= 0");
  if (c.selection != "auto" && c.selection != "compressed" && c.selection != "fp32")
    return invalid_argument("selection must be auto, compressed or fp32, got '" + c.selection + "'");
  if (c.shadow_fraction < 0 || c.shadow_fraction > 1) return invalid_argument("shadow.fraction must be in [0, 1]");
  if (c.shadow_window < 1) return invalid_argument("shadow.window must be >= 1");
  if (c.shadow_threshold < 0 || c.shadow_threshold > 1) return invalid_argument("shadow.threshold must be in [0, 1]");
  if (c.tls_cert.empty() != c.tls_key.empty()) return invalid_argument("tls needs both cert and key");
  return Status::ok();
}

}  // namespace medq::serve
