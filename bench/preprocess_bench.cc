// Per-image cost of what `medq serve` (and run/eval/quantize) does before the model runs:
// decoding an upload and preprocessing it with the reference models' pipeline (Pillow-exact
// RGB conversion, antialiased bilinear resize to 128x128, /255, mean/std, NCHW).
//
//   ./build/bench/medq_preprocess_bench [--benchmark_filter=...]   (google-benchmark flags)
//
// The allocator is tuned as in the medq CLI (core/alloc.h); run it with
// GLIBC_TUNABLES=glibc.malloc.check=0 (any tunable disables the tuning) to see glibc's defaults.
//
// Inputs: the first 64 test JPEGs of ../shared/data/brain_mri (224x224, RGB and greyscale mixed)
// and of ../shared/data/skin_ham10000 (224x224 RGB), held in memory. Single-threaded.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/alloc.h"
#include "data/image.h"
#include "data/preprocess.h"

namespace {

const std::string kShared = MEDQ_SHARED_DATA;
const char* kPreprocess =
    R"({"color": "RGB", "resize": [128, 128], "interpolation": "bilinear", "scale": 0.00392156862745098, )"
    R"("mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW"})";

// The first n files of a split in a dataset's manifest.csv (path in column 0, split in `split_col`).
std::vector<std::string> load(const std::string& dir, int split_col, size_t n) {
  std::vector<std::string> out;
  std::ifstream m(dir + "/manifest.csv");
  std::string line;
  std::getline(m, line);
  while (out.size() < n && std::getline(m, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> cols;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cols.push_back(c);
    if (int(cols.size()) <= split_col || cols[size_t(split_col)] != "test") continue;
    std::ifstream f(dir + "/" + cols[0], std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return out;
}

const std::vector<std::string>& images(const std::string& which) {
  static const std::vector<std::string> brain = load(kShared + "/brain_mri", 2, 64);
  static const std::vector<std::string> skin = load(kShared + "/skin_ham10000", 8, 64);
  return which == "brain" ? brain : skin;
}

medq::Image decode(const std::string& b) {
  auto r = medq::decode_image_bytes(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "bench");
  if (!r.is_ok()) {
    std::fprintf(stderr, "decode failed: %s\n", r.status().message().c_str());
    std::exit(1);
  }
  return std::move(r.value());
}

// stage: 0 decode, 1 preprocess (decoded beforehand), 2 both.
void run(benchmark::State& state, const std::string& which, int stage) {
  const auto& imgs = images(which);
  if (imgs.empty()) {
    state.SkipWithError(("no images under " + kShared + " (shared data absent)").c_str());
    return;
  }
  const medq::PreprocessConfig cfg = medq::parse_preprocess_json(kPreprocess).value();
  std::vector<medq::Image> decoded;
  if (stage == 1)
    for (const auto& b : imgs) decoded.push_back(decode(b));
  size_t i = 0;
  for (auto _ : state) {
    const size_t k = i++ % imgs.size();
    if (stage == 1) {
      auto v = medq::preprocess_image(decoded[k], cfg);
      benchmark::DoNotOptimize(v.value().data());
    } else {
      medq::Image img = decode(imgs[k]);
      if (stage == 2) {
        auto v = medq::preprocess_image(img, cfg);
        benchmark::DoNotOptimize(v.value().data());
      } else {
        benchmark::DoNotOptimize(img.width);
      }
    }
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
}

}  // namespace

BENCHMARK_CAPTURE(run, brain_decode, std::string("brain"), 0)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, brain_preprocess, std::string("brain"), 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, brain_decode_preprocess, std::string("brain"), 2)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, skin_decode, std::string("skin"), 0)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, skin_preprocess, std::string("skin"), 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, skin_decode_preprocess, std::string("skin"), 2)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  medq::tune_allocator();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
