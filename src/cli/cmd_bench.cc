// `medq bench MODEL [--batch N] [--threads T]`: latency (median, p95) and
// throughput on random inputs, peak resident memory, and with --profile the
// time per op type and per node. With --images, every timed batch is first decoded and
// preprocessed from real image files (held in memory) on the same threads, as `medq serve`
// does: the offline pipeline a server can at best reach.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "cli/cli.h"
#include "core/fileio.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq::cli {

namespace {

const char* kBenchUsage =
    "usage: medq bench MODEL.onnx [options]\n"
    "  --batch N        batch size for a dynamic first axis (default 1)\n"
    "  --threads T      worker threads (default: all cores)\n"
    "  --warmup W       untimed runs first (default 3)\n"
    "  --iters I        timed runs (default: as many as fit in --min-time, at least 10)\n"
    "  --min-time S     seconds of timed runs when --iters is absent (default 3)\n"
    "  --shape d0,d1..  input shape when the model has symbolic dims other than batch\n"
    "  --profile        print time per op type and the slowest nodes\n"
    "  --backend B      restrict kernels to one backend (ref|dnnl)\n"
    "  --tune           pick each convolution's oneDNN implementation by timing the candidates on\n"
    "                   the first run (slower first run, reported as first_run_ms)\n"
    "  --layout L       activation layout between oneDNN kernels: auto (default: per model and\n"
    "                   CPU), nhwc, nChw8c, nChw16c or plain\n"
    "  --images LIST    time decode + preprocessing + run per batch: LIST is a text file with one\n"
    "                   image path (PNG/JPEG/DICOM) per line, read into memory first; the model's\n"
    "                   'preprocess' metadata applies, images are decoded on the --threads threads;\n"
    "                   the overrides of `medq run` apply (--color --resize --interpolation --scale\n"
    "                   --mean --std; --input-layout NCHW|NHWC for the image layout)\n"
    "  --json           machine-readable output\n";

// The images of --images, in memory, and their preprocessing.
struct ImageFeed {
  std::vector<std::string> names, bytes;
  PreprocessConfig cfg;
  size_t next = 0;
};

Result<ImageFeed> load_feed(const std::string& list, const Model& m, const Args& a) {
  ImageFeed f;
  ASSIGN_OR_RETURN(std::string text, read_file(list));
  size_t p = 0;
  while (p < text.size()) {
    size_t e = text.find('\n', p);
    if (e == std::string::npos) e = text.size();
    std::string line = text.substr(p, e - p);
    p = e + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    auto b = read_file(line);
    if (!b.is_ok()) return b.status().with_context("--images '" + list + "'");
    f.names.push_back(line);
    f.bytes.push_back(std::move(b.value()));
  }
  if (f.bytes.empty()) return invalid_argument("--images '" + list + "': no image paths in it");
  if (m.graph.inputs.size() != 1) return invalid_argument("--images needs a single-input model");
  // --layout is bench's activation layout here; the image layout override is --input-layout.
  SpecOverrides ov = spec_overrides(a);
  ov.erase("layout");
  if (a.has("--input-layout")) ov["layout"] = a.get("--input-layout");
  ASSIGN_OR_RETURN(ModelSpec spec, resolve_model_spec(m, ov, m.source_path));
  RETURN_IF_ERROR(spec.require_image_input());
  spec.warn_assumptions(a.has("--quiet"));
  f.cfg = spec.preprocess;
  if (f.cfg.resize_w <= 0)
    return invalid_argument("--images: the model input has no fixed size and no 'preprocess' resize is recorded; pass --resize W,H");
  return f;
}

// Decodes and preprocesses the next rows images into x ([rows, ...] float32), in parallel.
Status fill_from_images(ImageFeed& f, Tensor& x, int threads) {
  const int64_t rows = x.dim(0), row = x.numel() / rows;
  const size_t first = f.next;
  f.next += static_cast<size_t>(rows);
  std::vector<Status> st(static_cast<size_t>(rows));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t r = 0; r < rows; ++r) {
    const size_t i = (first + static_cast<size_t>(r)) % f.bytes.size();
    const std::string& b = f.bytes[i];
    auto img = decode_image_bytes(reinterpret_cast<const uint8_t*>(b.data()), b.size(), f.names[i]);
    st[static_cast<size_t>(r)] = img.is_ok() ? preprocess_image_into(img.value(), f.cfg, x.data<float>() + r * row,
                                                                    static_cast<size_t>(row)).with_context(f.names[i])
                                             : img.status();
  }
  for (const Status& s : st) RETURN_IF_ERROR(s);
  return Status::ok();
}

// Peak resident set size of this process in MiB (VmHWM).
double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  double pos = q * (v.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

Result<Tensor> random_input(const Value& v, int64_t batch, const std::string& shape_flag, std::mt19937& rng) {
  Shape s = v.shape;
  if (!shape_flag.empty()) {
    s.clear();
    size_t p = 0;
    while (p < shape_flag.size()) {
      size_t e = shape_flag.find(',', p);
      if (e == std::string::npos) e = shape_flag.size();
      try {
        s.push_back(std::stoll(shape_flag.substr(p, e - p)));
      } catch (const std::exception&) {
        return invalid_argument("--shape: '" + shape_flag + "' is not a comma-separated list of integers");
      }
      p = e + 1;
    }
  } else {
    if (!v.has_shape) return invalid_argument("input '" + v.name + "' has no static shape; pass --shape");
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] >= 0) continue;
      if (i == 0) {
        s[i] = batch;
        continue;
      }
      return invalid_argument("input '" + v.name + "' dim " + std::to_string(i) + " is symbolic ('" +
                              (i < v.dim_params.size() ? v.dim_params[i] : std::string("?")) + "'); pass --shape");
    }
    if (!s.empty() && v.shape[0] >= 0 && batch != 1 && v.shape[0] != batch)
      return invalid_argument("input '" + v.name + "' has a fixed batch of " + std::to_string(v.shape[0]) +
                              "; --batch " + std::to_string(batch) + " is not possible");
  }
  Tensor t(v.dtype, s);
  int64_t n = t.numel();
  switch (v.dtype) {
    case DataType::kFloat32: {
      std::normal_distribution<float> d(0.f, 1.f);
      float* p = t.data<float>();
      for (int64_t i = 0; i < n; ++i) p[i] = d(rng);
      break;
    }
    case DataType::kInt64: {
      int64_t* p = t.data<int64_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = rng() % 2;
      break;
    }
    default:
      std::memset(t.raw(), 0, t.nbytes());
  }
  return t;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       with_spec_flags({"--batch", "--threads", "--warmup", "--iters", "--min-time", "--shape",
                                        "--backend", "--layout", "--images", "--input-layout"}),
                       {"--profile", "--json", "--tune", "--help", "--quiet"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help") || a.positional.size() != 1) {
    std::fprintf(a.has("--help") ? stdout : stderr, "%s", kBenchUsage);
    return a.has("--help") ? 0 : 2;
  }
  auto batch = a.get_int("--batch", 1);
  auto threads = a.get_int("--threads", 0);
  auto warmup = a.get_int("--warmup", 3);
  auto iters = a.get_int("--iters", 0);
  auto min_time = a.get_double("--min-time", 3.0);
  for (auto* r : {&batch, &threads, &warmup, &iters})
    if (!r->is_ok()) return report_error(r->status());
  if (!min_time.is_ok()) return report_error(min_time.status());
  if (batch.value() < 1 || threads.value() < 0 || warmup.value() < 0 || iters.value() < 0)
    return report_error(invalid_argument("--batch must be >= 1; --threads, --warmup, --iters >= 0"));

  double rss_before_load = peak_rss_mib();
  auto mr = load_model(a.positional[0]);
  if (!mr.is_ok()) return report_error(mr.status());
  SessionOptions so;
  so.num_threads = static_cast<int>(threads.value());
  so.tune_kernels = a.has("--tune");
  if (a.has("--layout")) so.layout = a.get("--layout");
  if (a.has("--backend")) so.backends = {a.get("--backend"), "ref"};
  auto t0 = std::chrono::steady_clock::now();
  auto sr = Session::create(mr.value(), so);
  if (!sr.is_ok()) return report_error(sr.status().with_context(a.positional[0]));
  double create_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  Session& sess = *sr.value();
  std::optional<ImageFeed> feed;
  if (a.has("--images")) {
    auto f = load_feed(a.get("--images"), mr.value(), a);
    if (!f.is_ok()) return report_error(f.status().with_context(a.positional[0]));
    feed = std::move(f.value());
  }
  // The loaded Model is no longer needed by the caller: the session keeps its own copy.
  mr = Result<Model>(invalid_argument("released"));

  std::mt19937 rng(42);
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < sess.graph().inputs.size(); ++i) {
    auto t = random_input(sess.input_value(i), batch.value(), a.get("--shape"), rng);
    if (!t.is_ok()) return report_error(t.status());
    inputs.push_back(std::move(t.value()));
  }
  if (feed && (inputs.size() != 1 || inputs[0].dtype() != DataType::kFloat32 || inputs[0].rank() < 2))
    return report_error(invalid_argument(a.positional[0] + ": --images needs one float32 [N, ...] input"));
  auto fill = [&]() -> Status { return feed ? fill_from_images(*feed, inputs[0], sess.num_threads()) : Status::ok(); };
  double first_run_ms = 0;  // the first run of the session (warm-up or, with --warmup 0, timed)
  for (int64_t i = 0; i < warmup.value(); ++i) {
    if (Status st = fill(); !st.is_ok()) return report_error(st);
    auto tw = std::chrono::steady_clock::now();
    auto r = sess.run(inputs);
    if (!r.is_ok()) return report_error(r.status().with_context(a.positional[0]));
    if (i == 0) first_run_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - tw).count();
  }
  std::vector<double> ms, decode_ms;  // ms: per batch, decode included with --images
  auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0;; ++i) {
    if (iters.value() > 0 && i >= iters.value()) break;
    if (iters.value() == 0 && i >= 10 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= min_time.value())
      break;
    auto t0b = std::chrono::steady_clock::now();
    if (Status st = fill(); !st.is_ok()) return report_error(st);
    auto t1 = std::chrono::steady_clock::now();
    auto r = sess.run(inputs);
    auto t2 = std::chrono::steady_clock::now();
    if (!r.is_ok()) return report_error(r.status());
    ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0b).count());
    if (feed) decode_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0b).count());
    if (warmup.value() == 0 && i == 0) first_run_ms = ms[0];
  }
  double med = percentile(ms, 0.5), p95 = percentile(ms, 0.95);
  double mean = 0;
  for (double v : ms) mean += v;
  mean /= std::max<size_t>(1, ms.size());
  int64_t b = inputs.empty() || inputs[0].rank() == 0 ? 1 : inputs[0].dim(0);
  double ips = b * 1000.0 / med;
  double rss = peak_rss_mib();
  MemoryPlanInfo plan = sess.last_plan_info();

  // Per-op profile: a few extra runs with timing per node.
  std::map<std::string, double> by_op;
  std::vector<NodeProfile> nodes;
  if (a.has("--profile")) {
    RunStats stats;
    const int prof_runs = 5;
    for (int i = 0; i < prof_runs; ++i) {
      auto r = sess.run(inputs, &stats);
      if (!r.is_ok()) return report_error(r.status());
    }
    nodes = stats.nodes;
    for (auto& n : nodes) {
      n.total_ms /= prof_runs;
      by_op[n.op_type + " (" + n.backend + ")"] += n.total_ms;
    }
    std::sort(nodes.begin(), nodes.end(), [](auto& l, auto& r) { return l.total_ms > r.total_ms; });
  }

  if (a.has("--json")) {
    nlohmann::json j = {{"model", a.positional[0]},  {"batch", b},
                        {"threads", sess.num_threads()}, {"iterations", ms.size()},
                        {"median_ms", med},          {"p95_ms", p95},
                        {"mean_ms", mean},           {"throughput_ips", ips},
                        {"peak_rss_mib", rss},       {"rss_before_load_mib", rss_before_load},
                        {"session_create_ms", create_ms}, {"first_run_ms", first_run_ms}, {"tuned", so.tune_kernels}, {"layout", sess.activation_layout()}, {"arena_bytes", plan.arena_bytes},
                        {"naive_intermediate_bytes", plan.naive_bytes}};
    if (feed) {
      j["images"] = a.get("--images");
      j["decode_median_ms"] = percentile(decode_ms, 0.5);
    }
    if (!by_op.empty()) j["profile_ms_by_op"] = by_op;
    if (!nodes.empty()) {
      nlohmann::json jn = nlohmann::json::array();
      for (auto& n : nodes) jn.push_back({{"name", n.name}, {"op_type", n.op_type}, {"backend", n.backend}, {"ms", n.total_ms}});
      j["profile_nodes"] = jn;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model       %s\n", a.positional[0].c_str());
  std::printf("batch       %lld   threads %d   iterations %zu\n", static_cast<long long>(b), sess.num_threads(), ms.size());
  std::printf("latency     median %.3f ms   p95 %.3f ms   mean %.3f ms\n", med, p95, mean);
  std::printf("throughput  %.1f inferences/s%s\n", ips, feed ? " (decode + preprocessing + run)" : "");
  if (feed)
    std::printf("images      %zu from %s; decode + preprocessing median %.3f ms per batch\n", feed->bytes.size(),
                a.get("--images").c_str(), percentile(decode_ms, 0.5));
  std::printf("layout      %s activations between oneDNN kernels\n", sess.activation_layout().c_str());
  std::printf("memory      peak RSS %.1f MiB; activation arena %.1f MiB (%.1f MiB without reuse)\n", rss,
              plan.arena_bytes / 1048576.0, plan.naive_bytes / 1048576.0);
  std::printf("setup       session create %.1f ms, first run %.1f ms%s\n", create_ms, first_run_ms,
              so.tune_kernels ? " (incl. kernel tuning)" : "");
  if (a.has("--profile")) {
    double total = 0;
    for (auto& [k, v] : by_op) total += v;
    std::vector<std::pair<std::string, double>> ops(by_op.begin(), by_op.end());
    std::sort(ops.begin(), ops.end(), [](auto& l, auto& r) { return l.second > r.second; });
    std::printf("profile (per run, %.3f ms in kernels):\n", total);
    for (auto& [k, v] : ops) std::printf("  %-32s %8.3f ms  %5.1f%%\n", k.c_str(), v, 100 * v / std::max(total, 1e-9));
    std::printf("slowest nodes:\n");
    for (size_t i = 0; i < nodes.size() && i < 10; ++i)
      std::printf("  %-40s %-12s %8.3f ms\n", nodes[i].name.c_str(), nodes[i].op_type.c_str(), nodes[i].total_ms);
  }
  return 0;
}

}  // namespace medq::cli
