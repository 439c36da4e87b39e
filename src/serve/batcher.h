// Dynamic batching: one thread per model gathers queued requests until max_batch rows are
// waiting or the oldest has waited max_delay, fills the uploads' rows (decode + preprocess, in
// parallel on the model's OpenMP threads), concatenates them into one [rows, C, H, W] tensor
// and runs it once. The queue is bounded (submit fails -> 503) and every request carries a
// deadline (expired requests are answered without running -> 504).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "serve/metrics.h"

namespace medq::serve {

using Clock = std::chrono::steady_clock;

struct BatchResult {
  Status status;
  bool deadline_exceeded = false;
  std::vector<float> logits;  // rows * classes
  int64_t classes = 0;
  std::string model_used;
  bool fallback = false;
  double queue_ms = 0, compute_ms = 0, decode_ms = 0;
  int batch_rows = 0;
  int http_error = 0;  // a client error found while filling the request's rows (status says what)
};

// Runs one concatenated batch: returns logits [rows, classes] and the variant used.
struct BatchRun {
  Status status;
  Tensor logits;
  std::string model_used;
  bool fallback = false;
};
using BatchFn = std::function<BatchRun(const Tensor& x)>;

// Fills row `row` of a request (row_elems floats at dst): decodes and preprocesses its upload.
// Returns 0, or the HTTP status of a client error with the message in *msg. Runs on one of the
// batcher's compute threads right before the batch runs, so it must own what it reads.
using FillFn = std::function<int(int64_t row, float* dst, std::string* msg)>;

class Batcher {
 public:
  struct Options {
    int max_batch = 8;
    double max_delay_ms = 3;
    int queue_capacity = 256;  // rows
    int fill_threads = 1;      // OpenMP threads that fill deferred rows (the model's compute threads)
    int instances = 1;         // batches in flight at once: threads that each gather, fill and run one
  };
  // row_shape: [C, H, W]; fn runs on the batcher thread.
  Batcher(std::string model, Shape row_shape, Options opt, BatchFn fn, Metrics* metrics);
  ~Batcher();  // drains the queue, then joins

  // Enqueues `rows` rows (rows * prod(row_shape) floats). Fails with kUnavailable-like status
  // (returned as false) when the queue is full or stopping.
  bool submit(std::vector<float> data, int64_t rows, Clock::time_point deadline, std::future<BatchResult>* out);
  // Enqueues `rows` rows that `fill` writes when their batch is assembled: the batch's uploads
  // are decoded in parallel by the same OpenMP team that then runs the model (no hand-off
  // between decoder and compute threads, no decoder preempting a compute thread mid-barrier).
  bool submit(FillFn fill, int64_t rows, Clock::time_point deadline, std::future<BatchResult>* out);
  int queued_rows() const;
  // Stops accepting work; the thread finishes everything already queued.
  void stop();

 private:
  struct Item {
    std::vector<float> data;
    FillFn fill;  // set: data is empty and fill writes the rows
    int64_t rows;
    Clock::time_point enqueued, deadline;
    std::promise<BatchResult> done;
  };
  void loop();
  bool enqueue(std::unique_ptr<Item> it, std::future<BatchResult>* out);
  // Runs the deferred fills of `live` into x (rows at offsets off); answers and drops the
  // items whose upload was bad, compacting x. Returns the rows left.
  int64_t fill_rows(std::vector<std::unique_ptr<Item>>& live, Tensor& x, Clock::time_point start);

  std::string model_;
  Shape row_shape_;
  int64_t row_elems_;
  Options opt_;
  BatchFn fn_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Item>> q_;
  int64_t q_rows_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> th_;  // one per instance
};

}  // namespace medq::serve
