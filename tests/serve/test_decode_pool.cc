// DecodePool: jobs run on pool threads (SCHED_IDLE by default), a job no thread reached by its
// deadline is withdrawn and never runs, queued jobs finish before the pool is destroyed.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "serve/config.h"
#include "serve/decode_pool.h"
#include <nlohmann/json.hpp>

namespace medq::serve {
namespace {

using std::chrono::milliseconds;
auto in(int ms) { return std::chrono::steady_clock::now() + milliseconds(ms); }

TEST(DecodePool, RunsJobsOnPoolThreadsAtIdlePriority) {
  DecodePool pool(2, DecodePool::Priority::kIdle);
  ASSERT_EQ(pool.threads(), 2);
  std::thread::id ran_on;
  int policy = -1;
  ASSERT_TRUE(pool.run([&] { ran_on = std::this_thread::get_id(); policy = sched_getscheduler(0); }, in(5000)));
  EXPECT_NE(ran_on, std::this_thread::get_id());
  // Linux lets any thread lower itself to SCHED_IDLE; idle_priority() reports what happened.
  EXPECT_EQ(pool.idle_priority(), policy == SCHED_IDLE);
  EXPECT_TRUE(pool.idle_priority()) << "sched_setscheduler(SCHED_IDLE) refused on this kernel";
}

TEST(DecodePool, NormalPriorityKeepsTheProcessPolicy) {
  DecodePool pool(1, DecodePool::Priority::kNormal);
  int policy = -1;
  ASSERT_TRUE(pool.run([&] { policy = sched_getscheduler(0); }, in(5000)));
  EXPECT_EQ(policy, sched_getscheduler(0));
  EXPECT_FALSE(pool.idle_priority());
}

TEST(DecodePool, JobNotStartedByItsDeadlineIsWithdrawnAndNeverRuns) {
  DecodePool pool(1, DecodePool::Priority::kNormal);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<bool> blocker_started{false};
  // Occupies the only pool thread until released.
  auto blocker = std::async(std::launch::async, [&] {
    return pool.run([&] { blocker_started = true; gate.wait(); }, in(10000));
  });
  while (!blocker_started) std::this_thread::sleep_for(milliseconds(1));
  std::atomic<int> late_runs{0};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(pool.run([&] { ++late_runs; }, in(50)));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(45));
  release.set_value();
  EXPECT_TRUE(blocker.get());
  // The pool thread is free again: a new job runs, the withdrawn one still does not.
  std::atomic<int> runs{0};
  EXPECT_TRUE(pool.run([&] { ++runs; }, in(5000)));
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(late_runs.load(), 0);
}

TEST(DecodePool, ManyCallersAllAnswered) {
  DecodePool pool(2, DecodePool::Priority::kIdle);
  std::atomic<int> sum{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 16; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) ASSERT_TRUE(pool.run([&] { sum += t; }, in(10000)));
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(sum.load(), 50 * (15 * 16 / 2));
}

TEST(DecodePool, ConfigValidatesPriorityAndThreads) {
  ServeConfig c;
  c.model_dir = "x";
  EXPECT_TRUE(validate_config(c).is_ok());
  c.decode_priority = "low";
  Status s = validate_config(c);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("decode_priority"), std::string::npos) << s.message();
  c.decode_priority = "normal";
  c.decode_threads = -1;
  s = validate_config(c);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("decode_threads"), std::string::npos) << s.message();
  ServeConfig j;
  ASSERT_TRUE(apply_config_json(nlohmann::json{{"decode_threads", 3}, {"decode_priority", "normal"}}, &j).is_ok());
  EXPECT_EQ(j.decode_threads, 3);
  EXPECT_EQ(j.decode_priority, "normal");
}

}  // namespace
}  // namespace medq::serve
