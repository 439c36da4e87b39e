#include "serve/decode_pool.h"

#include <sched.h>

#include <atomic>

namespace medq::serve {

struct DecodePool::Job {
  const std::function<void()>* fn = nullptr;
  enum State { kQueued, kRunning, kDone, kWithdrawn } state = kQueued;
  std::condition_variable done;
};

DecodePool::DecodePool(int threads, Priority priority) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<int> started{0}, idle{0};
  for (int i = 0; i < threads; ++i)
    th_.emplace_back([this, priority, &started, &idle] {
      bool ok = false;
      if (priority == Priority::kIdle) {
        sched_param sp{};
        ok = sched_setscheduler(0, SCHED_IDLE, &sp) == 0;  // 0: the calling thread (Linux)
      }
      idle += ok ? 1 : 0;
      ++started;
      loop();
    });
  while (started.load() < threads) std::this_thread::yield();
  idle_ok_ = idle.load() == threads;
}

DecodePool::~DecodePool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : th_) t.join();
}

void DecodePool::loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !q_.empty(); });
      if (q_.empty()) return;  // stopping and drained
      job = std::move(q_.front());
      q_.pop_front();
      if (job->state == Job::kWithdrawn) continue;
      job->state = Job::kRunning;
    }
    (*job->fn)();
    {
      std::lock_guard<std::mutex> lk(mu_);
      job->state = Job::kDone;
    }
    job->done.notify_all();
  }
}

bool DecodePool::run(const std::function<void()>& fn, std::chrono::steady_clock::time_point deadline) {
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  std::unique_lock<std::mutex> lk(mu_);
  q_.push_back(job);
  cv_.notify_one();
  job->done.wait_until(lk, deadline, [&] { return job->state == Job::kDone; });
  if (job->state == Job::kQueued) {
    job->state = Job::kWithdrawn;  // a pool thread drops it when it reaches it
    return false;
  }
  job->done.wait(lk, [&] { return job->state == Job::kDone; });
  return true;
}

bool parse_decode_priority(const std::string& s, DecodePool::Priority* out) {
  if (s == "idle") *out = DecodePool::Priority::kIdle;
  else if (s == "normal") *out = DecodePool::Priority::kNormal;
  else return false;
  return true;
}

}  // namespace medq::serve
