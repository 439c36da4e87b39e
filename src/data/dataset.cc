#include "data/dataset.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/fileio.h"
#include "data/npz.h"

namespace medq {
namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

bool parse_int(const std::string& s, long long* v) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(s[k]))) return false;
  if (s.size() > 18) return false;
  *v = std::stoll(s);
  return true;
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Deterministic RNG (splitmix64) and bounded draws, independent of the standard library.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
};

template <class T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CSV

Result<std::vector<CsvRow>> parse_csv(const std::string& text, const std::string& name) {
  std::vector<CsvRow> rows;
  size_t i = 0, n = text.size(), line = 1;
  if (n >= 3 && std::memcmp(text.data(), "\xEF\xBB\xBF", 3) == 0) i = 3;
  CsvRow row;
  std::string field;
  bool row_started = false;  // any character (even an empty quoted field) seen in this row
  row.line = line;
  auto end_row = [&]() {
    row.fields.push_back(std::move(field));
    field.clear();
    // Skip blank lines (a single empty unquoted field).
    if (!(row.fields.size() == 1 && row.fields[0].empty() && !row_started)) rows.push_back(std::move(row));
    row = CsvRow();
    row_started = false;
  };
  while (i < n) {
    char c = text[i];
    if (c == '"' && field.empty()) {
      // Quoted field.
      size_t start_line = line;
      row_started = true;
      ++i;
      bool closed = false;
      while (i < n) {
        char d = text[i];
        if (d == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        if (d == '\n') ++line;
        field += d;
        ++i;
      }
      if (!closed) return invalid_argument(name + ":" + std::to_string(start_line) + ": unterminated quoted field");
      // Characters after the closing quote up to the delimiter are appended verbatim (lenient).
      continue;
    }
    if (c == ',') {
      row.fields.push_back(std::move(field));
      field.clear();
      row_started = true;
      ++i;
      continue;
    }
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
      ++i;
      end_row();
      ++line;
      row.line = line;
      continue;
    }
    field += c;
    row_started = true;
    ++i;
  }
  if (row_started || !field.empty()) end_row();
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Dataset

std::vector<std::string> Dataset::columns() const {
  std::vector<std::string> out{"label"};
  for (const auto& c : attr_columns_)
    if (c != "label") out.push_back(c);
  return out;
}

std::string Dataset::describe() const {
  const char* kind = kind_ == DatasetKind::kImageFolder ? "image folder" : kind_ == DatasetKind::kManifest ? "manifest" : "npz";
  std::string s = std::string(kind) + " '" + spec_.path + "'";
  if (!spec_.split.empty()) s += " (split '" + spec_.split + "')";
  return s + ": " + std::to_string(samples_.size()) + " samples, " + std::to_string(label_values_.size()) + " labels";
}

void Dataset::compute_label_values() {
  std::set<std::string> distinct;
  for (const auto& s : samples_) distinct.insert(s.label);
  std::vector<std::string> v(distinct.begin(), distinct.end());
  if (kind_ == DatasetKind::kNpz && !spec_.label_names.empty()) {
    std::vector<std::string> ordered;
    for (const auto& name : spec_.label_names)
      if (distinct.count(name)) ordered.push_back(name);
    v = ordered;
  } else {
    bool all_int = true;
    long long tmp;
    for (const auto& l : v) all_int = all_int && parse_int(l, &tmp);
    if (all_int)
      std::sort(v.begin(), v.end(), [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
  }
  label_values_ = std::move(v);
}

Result<std::unique_ptr<Dataset>> Dataset::open(const DatasetSpec& spec) {
  std::unique_ptr<Dataset> ds(new Dataset());
  ds->spec_ = spec;
  std::error_code ec;
  if (spec.path.empty()) return invalid_argument("dataset path is empty");
  fs::file_status st = fs::status(spec.path, ec);
  if (ec || !fs::exists(st)) return not_found("dataset '" + spec.path + "' does not exist");
  Status s;
  if (fs::is_directory(st)) {
    ds->kind_ = DatasetKind::kImageFolder;
    s = open_folder(ds.get());
  } else if (ends_with(lower(spec.path), ".csv")) {
    ds->kind_ = DatasetKind::kManifest;
    s = open_manifest(ds.get());
  } else if (ends_with(lower(spec.path), ".npz")) {
    ds->kind_ = DatasetKind::kNpz;
    s = open_npz(ds.get());
  } else {
    return invalid_argument("dataset '" + spec.path +
                            "': unknown kind (expected a directory of class folders, a .csv manifest or a .npz file)");
  }
  RETURN_IF_ERROR(s);
  ds->compute_label_values();
  return ds;
}

Status Dataset::open_folder(Dataset* ds) {
  std::string root = ds->spec_.path;
  auto subdirs = [](const std::string& dir, std::vector<std::string>* out) -> Status {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      std::error_code e2;
      if (it->is_directory(e2)) out->push_back(name);
    }
    if (ec) return io_error("cannot list image folder '" + dir + "': " + ec.message());
    std::sort(out->begin(), out->end());
    return Status::ok();
  };
  static const std::set<std::string> kSplitNames = {"train", "val", "valid", "validation", "test"};
  std::vector<std::pair<std::string, std::string>> roots;  // (folder, split name or "")
  if (!ds->spec_.split.empty()) {
    root = (fs::path(root) / ds->spec_.split).string();
    std::error_code ec;
    if (!fs::is_directory(root, ec))
      return not_found("image folder '" + ds->spec_.path + "' has no '" + ds->spec_.split +
                       "' subfolder for the split (use --split all for a folder of class folders)");
    roots.emplace_back(root, ds->spec_.split);
  } else {
    // Every split: a folder whose subfolders are all split names (train/, test/, ...) holds one
    // class-folder tree per split; otherwise its subfolders are the classes.
    std::vector<std::string> top;
    RETURN_IF_ERROR(subdirs(root, &top));
    bool splits = !top.empty();
    for (const auto& t : top) splits &= kSplitNames.count(lower(t)) > 0;
    if (splits)
      for (const auto& t : top) roots.emplace_back((fs::path(root) / t).string(), t);
    else
      roots.emplace_back(root, "");
  }
  static const std::set<std::string> kExt = {".png", ".jpg", ".jpeg", ".dcm"};
  for (const auto& [dir_root, split] : roots) {
    std::vector<std::string> classes;
    RETURN_IF_ERROR(subdirs(dir_root, &classes));
    for (const auto& cls : classes) {
      std::vector<std::string> files;
      fs::path dir = fs::path(dir_root) / cls;
      std::error_code ec;
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (name.empty() || name[0] == '.') continue;
        std::error_code e2;
        if (!it->is_regular_file(e2)) continue;
        if (kExt.count(lower(it->path().extension().string()))) files.push_back(name);
      }
      if (ec) return io_error("cannot list '" + dir.string() + "': " + ec.message());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        Sample s;
        s.id = (ds->spec_.split.empty() && !split.empty() ? split + "/" : std::string()) + cls + "/" + f;
        s.path = (dir / f).string();
        s.label = cls;
        if (!split.empty()) s.attrs["split"] = split;
        ds->samples_.push_back(std::move(s));
      }
    }
  }
  if (roots.size() > 1 || !roots[0].second.empty()) ds->attr_columns_.push_back("split");
  if (ds->samples_.empty())
    return not_found("image folder '" + root + "' contains no images (expected <class>/*.png|jpg|jpeg|dcm" +
                     std::string(ds->spec_.split.empty() ? ", or <split>/<class>/..." : "") + ")");
  return Status::ok();
}

Status Dataset::open_manifest(Dataset* ds) {
  const std::string& path = ds->spec_.path;
  ASSIGN_OR_RETURN(std::string text, read_file(path));
  ASSIGN_OR_RETURN(std::vector<CsvRow> rows, parse_csv(text, path));
  if (rows.empty()) return invalid_argument(path + ": empty manifest (no header row)");
  const std::vector<std::string>& header = rows[0].fields;
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i].empty()) return invalid_argument(path + ":" + std::to_string(rows[0].line) + ": empty column name");
    if (col.count(header[i]))
      return invalid_argument(path + ":" + std::to_string(rows[0].line) + ": duplicate column '" + header[i] + "'");
    col[header[i]] = i;
  }
  const std::string avail = join(header, ", ");
  auto need = [&](const std::string& c, const std::string& what) -> Status {
    if (!col.count(c))
      return invalid_argument(path + ": no " + what + " column '" + c + "' (columns: " + avail + ")");
    return Status::ok();
  };
  RETURN_IF_ERROR(need(ds->spec_.path_column, "path"));
  RETURN_IF_ERROR(need(ds->spec_.label_column, "label"));
  const bool filter = !ds->spec_.split.empty();
  if (filter) RETURN_IF_ERROR(need("split", "split"));
  const size_t pc = col[ds->spec_.path_column], lc = col[ds->spec_.label_column];
  const size_t sc = filter ? col["split"] : 0;
  for (const auto& h : header)
    if (h != ds->spec_.path_column) ds->attr_columns_.push_back(h);

  fs::path base = fs::path(path).parent_path();
  std::set<std::string> splits_seen;
  for (size_t r = 1; r < rows.size(); ++r) {
    const CsvRow& row = rows[r];
    const std::string where = path + ":" + std::to_string(row.line);
    if (row.fields.size() != header.size())
      return invalid_argument(where + ": expected " + std::to_string(header.size()) + " fields (" + avail + "), got " +
                              std::to_string(row.fields.size()));
    if (row.fields[pc].empty()) return invalid_argument(where + ": empty '" + ds->spec_.path_column + "' field");
    if (row.fields[lc].empty()) return invalid_argument(where + ": empty '" + ds->spec_.label_column + "' field");
    if (filter) {
      if (row.fields[sc].empty()) return invalid_argument(where + ": empty 'split' field");
      splits_seen.insert(row.fields[sc]);
      if (row.fields[sc] != ds->spec_.split) continue;
    }
    Sample s;
    s.id = row.fields[pc];
    fs::path p(s.id);
    s.path = p.is_absolute() || base.empty() ? p.string() : (base / p).string();
    s.label = row.fields[lc];
    for (size_t c = 0; c < header.size(); ++c)
      if (c != pc) s.attrs[header[c]] = row.fields[c];
    ds->samples_.push_back(std::move(s));
    ds->lines_.push_back(row.line);
  }
  if (ds->samples_.empty()) {
    if (filter)
      return not_found(path + ": no rows with split '" + ds->spec_.split + "' (splits present: " +
                       join(std::vector<std::string>(splits_seen.begin(), splits_seen.end()), ", ") + ")");
    return invalid_argument(path + ": manifest has a header but no rows");
  }
  return Status::ok();
}

Status Dataset::open_npz(Dataset* ds) {
  const std::string& path = ds->spec_.path;
  ASSIGN_OR_RETURN(NpzFile npz, NpzFile::open(path));
  std::vector<std::string> prefixes;
  if (!ds->spec_.split.empty()) {
    prefixes.push_back(ds->spec_.split + "_");
  } else if (npz.has("images")) {
    prefixes.push_back("");
  } else {
    for (const char* p : {"train_", "val_", "test_"})
      if (npz.has(std::string(p) + "images")) prefixes.push_back(p);
    if (prefixes.empty())
      return not_found(path + ": no image arrays (expected train_images/val_images/test_images or images; arrays: " +
                       join(npz.keys(), ", ") + ")");
  }
  for (const auto& pre : prefixes) {
    ASSIGN_OR_RETURN(Tensor images, npz.load(pre + "images"));
    ASSIGN_OR_RETURN(Tensor labels, npz.load(pre + "labels"));
    const std::string iname = path + ":" + pre + "images", lname = path + ":" + pre + "labels";
    if (images.dtype() != DataType::kUInt8)
      return unsupported(iname + ": images must be uint8, got " + images.desc());
    const Shape& s = images.shape();
    bool ok = s.size() == 3 || (s.size() == 4 && (s[3] == 1 || s[3] == 3));
    if (!ok) return invalid_argument(iname + ": expected [N,H,W] or [N,H,W,C] with C = 1 or 3, got " + images.desc());
    const int64_t n = s[0];
    if (labels.rank() == 0 || labels.rank() > 2 || labels.dim(0) != n || (labels.rank() == 2 && labels.dim(1) != 1))
      return invalid_argument(lname + ": expected [" + std::to_string(n) + "] or [" + std::to_string(n) +
                              ",1] labels, got " + labels.desc() + (labels.rank() == 2 && labels.dim(1) > 1 ? " (multi-label data is not supported)" : ""));
    if (traits(labels.dtype()).is_float || labels.dtype() == DataType::kBool || !dtype_supported(labels.dtype()))
      return unsupported(lname + ": labels must be integers, got " + labels.desc());
    const int part = static_cast<int>(ds->parts_.size());
    const std::string split = pre.empty() ? "" : pre.substr(0, pre.size() - 1);
    for (int64_t i = 0; i < n; ++i) {
      int64_t v = labels.get_i64(i);
      Sample smp;
      smp.id = "npz:" + (split.empty() ? std::string("images") : split) + "[" + std::to_string(i) + "]";
      if (!ds->spec_.label_names.empty()) {
        if (v < 0 || v >= static_cast<int64_t>(ds->spec_.label_names.size()))
          return invalid_argument(lname + "[" + std::to_string(i) + "]: label " + std::to_string(v) +
                                  " is outside the " + std::to_string(ds->spec_.label_names.size()) + " label names");
        smp.label = ds->spec_.label_names[v];
      } else {
        smp.label = std::to_string(v);
      }
      if (!split.empty()) smp.attrs["split"] = split;
      ds->samples_.push_back(std::move(smp));
      ds->npz_rows_.emplace_back(part, i);
    }
    ds->parts_.push_back(NpzPart{pre, images});
  }
  ds->attr_columns_ = {"label"};
  if (!prefixes[0].empty()) ds->attr_columns_.push_back("split");
  if (ds->samples_.empty()) return not_found(path + ": no samples");
  return Status::ok();
}

Result<Image> Dataset::load_image(size_t i, const DecodeLimits& limits) const {
  if (i >= samples_.size())
    return invalid_argument("sample index " + std::to_string(i) + " out of range (dataset has " +
                            std::to_string(samples_.size()) + ")");
  const Sample& s = samples_[i];
  if (kind_ == DatasetKind::kNpz) {
    const auto& [part, row] = npz_rows_[i];
    const Tensor& t = parts_[part].images;
    const int h = static_cast<int>(t.dim(1)), w = static_cast<int>(t.dim(2));
    const int c = t.rank() == 4 ? static_cast<int>(t.dim(3)) : 1;
    Image img;
    img.width = w;
    img.height = h;
    img.channels = c;
    const size_t count = static_cast<size_t>(h) * w * c;
    const uint8_t* src = t.data<uint8_t>() + static_cast<size_t>(row) * count;
    img.u8.assign(src, src + count);
    return img;
  }
  if (kind_ == DatasetKind::kManifest) {
    const std::string where = spec_.path + ":" + std::to_string(lines_[i]);
    if (!file_exists(s.path)) return not_found(where + ": image '" + s.path + "' not found");
    Result<Image> r = decode_image_file(s.path, limits);
    if (!r.is_ok()) return r.status().with_context(where);
    return r;
  }
  Result<Image> r = decode_image_file(s.path, limits);
  if (!r.is_ok()) {
    const std::string& m = r.status().message();
    if (m.find(s.path) == std::string::npos) return r.status().with_context("'" + s.path + "'");
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// BatchLoader

BatchLoader::BatchLoader(const Dataset& ds, std::vector<size_t> indices, PreprocessConfig cfg, int batch_size,
                         int prefetch_threads)
    : ds_(ds),
      indices_(std::move(indices)),
      cfg_(std::move(cfg)),
      batch_size_(batch_size > 0 ? static_cast<size_t>(batch_size) : 0),
      threads_(std::max(1, prefetch_threads)) {
  if (batch_size <= 0) {
    status_ = invalid_argument("batch size must be positive, got " + std::to_string(batch_size));
  } else if (Status s = validate_preprocess_config(cfg_); !s.is_ok()) {
    status_ = s.with_context("preprocess config");
  } else if (cfg_.color != "RGB" && cfg_.color != "L") {
    status_ = invalid_argument("preprocess config: color must be RGB or L, got '" + cfg_.color + "'");
  } else {
    for (size_t idx : indices_)
      if (idx >= ds_.size()) {
        status_ = invalid_argument("sample index " + std::to_string(idx) + " out of range (dataset has " +
                                   std::to_string(ds_.size()) + " samples)");
        break;
      }
  }
  if (!status_.is_ok()) {
    finished_ = true;
    return;
  }
  producer_ = std::thread([this] { produce(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
}

size_t BatchLoader::num_batches() const {
  return batch_size_ ? (indices_.size() + batch_size_ - 1) / batch_size_ : 0;
}

Status BatchLoader::build_batch(size_t first, size_t count, Batch* out) const {
  const int c = cfg_.color == "L" ? 1 : 3;
  std::vector<std::vector<float>> pre(count);
  std::vector<Status> errs(count);
  std::vector<std::pair<int, int>> sizes(count);  // (w, h) after preprocessing
  auto work = [&](size_t k) {
    size_t idx = indices_[first + k];
    Result<Image> img = ds_.load_image(idx);
    if (!img.is_ok()) {
      errs[k] = img.status();
      return;
    }
    sizes[k] = {cfg_.resize_w > 0 ? cfg_.resize_w : img->width, cfg_.resize_h > 0 ? cfg_.resize_h : img->height};
    Result<std::vector<float>> v = preprocess_image(*img, cfg_);
    if (!v.is_ok()) {
      errs[k] = v.status().with_context("preprocessing '" + ds_.sample(idx).id + "'");
      return;
    }
    pre[k] = std::move(v).value();
  };
  const size_t nthreads = std::min<size_t>(static_cast<size_t>(threads_), count);
  if (nthreads <= 1) {
    for (size_t k = 0; k < count; ++k) {
      work(k);
      if (!errs[k].is_ok()) return errs[k];
    }
  } else {
    std::atomic<size_t> next{0};
    auto loop = [&] {
      for (size_t k; (k = next.fetch_add(1)) < count;) work(k);
    };
    std::vector<std::thread> pool;
    for (size_t t = 1; t < nthreads; ++t) pool.emplace_back(loop);
    loop();
    for (auto& th : pool) th.join();
    for (size_t k = 0; k < count; ++k)
      if (!errs[k].is_ok()) return errs[k];
  }
  const int w = sizes[0].first, h = sizes[0].second;
  const size_t per = static_cast<size_t>(c) * w * h;
  for (size_t k = 0; k < count; ++k) {
    if (sizes[k].first != w || sizes[k].second != h || pre[k].size() != per)
      return invalid_argument("'" + ds_.sample(indices_[first + k]).id + "' is " + std::to_string(sizes[k].first) + "x" +
                              std::to_string(sizes[k].second) + " but the batch is " + std::to_string(w) + "x" +
                              std::to_string(h) + " (set a resize in the preprocess config)");
  }
  Shape shape = cfg_.layout == "NHWC" ? Shape{static_cast<int64_t>(count), h, w, c}
                                      : Shape{static_cast<int64_t>(count), c, h, w};
  Tensor x(DataType::kFloat32, shape);
  float* dst = x.data<float>();
  for (size_t k = 0; k < count; ++k) std::memcpy(dst + k * per, pre[k].data(), per * sizeof(float));
  out->x = x;
  out->indices.assign(indices_.begin() + first, indices_.begin() + first + count);
  return Status::ok();
}

void BatchLoader::produce() {
  for (size_t first = 0; first < indices_.size(); first += batch_size_) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) break;
    }
    Item item;
    item.status = build_batch(first, std::min(batch_size_, indices_.size() - first), &item.batch);
    const bool failed = !item.status.is_ok();
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || queue_.size() < kQueueDepth; });
      if (stop_) break;
      queue_.push_back(std::move(item));
    }
    cv_.notify_all();
    if (failed) break;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    producer_done_ = true;
  }
  cv_.notify_all();
}

bool BatchLoader::next(Batch& b) {
  if (finished_) return false;
  Item item;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return !queue_.empty() || producer_done_; });
    if (queue_.empty()) {
      finished_ = true;
      return false;
    }
    item = std::move(queue_.front());
    queue_.pop_front();
  }
  cv_.notify_all();
  if (!item.status.is_ok()) {
    status_ = item.status;
    finished_ = true;
    return false;
  }
  b = std::move(item.batch);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Progress

Progress::Progress(std::string what, size_t total, ProgressOptions opt)
    : what_(std::move(what)), total_(total), opt_(opt) {
  if (!opt_.out) opt_.enabled = false;
  tty_ = opt_.tty >= 0 ? opt_.tty != 0 : (opt_.out && ::isatty(fileno(opt_.out)));
  interval_s_ = opt_.interval_s >= 0 ? opt_.interval_s : (tty_ ? 0.1 : 2.0);
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_ && printed_inline_ && opt_.enabled) {
    std::fputc('\n', opt_.out);
    std::fflush(opt_.out);
  }
}

static std::string fmt_duration(double s) {
  char buf[64];
  if (!(s >= 0) || s > 1e7) return "?";
  long long t = static_cast<long long>(std::llround(s));
  if (t < 60) std::snprintf(buf, sizeof buf, "%llds", t);
  else if (t < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
  return buf;
}

std::string Progress::format(const std::string& what, size_t done, size_t total, double elapsed_s, bool final) {
  char buf[256];
  std::string s = what + ": " + std::to_string(done) + "/" + std::to_string(total);
  if (total > 0) {
    std::snprintf(buf, sizeof buf, " (%.1f%%)", 100.0 * static_cast<double>(done) / static_cast<double>(total));
    s += buf;
  }
  const double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
  if (elapsed_s > 0 && done > 0) {
    std::snprintf(buf, sizeof buf, " %.1f img/s", rate);
    s += buf;
  }
  if (final) {
    std::snprintf(buf, sizeof buf, ", %.1fs", elapsed_s);
    s += buf;
  } else if (rate > 0 && total >= done) {
    s += " ETA " + fmt_duration(static_cast<double>(total - done) / rate);
  }
  return s;
}

void Progress::print(const std::string& line, bool final) {
  if (!opt_.enabled) return;
  if (tty_) {
    std::fprintf(opt_.out, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
    printed_inline_ = !final;
  } else {
    std::fprintf(opt_.out, "%s\n", line.c_str());
  }
  std::fflush(opt_.out);
}

void Progress::update(size_t done) {
  if (finished_) return;
  done_ = done;
  auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_).count() < interval_s_) return;
  last_ = now;
  print(format(what_, done_, total_, std::chrono::duration<double>(now - start_).count(), false), false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  auto now = std::chrono::steady_clock::now();
  print(format(what_, done_, total_, std::chrono::duration<double>(now - start_).count(), true), true);
}

// ---------------------------------------------------------------------------------------------
// Balanced sampling

std::string SampleReport::table() const {
  std::string head = balance_by.empty() ? std::string("stratum") : join(balance_by, " | ");
  size_t w = std::max<size_t>(head.size(), 7);
  for (const auto& [k, v] : available) w = std::max(w, k.size());
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-*s %9s %9s\n", static_cast<int>(w), head.c_str(), "available", "chosen");
  out += buf;
  for (const auto& [k, avail] : available) {
    auto it = per_stratum.find(k);
    std::snprintf(buf, sizeof buf, "%-*s %9zu %9zu\n", static_cast<int>(w), k.c_str(), avail,
                  it == per_stratum.end() ? size_t(0) : it->second);
    out += buf;
  }
  size_t total_avail = 0;
  for (const auto& [k, v] : available) total_avail += v;
  std::snprintf(buf, sizeof buf, "%-*s %9zu %9zu", static_cast<int>(w), "total", total_avail, chosen);
  out += buf;
  if (chosen < requested) out += "  (requested " + std::to_string(requested) + "; the dataset has only " + std::to_string(total_avail) + ")";
  out += "\n";
  return out;
}

nlohmann::json SampleReport::to_json() const {
  nlohmann::json strata = nlohmann::json::array();
  for (const auto& [k, avail] : available) {
    auto it = per_stratum.find(k);
    strata.push_back({{"stratum", k}, {"available", avail}, {"chosen", it == per_stratum.end() ? size_t(0) : it->second}});
  }
  return {{"balance_by", balance_by}, {"seed", seed}, {"requested", requested}, {"chosen", chosen}, {"strata", strata}};
}

Result<std::vector<size_t>> balanced_sample(const Dataset& ds, size_t n, const std::vector<std::string>& balance_by,
                                            uint64_t seed, std::string* report, SampleReport* out) {
  const std::vector<std::string> cols = ds.columns();
  for (const auto& k : balance_by)
    if (std::find(cols.begin(), cols.end(), k) == cols.end())
      return invalid_argument("balance_by key '" + k + "' is not a column of " + ds.describe() + " (available: " +
                              join(cols, ", ") + ")");
  // Stratum name -> members (dataset order).
  std::map<std::string, std::vector<size_t>> strata;
  for (size_t i = 0; i < ds.size(); ++i) {
    const Sample& s = ds.sample(i);
    std::string key;
    for (size_t j = 0; j < balance_by.size(); ++j) {
      const std::string& k = balance_by[j];
      std::string v;
      if (k == "label") {
        v = s.label;
      } else {
        auto it = s.attrs.find(k);
        if (it != s.attrs.end()) v = it->second;
      }
      key += (j ? "|" : "") + v;
    }
    if (balance_by.empty()) key = "all";
    strata[key].push_back(i);
  }
  SampleReport rep;
  rep.balance_by = balance_by;
  rep.seed = seed;
  rep.requested = n;
  Rng rng(seed);
  std::vector<std::vector<size_t>*> order;
  for (auto& [k, members] : strata) {
    rep.available[k] = members.size();
    shuffle(members, rng);
    order.push_back(&members);
  }
  shuffle(order, rng);  // which strata get the remainder when n is not a multiple
  const size_t want = std::min(n, ds.size());
  std::vector<size_t> result;
  result.reserve(want);
  std::vector<size_t> taken(order.size(), 0);
  while (result.size() < want) {
    for (size_t s = 0; s < order.size() && result.size() < want; ++s) {
      if (taken[s] < order[s]->size()) result.push_back((*order[s])[taken[s]++]);
    }
  }
  for (auto& [k, members] : strata) {
    size_t pos = std::find(order.begin(), order.end(), &members) - order.begin();
    if (taken[pos]) rep.per_stratum[k] = taken[pos];
  }
  rep.chosen = result.size();
  if (report) *report = rep.table();
  if (out) *out = std::move(rep);
  return result;
}

}  // namespace medq
