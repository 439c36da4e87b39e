// Dynamic batching: one thread per model gathers queued requests until max_batch rows are
// waiting or the oldest has waited max_delay (plus up to max_delay for rows that connection
// threads are still decoding, see Incoming), concatenates them into one [rows, C, H, W] tensor
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
  double queue_ms = 0, compute_ms = 0;
  int batch_rows = 0;
};

// Runs one concatenated batch: returns logits [rows, classes] and the variant used.
struct BatchRun {
  Status status;
  Tensor logits;
  std::string model_used;
  bool fallback = false;
};
using BatchFn = std::function<BatchRun(const Tensor& x)>;

class Batcher {
 public:
  struct Options {
    int max_batch = 8;
    double max_delay_ms = 3;
    int queue_capacity = 256;  // rows
  };
  // row_shape: [C, H, W]; fn runs on the batcher thread.
  Batcher(std::string model, Shape row_shape, Options opt, BatchFn fn, Metrics* metrics);
  ~Batcher();  // drains the queue, then joins

  // Enqueues `rows` rows (rows * prod(row_shape) floats). Fails with kUnavailable-like status
  // (returned as false) when the queue is full or stopping.
  bool submit(std::vector<float> data, int64_t rows, Clock::time_point deadline, std::future<BatchResult>* out);
  int queued_rows() const;
  // Stops accepting work; the thread finishes everything already queued.
  void stop();

  // Rows a connection thread is decoding for this model and will submit in a moment. When a
  // batch is not full and such rows exist, the batcher waits for them (at most max_delay more):
  // a saturated server then runs full batches instead of whatever arrived during the previous
  // run. Construct before decoding; release() right before submit (the destructor releases
  // too, e.g. after a decode error).
  class Incoming {
   public:
    Incoming(Batcher& b, int64_t rows) : b_(&b), rows_(rows) { b_->incoming_ += rows_; }
    ~Incoming() { release(); }
    Incoming(const Incoming&) = delete;
    Incoming& operator=(const Incoming&) = delete;
    void release();

   private:
    Batcher* b_;
    int64_t rows_;
  };

 private:
  struct Item {
    std::vector<float> data;
    int64_t rows;
    Clock::time_point enqueued, deadline;
    std::promise<BatchResult> done;
  };
  void loop();

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
  std::atomic<int64_t> incoming_{0};
  bool stopping_ = false;
  std::thread th_;
};

}  // namespace medq::serve
