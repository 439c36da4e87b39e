#include "serve/server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>

#include "serve/handlers.h"
#include "serve/log.h"

namespace medq::serve {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Per-request context: pre-routing, the handler and the logger all run on the connection's
// thread, one request after the other.
struct ReqCtx {
  std::string id, endpoint = "other", model, model_used, client;
  Clock::time_point start;
  int rows = 0;
  // An auth/rate-limit refusal of a request with a body: answered by the route after
  // cpp-httplib has read the body. Answered in the pre-routing hook, the unread body stayed in
  // the connection and was parsed as the next request (one request, two answers: behind a pooling
  // proxy another client's answer could reach the wrong requester); cpp-httplib 0.11 gives the
  // hook no way to close the connection.
  int deferred_status = 0;
  std::string deferred_message, deferred_header, deferred_value;
};
thread_local ReqCtx t_ctx;

const char* kName = R"(([A-Za-z0-9._-]+))";

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& msg) {
  send_json(res, status, error_json(status, msg, t_ctx.id));
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Body bytes received: Content-Length (multipart bodies are parsed into parts, not kept in body).
size_t bytes_in(const httplib::Request& req) {
  const std::string cl = req.get_header_value("Content-Length");
  if (!cl.empty()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(cl.c_str(), &end, 10);
    if (end && *end == '\0') return static_cast<size_t>(v);
  }
  return req.body.size();
}

// A body cpp-httplib will read (it reads none for GET/HEAD/OPTIONS, whatever the headers say).
bool announces_body(const httplib::Request& req) {
  if (req.method != "POST" && req.method != "PUT" && req.method != "PATCH" && req.method != "DELETE") return false;
  const std::string cl = req.get_header_value("Content-Length");
  return (!cl.empty() && cl != "0") || req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
}

// Answers a refused request now (no body) or defers the answer to the route (ReqCtx).
httplib::Server::HandlerResponse refuse(const httplib::Request& req, httplib::Response& res, int status,
                                        const std::string& msg, const std::string& header, const std::string& value) {
  if (announces_body(req)) {
    t_ctx.deferred_status = status;
    t_ctx.deferred_message = msg;
    t_ctx.deferred_header = header;
    t_ctx.deferred_value = value;
    return httplib::Server::HandlerResponse::Unhandled;
  }
  res.set_header(header, value);
  send_error(res, status, msg);
  return httplib::Server::HandlerResponse::Handled;
}

// The deferred refusal of this request, if any (true: answered).
bool answer_deferred(httplib::Response& res) {
  if (!t_ctx.deferred_status) return false;
  res.set_header(t_ctx.deferred_header, t_ctx.deferred_value);
  send_error(res, t_ctx.deferred_status, t_ctx.deferred_message);
  return true;
}

std::string presented_key(const httplib::Request& req) {
  std::string a = req.get_header_value("Authorization");
  if (a.rfind("Bearer ", 0) == 0) return a.substr(7);
  return req.get_header_value("X-API-Key");
}

}  // namespace

Server::Server(ServeConfig cfg)
    : cfg_(std::move(cfg)), keys_(cfg_.api_keys), limiter_(cfg_.rate_limit_rps, cfg_.rate_limit_burst) {}

Server::~Server() { shutdown(); }

std::shared_ptr<Server::Slot> Server::slot(const std::string& name) const {
  std::lock_guard<std::mutex> lk(slots_mu_);
  auto it = slots_.find(name);
  return it == slots_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<Server::Slot>> Server::make_slot(const std::string& name) {
  ASSIGN_OR_RETURN(auto model, ServedModel::load(name, (fs::path(cfg_.model_dir) / name).string(), cfg_, &metrics_));
  auto s = std::make_shared<Slot>();
  s->model = model;
  Batcher::Options bo;
  bo.max_batch = cfg_.max_batch;
  bo.max_delay_ms = cfg_.max_delay_ms;
  bo.queue_capacity = cfg_.queue_capacity;
  bo.instances = cfg_.instances;
  bo.fill_threads = model->threads();  // the model's own OpenMP team decodes its batches
  Shape row(model->input_shape().begin() + 1, model->input_shape().end());
  s->batcher = std::make_unique<Batcher>(
      name, row, bo,
      [model](const Tensor& x) {
        BatchRun br;
        auto r = model->run(x);
        if (!r.is_ok()) {
          br.status = r.status();
          return br;
        }
        br.logits = r.value().logits;
        br.model_used = r.value().model_used;
        br.fallback = r.value().fallback;
        return br;
      },
      &metrics_);
  return s;
}

Status Server::start() {
  RETURN_IF_ERROR(validate_config(cfg_));
  ASSIGN_OR_RETURN(auto names, list_bundles(cfg_.model_dir));
  if (!cfg_.tls_cert.empty()) {
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
    auto s = std::make_unique<httplib::SSLServer>(cfg_.tls_cert.c_str(), cfg_.tls_key.c_str());
    if (!s->is_valid()) return invalid_argument("tls: cannot use cert '" + cfg_.tls_cert + "' / key '" + cfg_.tls_key + "'");
    http_ = std::move(s);
#else
    return unsupported("tls: this build of cpp-httplib has no OpenSSL support");
#endif
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  const int pool = cfg_.http_threads;
  http_->new_task_queue = [pool] { return new httplib::ThreadPool(static_cast<size_t>(pool)); };
  http_->set_payload_max_length(static_cast<size_t>(cfg_.max_body_bytes));
  http_->set_read_timeout(cfg_.socket_timeout_s, 0);
  http_->set_write_timeout(cfg_.socket_timeout_s, 0);
  http_->set_keep_alive_max_count(100000);
  http_->set_keep_alive_timeout(5);
  // Responses go out as header + body writes; without TCP_NODELAY, Nagle holds the body until
  // the client's delayed ACK (tens of ms per keep-alive request).
  http_->set_tcp_nodelay(true);
  install_routes();
  http_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd_ = static_cast<int>(sock);
  });

  if (cfg_.port == 0) {
    port_ = http_->bind_to_any_port(cfg_.host);
    if (port_ <= 0) return io_error("cannot bind " + cfg_.host + " on an ephemeral port");
  } else {
    if (!http_->bind_to_port(cfg_.host, cfg_.port))
      return io_error("cannot bind " + cfg_.host + ":" + std::to_string(cfg_.port) + " (in use or not permitted)");
    port_ = cfg_.port;
  }
  // cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's
  // library). 16 or 64 clients connecting at once overflowed it: the kernel dropped handshakes
  // (TcpExtListenDrops), those clients retried a second later and now and then got no answer at
  // all (the load generator's "Read" errors). listen() again on the bound socket raises it.
  if (listen_fd_ >= 0 && ::listen(listen_fd_, SOMAXCONN) != 0)
    log_event("warn", "listen_backlog", {{"message", std::string("cannot raise the listen backlog: ") + std::strerror(errno)}});
  listen_thread_ = std::thread([this] { http_->listen_after_bind(); });
  log_event("info", "listening", {{"host", cfg_.host}, {"port", port_}, {"tls", !cfg_.tls_cert.empty()},
                                  {"auth", keys_.enabled()}, {"models", names}});
  if (!keys_.enabled()) log_event("warn", "auth_disabled", {{"detail", "no api_keys configured: every client is served"}});

  metrics_.set("medq_ready", {}, 0);
  for (const auto& n : names) {
    auto s = make_slot(n);
    if (!s.is_ok()) {
      shutdown();
      return s.status().with_context("model '" + n + "'");
    }
    std::lock_guard<std::mutex> lk(slots_mu_);
    slots_[n] = s.value();
  }
  ready_ = true;
  metrics_.set("medq_ready", {}, 1);
  log_event("info", "ready", {{"models", names}});
  return Status::ok();
}

void Server::wait() {
  std::unique_lock<std::mutex> lk(shutdown_mu_);
  if (listen_thread_.joinable()) listen_thread_.join();
}

void Server::shutdown() {
  std::lock_guard<std::mutex> lk(shutdown_mu_);
  if (stopped_.exchange(true)) return;
  ready_ = false;
  metrics_.set("medq_ready", {}, 0);
  log_event("info", "shutdown_begin", {});
  // stop() closes the listening socket; listen_after_bind() returns once the connection
  // threads finished their current requests (their batches are still being run below).
  if (http_) http_->stop();
  if (listen_thread_.joinable()) listen_thread_.join();
  std::map<std::string, std::shared_ptr<Slot>> slots;
  {
    std::lock_guard<std::mutex> l2(slots_mu_);
    slots.swap(slots_);
  }
  slots.clear();  // Batcher destructors drain their queues
  log_event("info", "shutdown_complete", {});
}

Status Server::reload(const std::string& name) {
  std::lock_guard<std::mutex> lk(reload_mu_);
  std::vector<std::string> names;
  if (name.empty()) {
    ASSIGN_OR_RETURN(names, list_bundles(cfg_.model_dir));
  } else {
    // Only a bundle the model directory lists (a sub-directory with fp32.onnx): a name such as
    // ".." (from a percent-encoded path) would otherwise load MODEL_DIR/../fp32.onnx.
    ASSIGN_OR_RETURN(std::vector<std::string> bundles, list_bundles(cfg_.model_dir));
    if (std::find(bundles.begin(), bundles.end(), name) == bundles.end())
      return not_found("no bundle '" + name + "' in '" + cfg_.model_dir + "'");
    names.push_back(name);
  }
  for (const auto& n : names) {
    ASSIGN_OR_RETURN(auto s, make_slot(n));
    std::shared_ptr<Slot> old;
    {
      std::lock_guard<std::mutex> l2(slots_mu_);
      old = slots_[n];
      slots_[n] = s;
    }
    // `old` is released here or by the last request still holding it; its Batcher finishes
    // what was queued on it before its thread exits.
    log_event("info", "model_reloaded", {{"model", n}, {"active", s->model->active()}});
  }
  return Status::ok();
}

void Server::answer_bodiless(const httplib::Request& req, httplib::Response& res) {
  static const std::regex load_re(std::string("^/v2/repository/models/") + kName + "/load$");
  std::smatch m;
  if (req.method == "POST" && std::regex_match(req.path, m, load_re)) {
    handle_load(m[1], res);  // a load needs no body
    return;
  }
  t_ctx.endpoint = "empty_body";
  send_error(res, 400,
             "empty request body (no Content-Length): send the image as the body (raw bytes with Content-Type "
             "image/png, image/jpeg or application/dicom, or multipart/form-data), or the JSON tensor for /infer");
}

void Server::handle_load(const std::string& name, httplib::Response& res) {
  t_ctx.endpoint = "repository_load";
  if (answer_deferred(res)) return;
  t_ctx.model = name;
  Status st = reload(t_ctx.model);
  if (!st.is_ok()) {
    send_error(res, http_status_for(st), "reload failed (the previous version keeps serving): " + st.message());
    return;
  }
  auto s = slot(t_ctx.model);
  send_json(res, 200, {{"name", t_ctx.model}, {"loaded", true}, {"active", s ? s->model->active() : ""}});
}

void Server::install_routes() {
  httplib::Server& h = *http_;

  h.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_ctx = ReqCtx();
    t_ctx.start = Clock::now();
    t_ctx.id = make_request_id(req.get_header_value("X-Request-Id"));
    t_ctx.client = req.remote_addr;
    res.set_header("X-Request-Id", t_ctx.id);
    const std::string origin = req.get_header_value("Origin");
    const bool cors_ok = cors_allowed(cfg_.cors_origins, origin);
    if (cors_ok) {
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
      res.set_header("Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    }
    if (req.method == "OPTIONS") {  // CORS preflight: no credentials are sent with it
      t_ctx.endpoint = "preflight";
      if (!cors_ok) {
        send_error(res, 403, "origin not allowed");
        return httplib::Server::HandlerResponse::Handled;
      }
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, X-API-Key, Content-Type, X-Request-Id");
      res.set_header("Access-Control-Max-Age", "600");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.path == "/v2/health/live" || req.path == "/v2/health/ready") return httplib::Server::HandlerResponse::Unhandled;
    // A request with a body method but neither Content-Length nor chunked encoding has an empty
    // body (RFC 9112 6.3); cpp-httplib would read it until the connection closes (a client
    // such as `curl -X POST` then waits for the socket timeout). Answered here at once.
    const bool body_method = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "DELETE";
    const bool no_body = body_method && !req.has_header("Content-Length") &&
                         req.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos;
    if (no_body && !keys_.enabled() && !limiter_.enabled()) {
      answer_bodiless(req, res);
      return httplib::Server::HandlerResponse::Handled;
    }

    std::string who = req.remote_addr;
    if (keys_.enabled()) {
      const std::string key = presented_key(req);
      who = keys_.authenticate(key);
      if (who.empty()) {
        t_ctx.endpoint = "auth";
        if (!key.empty()) {
          const double wait_s = auth_failures_.acquire(req.remote_addr);
          if (wait_s > 0)
            return refuse(req, res, 429, "too many failed authentications from this address", "Retry-After",
                          std::to_string(static_cast<int>(std::ceil(wait_s))));
        }
        return refuse(req, res, 401, key.empty() ? "missing API key (Authorization: Bearer KEY or X-API-Key)" : "invalid API key",
                      "WWW-Authenticate", "Bearer");
      }
      t_ctx.client = who;
    }
    if (limiter_.enabled()) {
      double wait_s = limiter_.acquire(who);
      if (wait_s > 0) {
        t_ctx.endpoint = "rate_limit";
        return refuse(req, res, 429, "rate limit exceeded", "Retry-After",
                      std::to_string(static_cast<int>(std::ceil(wait_s))));
      }
    }
    if (no_body) {
      answer_bodiless(req, res);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  h.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404 && answer_deferred(res)) return httplib::Server::HandlerResponse::Handled;
    const bool form = req.get_header_value("Content-Type") == "application/x-www-form-urlencoded";
    std::string msg = res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                      : res.status == 413 && form
                          ? "form-urlencoded bodies are limited to 8 KiB: send the image as multipart/form-data or "
                            "raw bytes (Content-Type: image/png, image/jpeg, application/dicom)"
                      : res.status == 413 ? "request body larger than limits.max_body_bytes"
                      : res.status == 405 ? "method not allowed"
                                          : "HTTP error " + std::to_string(res.status);
    if (t_ctx.id.empty()) t_ctx.id = make_request_id("");  // rejected before pre-routing (e.g. 413)
    send_json(res, res.status, error_json(res.status, msg, t_ctx.id));
    return httplib::Server::HandlerResponse::Handled;
  }));

  // Counted before the response is written (httplib runs the post-routing handler for every
  // response, errors included), so a client that reads /metrics right after a reply sees it.
  h.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    // During shutdown no keep-alive: a client reusing the connection would send a request that
    // is never read.
    if (stopped_.load()) res.set_header("Connection", "close");
    const double ms = t_ctx.start.time_since_epoch().count() ? ms_since(t_ctx.start) : 0;
    const std::string code = std::to_string(res.status);
    metrics_.inc("medq_requests_total", {{"endpoint", t_ctx.endpoint}, {"code", code}});
    if (res.status >= 400) metrics_.inc("medq_errors_total", {{"code", code}});
    metrics_.observe("medq_request_seconds", {{"endpoint", t_ctx.endpoint}}, ms / 1000);
  });

  h.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const double ms = t_ctx.start.time_since_epoch().count() ? ms_since(t_ctx.start) : 0;
    if (cfg_.log_requests || res.status >= 500) {
      // Metadata only: never the body, file names or image/DICOM content.
      json j = {{"request_id", t_ctx.id}, {"method", req.method}, {"endpoint", t_ctx.endpoint},
                {"status", res.status},   {"ms", std::round(ms * 1000) / 1000}, {"client", t_ctx.client},
                {"bytes_in", bytes_in(req)}};
      if (!t_ctx.model.empty()) j["model"] = t_ctx.model;
      if (!t_ctx.model_used.empty()) j["model_used"] = t_ctx.model_used;
      if (t_ctx.rows) j["images"] = t_ctx.rows;
      log_event(res.status >= 500 ? "error" : "info", "request", j);
    }
    t_ctx = ReqCtx();
  });

  h.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) {
    t_ctx.endpoint = "health_live";
    send_json(res, 200, {{"live", true}});
  });
  h.Get("/v2/health/ready", [this](const httplib::Request&, httplib::Response& res) {
    t_ctx.endpoint = "health_ready";
    send_json(res, ready() ? 200 : 503, {{"ready", ready()}});
  });
  h.Get("/v2", [this](const httplib::Request&, httplib::Response& res) {
    t_ctx.endpoint = "server_metadata";
    send_json(res, 200, {{"name", "medq"}, {"version", MEDQ_SERVE_VERSION}, {"extensions", json::array({"model_repository"})}});
  });
  h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    t_ctx.endpoint = "metrics";
    for (const auto& [n, s] : [&] {
           std::lock_guard<std::mutex> lk(slots_mu_);
           return slots_;
         }())
      metrics_.set("medq_queue_rows", {{"model", n}}, s->batcher->queued_rows());
    res.status = 200;
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });

  auto model_or_404 = [this](const std::string& name, httplib::Response& res) -> std::shared_ptr<Slot> {
    if (answer_deferred(res)) return nullptr;
    t_ctx.model = name;
    auto s = slot(name);
    if (!s) {
      send_error(res, ready() ? 404 : 503, ready() ? "unknown model '" + name + "'" : "models are still loading");
      if (!ready()) res.set_header("Retry-After", "1");
    }
    return s;
  };

  h.Get(std::string("/v2/models/") + kName, [this, model_or_404](const httplib::Request& req, httplib::Response& res) {
    t_ctx.endpoint = "model_metadata";
    auto s = model_or_404(req.matches[1], res);
    if (!s) return;
    const ServedModel& m = *s->model;
    Shape in = m.input_shape();
    in[0] = -1;
    send_json(res, 200,
              {{"name", m.name()},
               {"versions", {"1"}},
               {"platform", "medq_onnx"},
               {"inputs", json::array({{{"name", m.input_name()}, {"datatype", "FP32"}, {"shape", in}}})},
               {"outputs", json::array({{{"name", m.output_name()}, {"datatype", "FP32"}, {"shape", {-1, m.num_classes()}}}})},
               {"parameters",
                {{"labels", m.labels()},
                 {"layout", m.spec().preprocess.layout},
                 {"preprocess", json::parse(m.spec().preprocess_json())},
                 {"outputs", output_kind_name(m.spec().outputs)},
                 {"active", m.active()},
                 {"has_compressed", m.has_compressed()},
                 {"selection_reason", m.selection_reason()}}}});
  });
  h.Get(std::string("/v2/models/") + kName + "/ready",
        [this, model_or_404](const httplib::Request& req, httplib::Response& res) {
          t_ctx.endpoint = "model_ready";
          auto s = model_or_404(req.matches[1], res);
          if (!s) return;
          send_json(res, ready() ? 200 : 503, {{"name", s->model->name()}, {"ready", ready()}});
        });

  // Queues rows on the model's batcher and waits for the answer (503 full, 504 deadline).
  struct Answer {
    bool ok = false;
    BatchResult r;
  };
  // payload: the rows (std::vector<float>) or a FillFn that decodes them on the batcher.
  auto infer = [this](Slot& s, auto payload, int64_t rows, httplib::Response& res) {
    Answer a;
    t_ctx.rows = static_cast<int>(rows);
    const auto deadline = t_ctx.start + std::chrono::microseconds(static_cast<int64_t>(cfg_.deadline_ms * 1000));
    std::future<BatchResult> fut;
    if (!s.batcher->submit(std::move(payload), rows, deadline, &fut)) {
      res.set_header("Retry-After", "1");
      send_error(res, 503, "model '" + s.model->name() + "' queue is full; retry later");
      return a;
    }
    if (fut.wait_until(deadline) != std::future_status::ready) {
      send_error(res, 504, "deadline of " + std::to_string(static_cast<int>(cfg_.deadline_ms)) + " ms exceeded");
      return a;
    }
    a.r = fut.get();
    if (a.r.deadline_exceeded) {
      send_error(res, 504, "deadline of " + std::to_string(static_cast<int>(cfg_.deadline_ms)) + " ms exceeded while queued");
      return a;
    }
    if (a.r.http_error != 0) {  // a bad upload, found while decoding it
      send_error(res, a.r.http_error, a.r.status.message());
      return a;
    }
    if (!a.r.status.is_ok()) {
      send_error(res, 500, "inference failed: " + a.r.status.message());
      return a;
    }
    t_ctx.model_used = a.r.model_used;
    a.ok = true;
    return a;
  };

  // Images of a request: multipart file parts, or the raw body.
  auto uploads = [](const httplib::Request& req) {
    std::vector<std::pair<std::string, const std::string*>> v;  // client file name, bytes
    if (req.is_multipart_form_data()) {
      for (const auto& [field, part] : req.files)
        if (!part.filename.empty() || field == "image" || field == "file" || field == "images")
          v.emplace_back(part.filename.empty() ? field : part.filename, &part.content);
    } else {
      v.emplace_back("", &req.body);
    }
    return v;
  };

  // Decodes one upload into its row; 0 or the HTTP status of a client error (message in *msg).
  // Errors name the part index, never the client's file name (it may carry patient data).
  auto decode_row = [](const ServedModel& m, const std::string& bytes, int64_t index, int64_t max_pixels,
                       float* dst, std::string* msg) {
    const std::string what = "image[" + std::to_string(index) + "]";
    auto img = decode_upload(bytes, what, max_pixels);
    if (!img.is_ok()) {
      *msg = img.status().message();
      return http_status_for(img.status());
    }
    Status st = m.preprocess_into(img.value(), dst);
    if (!st.is_ok()) {
      *msg = st.with_context(what).message();
      return 400;
    }
    return 0;
  };

  // Turns the uploads into a batcher payload, or answers a client error (false). An empty or
  // unrecognised upload is answered here, without queueing. Typical uploads go to the batcher
  // as bytes and are decoded on the model's compute threads when their batch runs
  // (Batcher::FillFn; the bytes are copied: a request answered 504 is gone while its rows may
  // still be queued; the model outlives the closure, a slot's batcher drains its queue before the
  // slot's model is destroyed). Uploads over batching.batch_decode_max_bytes in all (a large
  // photo, a CT slice) are decoded here on the connection thread, so no batch waits on them.
  struct Payload {
    bool deferred = true;
    FillFn fill;
    std::vector<float> rows;
  };
  auto prepare = [this, decode_row](const ServedModel& m,
                                    const std::vector<std::pair<std::string, const std::string*>>& ups,
                                    Payload* out, httplib::Response& res) {
    size_t total = 0;
    for (size_t i = 0; i < ups.size(); ++i) {
      if (Status st = check_upload(*ups[i].second, "image[" + std::to_string(i) + "]"); !st.is_ok()) {
        send_error(res, http_status_for(st), st.message());
        return false;
      }
      total += ups[i].second->size();
    }
    const int64_t max_pixels = cfg_.max_pixels;
    if (static_cast<int64_t>(total) > cfg_.batch_decode_max_bytes) {
      const int64_t row = m.row_elems();
      out->deferred = false;
      out->rows.resize(static_cast<size_t>(row) * ups.size());
      for (size_t i = 0; i < ups.size(); ++i) {
        std::string msg;
        const int code = decode_row(m, *ups[i].second, static_cast<int64_t>(i), max_pixels,
                                    out->rows.data() + i * static_cast<size_t>(row), &msg);
        if (code != 0) {
          send_error(res, code, msg);
          return false;
        }
      }
      return true;
    }
    std::vector<std::string> bytes;
    bytes.reserve(ups.size());
    for (const auto& u : ups) bytes.push_back(*u.second);
    out->fill = [&m, max_pixels, decode_row, bytes = std::move(bytes)](int64_t row, float* dst, std::string* msg) {
      return decode_row(m, bytes[static_cast<size_t>(row)], row, max_pixels, dst, msg);
    };
    return true;
  };
  auto run_payload = [infer](Slot& s, Payload& p, int64_t rows, httplib::Response& res) {
    return p.deferred ? infer(s, std::move(p.fill), rows, res) : infer(s, std::move(p.rows), rows, res);
  };

  h.Post(std::string("/v1/models/") + kName + "/predict",
         [model_or_404, uploads, prepare, run_payload](const httplib::Request& req, httplib::Response& res) {
           t_ctx.endpoint = "predict";
           auto s = model_or_404(req.matches[1], res);
           if (!s) return;
           auto ups = uploads(req);
           if (ups.size() != 1) {
             send_error(res, 400, ups.empty() ? "no image: send it as the body or a multipart 'image' part"
                                              : "predict takes one image; use predict_batch for several");
             return;
           }
           Payload p;
           if (!prepare(*s->model, ups, &p, res)) return;
           Answer a = run_payload(*s, p, 1, res);
           if (!a.ok) return;
           json j = prediction_json(a.r.logits.data(), a.r.classes, s->model->spec().outputs, s->model->labels());
           j["request_id"] = t_ctx.id;
           j["model"] = s->model->name();
           j["model_used"] = a.r.model_used;
           j["fallback"] = a.r.fallback;
           j["timing_ms"] = {{"queue", a.r.queue_ms}, {"decode", a.r.decode_ms}, {"compute", a.r.compute_ms}, {"total", ms_since(t_ctx.start)}};
           j["batch_rows"] = a.r.batch_rows;
           send_json(res, 200, j);
         });

  h.Post(std::string("/v1/models/") + kName + "/predict_batch",
         [this, model_or_404, uploads, prepare, run_payload](const httplib::Request& req, httplib::Response& res) {
           t_ctx.endpoint = "predict_batch";
           auto s = model_or_404(req.matches[1], res);
           if (!s) return;
           if (!req.is_multipart_form_data()) {
             send_error(res, 400, "predict_batch expects multipart/form-data with one file part per image");
             return;
           }
           auto ups = uploads(req);
           if (ups.empty() || static_cast<int>(ups.size()) > cfg_.max_batch_images) {
             send_error(res, ups.empty() ? 400 : 413,
                        "predict_batch takes 1.." + std::to_string(cfg_.max_batch_images) + " images, got " +
                            std::to_string(ups.size()));
             return;
           }
           const int64_t rows = static_cast<int64_t>(ups.size());
           Payload p;
           if (!prepare(*s->model, ups, &p, res)) return;
           Answer a = run_payload(*s, p, rows, res);
           if (!a.ok) return;
           json results = json::array();
           for (int64_t i = 0; i < rows; ++i) {
             json p = prediction_json(a.r.logits.data() + i * a.r.classes, a.r.classes, s->model->spec().outputs,
                                     s->model->labels());
             p["filename"] = ups[i].first;
             results.push_back(p);
           }
           send_json(res, 200,
                     {{"request_id", t_ctx.id},
                      {"model", s->model->name()},
                      {"model_used", a.r.model_used},
                      {"fallback", a.r.fallback},
                      {"results", results},
                      {"timing_ms", {{"queue", a.r.queue_ms}, {"decode", a.r.decode_ms}, {"compute", a.r.compute_ms}, {"total", ms_since(t_ctx.start)}}}});
         });

  h.Post(std::string("/v2/models/") + kName + "/infer",
         [this, model_or_404, infer](const httplib::Request& req, httplib::Response& res) {
           t_ctx.endpoint = "infer";
           auto s = model_or_404(req.matches[1], res);
           if (!s) return;
           const ServedModel& m = *s->model;
           InferInput in;
           ApiError err;
           Shape row(m.input_shape().begin() + 1, m.input_shape().end());
           if (!parse_infer_request(req.body, m.input_name(), row, cfg_.max_batch_images, &in, &err)) {
             send_error(res, err.http, err.message);
             return;
           }
           Answer a = infer(*s, std::move(in.data), in.rows, res);
           if (!a.ok) return;
           json j = infer_response(m.name(), in.id, m.output_name(), a.r.logits, in.rows, a.r.classes, a.r.model_used);
           j["parameters"]["request_id"] = t_ctx.id;
           send_json(res, 200, j);
         });

  h.Post(std::string("/v2/repository/models/") + kName + "/load",
         [this](const httplib::Request& req, httplib::Response& res) { handle_load(req.matches[1], res); });
}

}  // namespace medq::serve
