#include "serve/batcher.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace medq::serve {

namespace {
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Returns the free memory of glibc's per-thread malloc arenas to the system at most every 10 s.
// Connection threads allocate and free image-sized buffers in their own arenas; without it their
// free lists keep growing the server's RSS under steady load (bench/serve/soak.sh).
void trim_heap_now_and_then() {
  static std::atomic<int64_t> last{0};
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
  int64_t prev = last.load();
  if (now - prev < 10 || !last.compare_exchange_strong(prev, now)) return;
  malloc_trim(0);
}
}  // namespace

Batcher::Batcher(std::string model, Shape row_shape, Options opt, BatchFn fn, Metrics* metrics)
    : model_(std::move(model)), row_shape_(std::move(row_shape)), opt_(opt), fn_(std::move(fn)), metrics_(metrics) {
  row_elems_ = shape_numel(row_shape_);
  for (int i = 0; i < std::max(1, opt_.instances); ++i) th_.emplace_back([this] { loop(); });
}

Batcher::~Batcher() {
  stop();
  for (auto& t : th_)
    if (t.joinable()) t.join();
}

void Batcher::stop() {
  std::lock_guard<std::mutex> lk(mu_);
  stopping_ = true;
  cv_.notify_all();
}

int Batcher::queued_rows() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(q_rows_);
}

bool Batcher::submit(std::vector<float> data, int64_t rows, Clock::time_point deadline,
                     std::future<BatchResult>* out) {
  auto it = std::make_unique<Item>();
  it->data = std::move(data);
  it->rows = rows;
  it->deadline = deadline;
  return enqueue(std::move(it), out);
}

bool Batcher::submit(FillFn fill, int64_t rows, Clock::time_point deadline, std::future<BatchResult>* out) {
  auto it = std::make_unique<Item>();
  it->fill = std::move(fill);
  it->rows = rows;
  it->deadline = deadline;
  return enqueue(std::move(it), out);
}

bool Batcher::enqueue(std::unique_ptr<Item> it, std::future<BatchResult>* out) {
  it->enqueued = Clock::now();
  *out = it->done.get_future();
  const int64_t rows = it->rows;
  std::lock_guard<std::mutex> lk(mu_);
  // A request larger than the whole queue is still accepted into an empty queue.
  if (stopping_ || (q_rows_ > 0 && q_rows_ + rows > opt_.queue_capacity)) return false;
  q_rows_ += rows;
  q_.push_back(std::move(it));
  if (metrics_) metrics_->set("medq_queue_rows", {{"model", model_}}, static_cast<double>(q_rows_));
  cv_.notify_one();
  return true;
}

int64_t Batcher::fill_rows(std::vector<std::unique_ptr<Item>>& live, Tensor& x, Clock::time_point start) {
  struct Task {
    size_t item;
    int64_t row;
    float* dst;
  };
  std::vector<Task> tasks;
  float* base = x.data<float>();
  int64_t off = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    if (live[i]->fill)
      for (int64_t r = 0; r < live[i]->rows; ++r) tasks.push_back({i, r, base + (off + r) * row_elems_});
    off += live[i]->rows;
  }
  if (tasks.empty()) return off;
  std::vector<int> code(live.size(), 0);
  std::vector<std::string> msg(live.size());
  std::mutex err_mu;
  const int n = static_cast<int>(tasks.size());
  const int nt = std::max(1, std::min(opt_.fill_threads, n));
  // One upload per iteration, dynamically: JPEGs, PNGs and DICOMs of one batch differ in cost.
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int t = 0; t < n; ++t) {
    const Task& k = tasks[t];
    std::string m;
    int c;
    try {
      c = live[k.item]->fill(k.row, k.dst, &m);
    } catch (const std::exception& e) {  // nothing may leave an OpenMP region
      c = 500;
      m = std::string("preprocessing failed: ") + e.what();
    }
    if (c != 0) {
      std::lock_guard<std::mutex> lk(err_mu);
      if (code[k.item] == 0) {
        code[k.item] = c;
        msg[k.item] = std::move(m);
      }
    }
  }
  if (std::all_of(code.begin(), code.end(), [](int c) { return c == 0; })) return off;
  // Answer the bad uploads now and run the others without their rows.
  std::vector<std::unique_ptr<Item>> kept;
  std::vector<std::pair<int64_t, int64_t>> spans;  // (first row in x, rows) of each kept item
  int64_t kept_rows = 0;
  off = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    const int64_t rows = live[i]->rows;
    if (code[i] != 0) {
      BatchResult r;
      r.http_error = code[i];
      r.status = Status(StatusCode::kInvalidArgument, msg[i]);
      r.queue_ms = ms_between(live[i]->enqueued, start);
      live[i]->done.set_value(std::move(r));
    } else {
      spans.emplace_back(off, rows);
      kept_rows += rows;
      kept.push_back(std::move(live[i]));
    }
    off += rows;
  }
  live = std::move(kept);
  if (kept_rows == 0) return 0;
  Shape s = row_shape_;
  s.insert(s.begin(), kept_rows);
  Tensor y(DataType::kFloat32, s);
  float* dst = y.data<float>();
  for (const auto& [first, rows] : spans) {
    std::memcpy(dst, base + first * row_elems_, static_cast<size_t>(rows * row_elems_) * sizeof(float));
    dst += rows * row_elems_;
  }
  x = std::move(y);
  return kept_rows;
}

void Batcher::loop() {
  for (;;) {
    std::vector<std::unique_ptr<Item>> batch;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !q_.empty(); });
      if (q_.empty()) return;  // stopping and drained
      // Wait for company until max_batch rows are queued or the oldest waited max_delay.
      auto until = q_.front()->enqueued + std::chrono::microseconds(static_cast<int64_t>(opt_.max_delay_ms * 1000));
      cv_.wait_until(lk, until, [&] { return stopping_ || q_rows_ >= opt_.max_batch; });
      int64_t rows = 0;
      while (!q_.empty() && (batch.empty() || rows + q_.front()->rows <= opt_.max_batch)) {
        rows += q_.front()->rows;
        q_rows_ -= q_.front()->rows;
        batch.push_back(std::move(q_.front()));
        q_.pop_front();
      }
      if (metrics_) metrics_->set("medq_queue_rows", {{"model", model_}}, static_cast<double>(q_rows_));
    }
    const auto start = Clock::now();
    // Requests whose deadline already passed are answered without running.
    std::vector<std::unique_ptr<Item>> live;
    for (auto& it : batch) {
      if (start >= it->deadline) {
        BatchResult r;
        r.deadline_exceeded = true;
        r.status = Status(StatusCode::kInternal, "deadline exceeded while queued");
        r.queue_ms = ms_between(it->enqueued, start);
        it->done.set_value(std::move(r));
      } else {
        live.push_back(std::move(it));
      }
    }
    if (live.empty()) continue;
    int64_t rows = 0;
    for (auto& it : live) rows += it->rows;
    Shape s = row_shape_;
    s.insert(s.begin(), rows);
    Tensor x(DataType::kFloat32, s);
    float* dst = x.data<float>();
    bool deferred = false;
    for (auto& it : live) {
      deferred = deferred || static_cast<bool>(it->fill);
      if (!it->fill) std::memcpy(dst, it->data.data(), it->data.size() * sizeof(float));
      dst += it->rows * row_elems_;
    }
    const auto fill_start = Clock::now();
    rows = fill_rows(live, x, start);
    const auto fill_end = Clock::now();
    const double decode_ms = ms_between(fill_start, fill_end);
    if (metrics_ && deferred)
      metrics_->observe("medq_decode_seconds", {{"model", model_}}, decode_ms / 1000);
    if (live.empty()) continue;  // every upload was bad
    BatchRun run;
    try {
      run = fn_(x);
    } catch (const std::exception& e) {
      run.status = internal_error(std::string("batch run threw: ") + e.what());
    }
    const auto end = Clock::now();
    const double compute_ms = ms_between(fill_end, end);
    if (metrics_) {
      metrics_->observe("medq_compute_seconds", {{"model", model_}}, compute_ms / 1000);
      metrics_->observe("medq_batch_size", {{"model", model_}}, static_cast<double>(rows));
      if (run.status.is_ok())
        metrics_->inc("medq_model_used_total", {{"model", model_}, {"variant", run.model_used}}, static_cast<double>(rows));
    }
    int64_t off = 0;
    for (auto& it : live) {
      BatchResult r;
      r.status = run.status;
      r.queue_ms = ms_between(it->enqueued, start);
      r.compute_ms = compute_ms;
      r.decode_ms = decode_ms;
      r.batch_rows = static_cast<int>(rows);
      if (metrics_) metrics_->observe("medq_queue_seconds", {{"model", model_}}, r.queue_ms / 1000);
      if (run.status.is_ok()) {
        r.classes = run.logits.dim(1);
        const float* src = run.logits.data<float>() + off * r.classes;
        r.logits.assign(src, src + it->rows * r.classes);
        r.model_used = run.model_used;
        r.fallback = run.fallback;
      }
      off += it->rows;
      it->done.set_value(std::move(r));
    }
    trim_heap_now_and_then();
  }
}

}  // namespace medq::serve
