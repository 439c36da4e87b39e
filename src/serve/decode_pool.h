// The threads that decode and preprocess uploads for `medq serve`, apart from the connection
// threads and the model's compute threads.
//
// On a machine with as many compute threads as cores, a decoding thread that wakes up preempts
// one of the model's OpenMP threads; its partner then waits at the next barrier and the whole
// batch slows down by far more than the decode costs. Running the decoders as SCHED_IDLE
// (Priority::kIdle, the default) gives them only the cycles the model leaves (barrier waits,
// gaps between batches), which on the 2-core benchmark machine is enough to keep the batcher
// fed: bench/serve/run_load.sh. kNormal keeps them at the process's priority, for machines
// shared with other CPU-bound work (a SCHED_IDLE thread gets almost nothing beside a busy
// normal-priority process there). Health, metrics and the HTTP I/O stay on the connection
// threads at normal priority either way.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace medq::serve {

class DecodePool {
 public:
  enum class Priority { kIdle, kNormal };
  // threads: 0 = one per online CPU.
  DecodePool(int threads, Priority priority);
  ~DecodePool();  // finishes the queued jobs, then joins
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // Runs job on a pool thread and waits for it. If no pool thread started it by `deadline`,
  // the job is withdrawn (it never runs) and run() returns false; a job already running is
  // waited for (it touches the caller's objects).
  bool run(const std::function<void()>& job, std::chrono::steady_clock::time_point deadline);

  int threads() const { return static_cast<int>(th_.size()); }
  // Whether the threads really run as SCHED_IDLE (false where the kernel refused it).
  bool idle_priority() const { return idle_ok_; }

 private:
  struct Job;
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> q_;
  bool stopping_ = false;
  bool idle_ok_ = false;
  std::vector<std::thread> th_;
};

// "idle" | "normal" -> Priority; false for anything else.
bool parse_decode_priority(const std::string& s, DecodePool::Priority* out);

}  // namespace medq::serve
