// Closed-loop HTTP load generator for `medq serve` (and the seeds' FastAPI stack): N clients,
// each with one keep-alive connection, POST a multipart image as fast as answers come back.
// Prints one JSON line: throughput, latency percentiles, error count (any status != 200 or
// transport failure), per-status counts.
//
//   loadgen --port 8000 --path /v1/models/brain/predict --images LIST.txt -c 16 -d 20 [--warmup 3]
//           [--key API_KEY] [--raw]
// Build: g++ -O2 -std=c++17 loadgen.cc $(pkg-config --cflags --libs cpp-httplib) -pthread
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", path = "/v1/models/brain/predict", list, key, field = "image";
  int port = 8000, conc = 1;
  double duration = 10, warmup = 2;
  bool raw = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "loadgen: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--host") host = next();
    else if (a == "--port") port = std::stoi(next());
    else if (a == "--path") path = next();
    else if (a == "--images") list = next();
    else if (a == "-c" || a == "--concurrency") conc = std::stoi(next());
    else if (a == "-d" || a == "--duration") duration = std::stod(next());
    else if (a == "--warmup") warmup = std::stod(next());
    else if (a == "--key") key = next();
    else if (a == "--field") field = next();
    else if (a == "--raw") raw = true;
    else {
      std::fprintf(stderr, "loadgen: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  std::vector<std::string> images;
  std::ifstream lf(list);
  if (!lf) {
    std::fprintf(stderr, "loadgen: cannot read image list '%s'\n", list.c_str());
    return 2;
  }
  for (std::string p; std::getline(lf, p);) {
    if (p.empty()) continue;
    std::ifstream f(p, std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "loadgen: cannot read '%s'\n", p.c_str());
      return 2;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    images.push_back(ss.str());
  }
  if (images.empty()) {
    std::fprintf(stderr, "loadgen: no images in '%s'\n", list.c_str());
    return 2;
  }

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto measure_from = t0 + std::chrono::milliseconds(static_cast<int64_t>(warmup * 1000));
  const auto end = measure_from + std::chrono::milliseconds(static_cast<int64_t>(duration * 1000));
  std::mutex mu;
  std::vector<double> lat;
  std::map<int, long> codes;
  std::map<std::string, long> transport;  // code -1: httplib's error (Read, Write, Connection, ...)
  long errors = 0, ok = 0;
  std::vector<std::thread> ts;
  for (int t = 0; t < conc; ++t)
    ts.emplace_back([&, t] {
      httplib::Client c(host, port);
      c.set_keep_alive(true);
      c.set_tcp_nodelay(true);  // else Nagle + delayed ACK add ~100 ms to every multipart upload
      c.set_read_timeout(60, 0);
      httplib::Headers h;
      if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
      std::vector<double> my;
      std::map<int, long> my_codes;
      std::map<std::string, long> my_transport;
      long my_err = 0, my_ok = 0;
      size_t i = t;
      while (true) {
        auto s = Clock::now();
        if (s >= end) break;
        const std::string& img = images[i++ % images.size()];
        httplib::Result r = raw ? c.Post(path, h, img, "application/octet-stream")
                                : c.Post(path, h, httplib::MultipartFormDataItems{{field, img, "image.jpg", "image/jpeg"}});
        auto e = Clock::now();
        if (s < measure_from) continue;
        int code = r ? r->status : -1;
        my_codes[code]++;
        if (!r) my_transport[httplib::to_string(r.error())]++;
        if (code == 200) {
          my_ok++;
          my.push_back(std::chrono::duration<double, std::milli>(e - s).count());
        } else {
          my_err++;
        }
      }
      std::lock_guard<std::mutex> lk(mu);
      lat.insert(lat.end(), my.begin(), my.end());
      for (auto& [k, v] : my_codes) codes[k] += v;
      for (auto& [k, v] : my_transport) transport[k] += v;
      errors += my_err;
      ok += my_ok;
    });
  for (auto& t : ts) t.join();
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p / 100 * lat.size()))]; };
  std::string cs;
  for (auto& [k, v] : codes) cs += (cs.empty() ? "" : ", ") + std::string("\"") + std::to_string(k) + "\": " + std::to_string(v);
  std::string ts_;
  for (auto& [k, v] : transport) ts_ += (ts_.empty() ? "" : ", ") + std::string("\"") + k + "\": " + std::to_string(v);
  std::printf("{\"concurrency\": %d, \"duration_s\": %.1f, \"ok\": %ld, \"errors\": %ld, \"throughput_rps\": %.2f, "
              "\"p50_ms\": %.2f, \"p95_ms\": %.2f, \"p99_ms\": %.2f, \"codes\": {%s}, \"transport_errors\": {%s}}\n",
              conc, duration, ok, errors, ok / duration, pct(50), pct(95), pct(99), cs.c_str(), ts_.c_str());
  return 0;
}
