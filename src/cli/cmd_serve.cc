// `medq serve --model-dir DIR`: the HTTP inference server (see src/serve/). Signals are handled
// synchronously: they are blocked before any thread starts and the main thread sigwait()s:
// SIGTERM/SIGINT -> graceful shutdown (in-flight requests answered), SIGHUP -> reload models.
#include <sched.h>

#include <csignal>
#include <cstdio>

#include "cli/cli.h"
#include "core/alloc.h"
#include "serve/config.h"
#include "serve/log.h"
#include "serve/security.h"
#include "serve/server.h"

namespace medq::cli {

namespace {

const char* kServeUsage =
    "usage: medq serve --model-dir DIR [options]\n"
    "  DIR/<name>/fp32.onnx (required), model.onnx (compressed, optional), report.json (medq validate\n"
    "  report; the compressed model is used only when its gate verdict is APPROVED)\n"
    "  --config FILE        serve.yaml or serve.json (see README 'medq serve'); flags override it\n"
    "  --host H             bind address (default 127.0.0.1)\n"
    "  --port P             port (default 8000; 0 = any free port)\n"
    "  --threads T          compute threads per model (default: all cores)\n"
    "  --max-batch N        dynamic batching: rows per run (default 8)\n"
    "  --max-delay-ms MS    dynamic batching: max wait for a batch to fill (default 3)\n"
    "  --instances N        batches of a model in flight at once, each on its own thread with --threads\n"
    "                       compute threads (default 1; config: batching.instances)\n"
    "  --selection auto|compressed|fp32   (default auto: compressed when approved and the CPU has VNNI)\n"
    "  --tune               pick each convolution's oneDNN implementation by timing, per batch size,\n"
    "                       during the warm-up (slower start, faster serving; config: tune_kernels)\n"
    "  --quiet              no per-request log lines (errors are still logged)\n"
    "  --hash-key KEY       print the SHA-256 to put under api_keys in the config, then exit\n"
    "  the model input overrides below apply to every bundle's fp32.onnx (and its compressed model)\n";

}  // namespace

int cmd_serve(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       with_spec_flags({"--model-dir", "--config", "--host", "--port", "--threads", "--max-batch",
                                        "--max-delay-ms", "--instances", "--selection", "--hash-key"}),
                       {"--quiet", "--tune", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help")) {
    std::printf("%s%s", kServeUsage, spec_override_usage());
    return 0;
  }
  if (a.has("--hash-key")) {
    std::printf("%s\n", serve::hash_api_key(a.get("--hash-key")).c_str());
    return 0;
  }
  if (!a.positional.empty()) return report_error(invalid_argument("unexpected argument '" + a.positional[0] + "'"));

  serve::ServeConfig cfg;
  if (a.has("--config")) {
    Status st = serve::load_config_file(a.get("--config"), &cfg);
    if (!st.is_ok()) return report_error(st);
  }
  if (a.has("--model-dir")) cfg.model_dir = a.get("--model-dir");
  if (a.has("--host")) cfg.host = a.get("--host");
  if (a.has("--selection")) cfg.selection = a.get("--selection");
  if (a.has("--quiet")) cfg.log_requests = false;
  if (a.has("--tune")) cfg.tune_kernels = true;
  for (const auto& [k, v] : spec_overrides(a)) cfg.spec_overrides[k] = v;
  auto port = a.get_int("--port", cfg.port);
  auto threads = a.get_int("--threads", cfg.threads);
  auto max_batch = a.get_int("--max-batch", cfg.max_batch);
  auto delay = a.get_double("--max-delay-ms", cfg.max_delay_ms);
  auto instances = a.get_int("--instances", cfg.instances);
  for (const Status* st : {&port.status(), &threads.status(), &max_batch.status(), &delay.status(), &instances.status()})
    if (!st->is_ok()) return report_error(*st);
  cfg.port = static_cast<int>(port.value());
  cfg.threads = static_cast<int>(threads.value());
  cfg.max_batch = static_cast<int>(max_batch.value());
  cfg.max_delay_ms = delay.value();
  cfg.instances = static_cast<int>(instances.value());
  if (Status st = serve::validate_config(cfg); !st.is_ok()) {
    std::fprintf(stderr, "%s", kServeUsage);
    return report_error(st);
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread exists: all inherit it
  std::signal(SIGPIPE, SIG_IGN);              // a client closing early must not kill the server
  {
    cpu_set_t cs;
    CPU_ZERO(&cs);
    const int cpus = sched_getaffinity(0, sizeof(cs), &cs) == 0 ? CPU_COUNT(&cs) : 2;
    limit_allocator_arenas(cpus);  // reloads: see core/alloc.h
  }

  serve::Server server(cfg);
  Status st = server.start();
  if (!st.is_ok()) return report_error(st);
  std::fprintf(stderr, "medq serve: listening on %s://%s:%d (models in %s)\n", cfg.tls_cert.empty() ? "http" : "https",
               cfg.host.c_str(), server.port(), cfg.model_dir.c_str());
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      serve::log_event("info", "signal", {{"signal", "SIGHUP"}, {"action", "reload"}});
      Status r = server.reload("");
      if (!r.is_ok()) serve::log_event("error", "reload_failed", {{"error", r.message()}});
      continue;
    }
    serve::log_event("info", "signal", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}, {"action", "shutdown"}});
    break;
  }
  server.shutdown();
  return 0;
}

}  // namespace medq::cli
