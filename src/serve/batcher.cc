#include "serve/batcher.h"

#include <malloc.h>

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
  th_ = std::thread([this] { loop(); });
}

Batcher::~Batcher() {
  stop();
  if (th_.joinable()) th_.join();
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
  it->enqueued = Clock::now();
  it->deadline = deadline;
  *out = it->done.get_future();
  std::lock_guard<std::mutex> lk(mu_);
  // A request larger than the whole queue is still accepted into an empty queue.
  if (stopping_ || (q_rows_ > 0 && q_rows_ + rows > opt_.queue_capacity)) return false;
  q_rows_ += rows;
  q_.push_back(std::move(it));
  if (metrics_) metrics_->set("medq_queue_rows", {{"model", model_}}, static_cast<double>(q_rows_));
  cv_.notify_one();
  return true;
}

void Batcher::Incoming::release() {
  if (rows_ == 0) return;
  {
    std::lock_guard<std::mutex> lk(b_->mu_);
    b_->incoming_ -= rows_;
  }
  rows_ = 0;
  b_->cv_.notify_one();
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
      // Rows being decoded right now will be here in a moment: wait for them rather than run a
      // part-filled batch (bounded by max_delay from now).
      if (!stopping_ && q_rows_ < opt_.max_batch && incoming_.load() > 0) {
        const auto more = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(opt_.max_delay_ms * 1000));
        cv_.wait_until(lk, more, [&] { return stopping_ || q_rows_ >= opt_.max_batch || incoming_.load() <= 0; });
      }
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
    for (auto& it : live) {
      std::memcpy(dst, it->data.data(), it->data.size() * sizeof(float));
      dst += it->data.size();
    }
    BatchRun run;
    try {
      run = fn_(x);
    } catch (const std::exception& e) {
      run.status = internal_error(std::string("batch run threw: ") + e.what());
    }
    const auto end = Clock::now();
    const double compute_ms = ms_between(start, end);
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
