#include "serve/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace medq::serve {

namespace {
std::mutex g_mu;
LogSink g_sink;

std::string now_iso() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char d[32];
  std::strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
  char b[48];
  std::snprintf(b, sizeof b, "%s.%03dZ", d, ms % 1000);
  return b;
}
}  // namespace

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lk(g_mu);
  g_sink = std::move(sink);
}

void log_event(const std::string& level, const std::string& event, nlohmann::json fields) {
  nlohmann::json j = {{"ts", now_iso()}, {"level", level}, {"event", event}};
  for (auto& [k, v] : fields.items()) j[k] = v;
  // Replace invalid UTF-8 instead of throwing (fields may echo client-sent header values).
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::lock_guard<std::mutex> lk(g_mu);
  if (g_sink) {
    g_sink(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

}  // namespace medq::serve
