// `medq preprocess DATA --model M.onnx -o OUT.npy`: decodes and preprocesses every image of a
// dataset exactly as `medq eval` / `medq run` do (the model's metadata "preprocess", same
// BatchLoader) and writes them as one float32 .npy batch, plus a CSV of the samples in row
// order. This lets another runtime (ONNX Runtime, PyTorch) be fed byte-identical inputs, so a
// disagreement between engines can only come from the engines.
//
// The .npy is streamed batch by batch into a temporary file next to OUT and renamed at the end:
// memory stays bounded whatever the dataset size and a failure never leaves a partial file.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "cli/cli.h"
#include "core/fileio.h"
#include "data/dataset.h"
#include "data/preprocess.h"
#include "onnx/model_io.h"

namespace medq::cli {

namespace {

const char* kPreprocessUsage =
    "usage: medq preprocess DATA --model MODEL.onnx -o OUT.npy [options]\n"
    "  DATA                 image folder, CSV manifest or MedMNIST .npz\n"
    "  --model M.onnx       model whose metadata 'preprocess' (and input size) defines the pipeline\n"
    "  -o, --output OUT.npy float32 batch [N,C,H,W] (or [N,H,W,C] for NHWC), rows in dataset order\n"
    "  --labels-out L.csv   one row per sample: index,id,path,label,label_index (label_index = the\n"
    "                       label's position in the model's 'labels', empty when not listed)\n"
    "  --split S            dataset split (default 'test'; 'all' = every sample)\n"
    "  --label-column C     manifest column holding the label (default 'label')\n"
    "  --limit N            only the first N samples\n"
    "  --batch N            images decoded per step (default 32)\n"
    "  --threads T          decoding threads (default: all cores)\n"
    "  --quiet              no dataset summary, progress line or assumption warning on stderr\n";

// The folder that will hold `path` exists (checked before decoding anything).
Status check_output_dir(const std::string& flag, const std::string& path) {
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return invalid_argument(flag + " '" + path + "': folder '" + dir + "' does not exist");
  return Status::ok();
}

// NPY v1.0 header for a C-order little-endian float32 array (same layout as core/npy.h writes;
// built here because the data is streamed after it instead of being held in one Tensor).
std::string npy_header_f32(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    s += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  s += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + s + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string out = "\x93NUMPY";
  out += static_cast<char>(1);
  out += static_cast<char>(0);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  return out + header;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Removes the temporary file unless released (every early return after it was created).
struct TempFile {
  std::string path;
  bool keep = false;
  ~TempFile() {
    if (!keep && !path.empty()) std::remove(path.c_str());
  }
};

int run_preprocess(const Args& a) {
  const std::string data_path = a.positional[0];
  const std::string model_path = a.get("--model");
  const std::string out_path = a.get("--output");
  if (model_path.empty()) return report_error(invalid_argument("--model MODEL.onnx is required (it defines the preprocessing)"));
  if (out_path.empty()) return report_error(invalid_argument("-o OUT.npy is required"));
  if (Status st = check_output_dir("-o", out_path); !st.is_ok()) return report_error(st);
  if (a.has("--labels-out"))
    if (Status st = check_output_dir("--labels-out", a.get("--labels-out")); !st.is_ok()) return report_error(st);
  auto batch = a.get_int("--batch", 32);
  auto limit = a.get_int("--limit", -1);
  if (!batch.is_ok()) return report_error(batch.status());
  if (!limit.is_ok()) return report_error(limit.status());
  if (batch.value() < 1) return report_error(invalid_argument("--batch: expected a positive integer"));
  if (a.has("--limit") && limit.value() < 1) return report_error(invalid_argument("--limit: expected a positive integer"));

  auto mr = load_model(model_path);
  if (!mr.is_ok()) return report_error(mr.status());
  const Model& model = mr.value();
  if (model.graph.inputs.size() != 1)
    return report_error(invalid_argument("'" + model_path + "': preprocess needs a single-input model, this one has " +
                                         std::to_string(model.graph.inputs.size())));
  // Same spec as run/eval/quantize: metadata, flags, else inferred from the input shape.
  // Not strict: the layout/colour flags may differ from the model's (inputs for another runtime).
  auto spec_r = resolve_model_spec(model, spec_overrides(a), model_path, /*strict=*/false);
  if (!spec_r.is_ok()) return report_error(spec_r.status());
  if (Status st = spec_r.value().require_image_input(); !st.is_ok()) return report_error(st);
  spec_r.value().warn_assumptions(a.has("--quiet"));
  const PreprocessConfig cfg = spec_r.value().preprocess;
  if (cfg.resize_w <= 0)
    return report_error(invalid_argument("'" + model_path + "': the model input has no fixed size and no 'preprocess' resize is recorded; pass --resize W,H"));
  auto threads = a.get_int("--threads", 0);
  if (!threads.is_ok()) return report_error(threads.status());
  if (threads.value() < 0) return report_error(invalid_argument("--threads: expected >= 0"));
  const int nthreads = threads.value() > 0 ? static_cast<int>(threads.value())
                                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  DatasetSpec spec;
  spec.path = data_path;
  spec.split = a.get("--split", "test");
  if (spec.split == "all") spec.split = "";
  spec.label_column = a.get("--label-column", "label");
  const std::vector<std::string> labels = spec_r.value().labels;
  spec.label_names = labels;
  auto dsr = Dataset::open(spec);
  if (!dsr.is_ok()) return report_error(dsr.status());
  const Dataset& ds = *dsr.value();
  size_t n = ds.size();
  if (a.has("--limit")) n = std::min(n, static_cast<size_t>(limit.value()));
  if (!a.has("--quiet")) std::fprintf(stderr, "%s\n", ds.describe().c_str());

  const int channels = cfg.color == "L" ? 1 : 3;
  const Shape shape = cfg.layout == "NHWC" ? Shape{static_cast<int64_t>(n), cfg.resize_h, cfg.resize_w, channels}
                                           : Shape{static_cast<int64_t>(n), channels, cfg.resize_h, cfg.resize_w};
  const size_t row_floats = static_cast<size_t>(channels) * cfg.resize_h * cfg.resize_w;

  TempFile tmp;
  tmp.path = out_path + ".tmp." + std::to_string(::getpid());
  std::ofstream f(tmp.path, std::ios::binary | std::ios::trunc);
  if (!f) return report_error(io_error("cannot write '" + out_path + "': " + std::strerror(errno)));
  const std::string header = npy_header_f32(shape);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));

  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  BatchLoader loader(ds, idx, cfg, static_cast<int>(batch.value()), nthreads);
  ProgressOptions popt;
  popt.enabled = !a.has("--quiet");
  Progress progress("preprocess", n, popt);
  size_t done = 0;
  Batch b;
  while (loader.next(b)) {
    if (b.x.dtype() != DataType::kFloat32 || b.x.numel() != static_cast<int64_t>(b.indices.size() * row_floats))
      return report_error(internal_error("preprocessed batch " + b.x.desc() + " does not match " + shape_str(shape)));
    f.write(static_cast<const char*>(b.x.raw()), static_cast<std::streamsize>(b.x.nbytes()));
    if (!f) return report_error(io_error("error writing '" + out_path + "' (disk full?)"));
    done += b.indices.size();
    progress.update(done);
  }
  if (!loader.status().is_ok()) return report_error(loader.status());
  if (done != n) return report_error(internal_error("preprocessed " + std::to_string(done) + " of " + std::to_string(n) + " samples"));
  f.flush();
  if (!f) return report_error(io_error("error writing '" + out_path + "' (disk full?)"));
  f.close();
  progress.finish();

  // Labels first (atomic), then the .npy rename: both or neither exist on success/failure.
  if (a.has("--labels-out")) {
    std::map<std::string, size_t> label_index;
    for (size_t i = 0; i < labels.size(); ++i) label_index[labels[i]] = i;
    std::string csv = "index,id,path,label,label_index\n";
    for (size_t i = 0; i < n; ++i) {
      const Sample& s = ds.sample(i);
      auto it = label_index.find(s.label);
      csv += std::to_string(i) + "," + csv_field(s.id) + "," + csv_field(s.path) + "," + csv_field(s.label) + "," +
             (it == label_index.end() ? "" : std::to_string(it->second)) + "\n";
    }
    if (Status st = write_file_atomic(a.get("--labels-out"), csv); !st.is_ok()) return report_error(st);
  }
  if (std::rename(tmp.path.c_str(), out_path.c_str()) != 0) {
    int e = errno;
    if (a.has("--labels-out")) std::remove(a.get("--labels-out").c_str());
    return report_error(io_error("cannot write '" + out_path + "': " + std::strerror(e)));
  }
  tmp.keep = true;
  std::printf("wrote %s: float32 %s (%s, %dx%d %s)\n", out_path.c_str(), shape_str(shape).c_str(), cfg.layout.c_str(),
              cfg.resize_w, cfg.resize_h, cfg.color.c_str());
  if (a.has("--labels-out")) std::printf("wrote %s: %zu rows\n", a.get("--labels-out").c_str(), n);
  return 0;
}

}  // namespace

int cmd_preprocess(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       with_spec_flags({"--model", "--output", "--labels-out", "--split", "--label-column", "--limit",
                                        "--batch", "--threads"}),
                       {"--quiet", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help")) {
    std::fputs(kPreprocessUsage, stdout);
    std::fputs(spec_override_usage(), stdout);
    return 0;
  }
  if (a.positional.size() != 1) {
    std::fputs(kPreprocessUsage, stderr);
    return 2;
  }
  return run_preprocess(a);
}

}  // namespace medq::cli
