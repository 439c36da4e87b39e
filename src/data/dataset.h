// Datasets for calibration and evaluation: image folders, CSV manifests and MedMNIST .npz files,
// a streaming batch loader (decode + preprocess on a background thread), a progress reporter and
// stratified ("balanced") sampling.
//
//   DatasetSpec spec{"../shared/data/brain_mri/manifest.csv", "test"};
//   ASSIGN_OR_RETURN(auto ds, Dataset::open(spec));
//   std::string table;
//   ASSIGN_OR_RETURN(auto idx, balanced_sample(*ds, 256, {"label"}, /*seed=*/1, &table));
//   BatchLoader loader(*ds, idx, cfg, /*batch_size=*/32);
//   Progress progress("calibrate", idx.size());
//   Batch b;
//   while (loader.next(b)) { ...run b.x...; progress.update(done += b.indices.size()); }
//   RETURN_IF_ERROR(loader.status());   // a corrupt/missing image stops the stream here
//   progress.finish();
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"
#include "core/tensor.h"
#include "data/image.h"
#include "data/preprocess.h"

namespace medq {

struct Sample {
  // Stable, human-readable identity: the path as written in the manifest, "class/file.png"
  // relative to an image folder's root, or "npz:train[17]".
  std::string id;
  // File to decode (manifest paths resolved against the CSV's folder); empty for npz samples.
  std::string path;
  std::string label;
  // Other columns: for a manifest every column except the path column (the label column and
  // 'split' included), e.g. sex, age_group, site. Image folders and npz files have none.
  std::map<std::string, std::string> attrs;
};

struct DatasetSpec {
  DatasetSpec() = default;
  DatasetSpec(std::string path_, std::string split_ = "", std::string label_column_ = "label")  // NOLINT
      : path(std::move(path_)), split(std::move(split_)), label_column(std::move(label_column_)) {}

  // A directory (image folder: <root>/<class>/*.png|jpg|jpeg|dcm), a *.csv manifest or a *.npz
  // (MedMNIST layout: <split>_images / <split>_labels, or plain images / labels).
  std::string path;
  // "" = everything. Manifest: keeps rows whose 'split' column equals it. Npz: selects the
  // <split>_ arrays ("" = train, val, test in that order). Image folder: uses <root>/<split>/.
  std::string split;
  std::string label_column = "label";  // manifest column holding the label
  std::string path_column = "path";    // manifest column holding the image path
  // Npz: names of the integer labels (index = label value), e.g. the model's "labels" metadata.
  // Empty: the label is the integer as a string ("0", "1", ...).
  std::vector<std::string> label_names;
};

enum class DatasetKind { kImageFolder, kManifest, kNpz };

class Dataset {
 public:
  // Detects the kind from the path (directory / .csv / .npz). Errors: missing path, unreadable
  // or malformed manifest ("file.csv:LINE: ..."), unknown label/path/split column (naming the
  // available columns), empty result after the split filter, npz arrays of unexpected shape.
  static Result<std::unique_ptr<Dataset>> open(const DatasetSpec& spec);

  DatasetKind kind() const { return kind_; }
  const DatasetSpec& spec() const { return spec_; }
  size_t size() const { return samples_.size(); }
  const Sample& sample(size_t i) const { return samples_[i]; }
  const std::vector<Sample>& samples() const { return samples_; }
  // Distinct labels, sorted (numerically when every label is an integer; npz with label_names:
  // in label_names order).
  const std::vector<std::string>& label_values() const { return label_values_; }
  // Keys usable for balance_by: "label" followed by the attribute columns.
  std::vector<std::string> columns() const;
  // One-line description, e.g. "manifest 'x/manifest.csv' (split 'test'): 545 samples, 4 labels".
  std::string describe() const;

  // Decodes sample i: float 0..255 HWC pixels (see image.h). Files: missing file -> not_found
  // naming "manifest.csv:LINE" and the path; decode errors name the file. Npz: a grey (1-channel)
  // or RGB image built from the uint8 array. Thread-safe.
  Result<Image> load_image(size_t i, const DecodeLimits& limits = {}) const;

 private:
  Dataset() = default;
  static Status open_folder(Dataset* ds);
  static Status open_manifest(Dataset* ds);
  static Status open_npz(Dataset* ds);
  void compute_label_values();

  DatasetKind kind_ = DatasetKind::kImageFolder;
  DatasetSpec spec_;
  std::vector<Sample> samples_;
  std::vector<std::string> label_values_;
  std::vector<std::string> attr_columns_;  // manifest column order, minus the path column
  // Manifest: 1-based line number of each sample's row (for error messages).
  std::vector<size_t> lines_;
  // Npz: image arrays per selected split and (part, row) of each sample.
  struct NpzPart {
    std::string prefix;
    Tensor images;  // uint8 [N,H,W] or [N,H,W,C] (C = 1 or 3)
  };
  std::vector<NpzPart> parts_;
  std::vector<std::pair<int, int64_t>> npz_rows_;
};

// ---------------------------------------------------------------------------------------------
// Streaming batches.

struct Batch {
  Tensor x;                     // float32 [b,C,H,W] (NCHW) or [b,H,W,C] (NHWC); b <= batch_size
  std::vector<size_t> indices;  // dataset indices of the b samples, in order
};

// Decodes and preprocesses batches of `indices` (in order; the last batch may be short) on a
// background thread while the caller works on the previous one. At most 2 finished batches are
// queued (plus the one being built), so memory is bounded whatever the dataset size.
// prefetch_threads > 1 decodes the images of a batch with that many threads.
// All images of a batch must preprocess to the same size (always true with a resize).
class BatchLoader {
 public:
  BatchLoader(const Dataset& ds, std::vector<size_t> indices, PreprocessConfig cfg, int batch_size,
              int prefetch_threads = 1);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Fills `b` with the next batch and returns true; returns false at the end of the data or on
  // an error (then status() is not ok and names the file). Never throws.
  [[nodiscard]] bool next(Batch& b);
  // ok() unless the stream stopped on an error (invalid config, bad index, undecodable image).
  const Status& status() const { return status_; }
  size_t num_samples() const { return indices_.size(); }
  size_t num_batches() const;

 private:
  struct Item {
    Batch batch;
    Status status;
  };
  void produce();
  Status build_batch(size_t first, size_t count, Batch* out) const;

  const Dataset& ds_;
  std::vector<size_t> indices_;
  PreprocessConfig cfg_;
  size_t batch_size_;
  int threads_;
  Status status_;
  bool finished_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool producer_done_ = false;
  bool stop_ = false;
  std::thread producer_;
  static constexpr size_t kQueueDepth = 2;
};

// ---------------------------------------------------------------------------------------------
// Progress reporting on stderr.

struct ProgressOptions {
  std::FILE* out = stderr;
  int tty = -1;             // -1: isatty(out); 0/1 force
  double interval_s = -1;   // min seconds between lines; -1: 0.1 on a TTY, 2.0 otherwise
  bool enabled = true;
};

// "calibrate: 128/500 (25.6%) 41.2 img/s ETA 9s". On a TTY the line is rewritten in place
// (\r); otherwise (CI logs) a new line is printed at most every interval_s. finish() prints the
// final line ("calibrate: 500/500 (100.0%) 41.2 img/s, 12.1s") with a newline.
class Progress {
 public:
  Progress(std::string what, size_t total, ProgressOptions opt = {});
  ~Progress();
  void update(size_t done);
  void finish();
  // The status text for `done` items after `elapsed_s` seconds (no newline/escape codes).
  static std::string format(const std::string& what, size_t done, size_t total, double elapsed_s, bool final);

 private:
  void print(const std::string& line, bool final);
  std::string what_;
  size_t total_;
  ProgressOptions opt_;
  bool tty_ = false;
  double interval_s_ = 2.0;
  size_t done_ = 0;
  bool finished_ = false;
  bool printed_inline_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

// ---------------------------------------------------------------------------------------------
// Balanced (stratified) sampling.

struct SampleReport {
  std::vector<std::string> balance_by;
  uint64_t seed = 0;
  size_t requested = 0, chosen = 0;
  // Stratum name (the balance_by values joined with "|", e.g. "mel|male") -> count.
  std::map<std::string, size_t> per_stratum;  // chosen
  std::map<std::string, size_t> available;
  std::string table() const;     // human-readable
  nlohmann::json to_json() const;
};

// Chooses min(n, size) samples stratified by the combination of the balance_by keys ("label" =
// the sample label, other keys = attribute columns; empty = one stratum, i.e. a seeded random
// sample). Strata are visited round-robin (in a seeded order), each yielding the next sample of
// its own seeded shuffle until exhausted, so n is spread as evenly as possible: every stratum
// gets at least one sample when n >= #strata, strata smaller than their share give the rest to
// the others, and any prefix of the result is itself balanced. Deterministic for a seed (own
// RNG, independent of the standard library). `report` (optional) receives report.table(),
// `out` (optional) the machine-readable report. Error if a key is not a column (naming the
// available ones).
Result<std::vector<size_t>> balanced_sample(const Dataset& ds, size_t n, const std::vector<std::string>& balance_by,
                                            uint64_t seed, std::string* report, SampleReport* out = nullptr);

// Reads a CSV text (RFC 4180: quoted fields with commas/quotes/newlines, "" escapes, CRLF,
// UTF-8 BOM). Rows are returned with the 1-based line number where they start; blank lines are
// skipped. `name` is used in errors (unterminated quote).
struct CsvRow {
  size_t line = 0;
  std::vector<std::string> fields;
};
Result<std::vector<CsvRow>> parse_csv(const std::string& text, const std::string& name);

}  // namespace medq
