// The `medq serve` HTTP server: routes (v1 predict, KServe v2, /metrics, repository reload),
// auth + rate limiting + CORS in a pre-routing hook, one Batcher per model, JSON access logs,
// graceful shutdown (stop accepting, finish in-flight requests, drain batch queues).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.h"
#include "serve/batcher.h"
#include "serve/config.h"
#include "serve/metrics.h"
#include "serve/model.h"
#include "serve/security.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace medq::serve {

class Server {
 public:
  explicit Server(ServeConfig cfg);
  ~Server();

  // Binds host:port (port 0: an ephemeral port), starts accepting on a background thread
  // (health/live answers at once; ready stays false) and loads + warms up every bundle.
  // Errors: bad config, no bundles, a bundle that fails to load, port in use.
  Status start();
  int port() const { return port_; }
  bool ready() const { return ready_.load(); }
  // Blocks until shutdown() finished.
  void wait();
  // Graceful: not ready, stop accepting, answer every in-flight request, drain queues. Idempotent.
  void shutdown();
  // Reloads one model (or all with name ""): the new version is loaded and warmed up before it
  // replaces the old one; requests already queued on the old one are still answered by it.
  Status reload(const std::string& name);

  Metrics& metrics() { return metrics_; }
  const ServeConfig& config() const { return cfg_; }

  struct Slot {
    std::shared_ptr<ServedModel> model;
    std::unique_ptr<Batcher> batcher;
  };
  std::shared_ptr<Slot> slot(const std::string& name) const;

 private:
  Result<std::shared_ptr<Slot>> make_slot(const std::string& name);
  void install_routes();
  // POST /v2/repository/models/NAME/load.
  void handle_load(const std::string& name, httplib::Response& res);
  // A body-method request without Content-Length or chunked encoding (its body is empty):
  // a load is run, anything else gets its 400 at once.
  void answer_bodiless(const httplib::Request& req, httplib::Response& res);

  ServeConfig cfg_;
  Metrics metrics_;
  KeyStore keys_;
  RateLimiter limiter_;
  // Failed authentications per client address (wrong or missing key): 10 at once, then one per
  // second; beyond that 429, so keys cannot be guessed at the server's full request rate. A
  // correct key is never throttled by it.
  RateLimiter auth_failures_{1.0, 10.0};
  std::unique_ptr<httplib::Server> http_;
  std::thread listen_thread_;
  int port_ = 0;
  int listen_fd_ = -1;  // the listening socket (its backlog is raised after bind)
  std::atomic<bool> ready_{false}, stopped_{false};
  std::mutex shutdown_mu_, reload_mu_;
  mutable std::mutex slots_mu_;
  std::map<std::string, std::shared_ptr<Slot>> slots_;
};

}  // namespace medq::serve
