// medq serve building blocks without sockets: config parsing, keys, token buckets, KServe
// request parsing, metrics text, request ids, the batcher.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve/batcher.h"
#include "serve/config.h"
#include "serve/handlers.h"
#include "serve/metrics.h"
#include "serve/security.h"

namespace medq::serve {
namespace {

TEST(ServeUnits, ConfigFromYamlAndErrors) {
  ServeConfig c;
  auto j = nlohmann::json::parse(R"({"port": 9000, "batching": {"max_batch": 16, "max_delay_ms": 4},
      "api_keys": {"ci": "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"},
      "cors_origins": "https://a.example, https://b.example", "shadow": {"fraction": 0.1},
      "debug": {"fail_compressed": "true"}, "tune_kernels": true})");
  ASSERT_TRUE(apply_config_json(j, &c).is_ok());
  EXPECT_EQ(c.port, 9000);
  EXPECT_TRUE(c.tune_kernels);
  EXPECT_EQ(c.max_batch, 16);
  EXPECT_DOUBLE_EQ(c.max_delay_ms, 4);
  EXPECT_EQ(c.api_keys["ci"], "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_EQ(c.cors_origins, (std::vector<std::string>{"https://a.example", "https://b.example"}));
  EXPECT_TRUE(c.debug_fail_compressed);
  Status st = apply_config_json(nlohmann::json::parse(R"({"batching": {"max_batchh": 2}})"), &c);
  EXPECT_NE(st.message().find("batching.max_batchh"), std::string::npos);
  st = apply_config_json(nlohmann::json::parse(R"({"api_keys": {"x": "plaintext-key"}})"), &c);
  EXPECT_NE(st.message().find("SHA-256"), std::string::npos);
  c.model_dir = "m";
  c.selection = "int4";
  EXPECT_NE(validate_config(c).message().find("selection"), std::string::npos);
}

TEST(ServeUnits, KeysAreHashedAndCompared) {
  EXPECT_EQ(hash_api_key("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  KeyStore ks({{"ci", hash_api_key("k1")}, {"ops", hash_api_key("k2")}});
  EXPECT_EQ(ks.authenticate("k1"), "ci");
  EXPECT_EQ(ks.authenticate("k2"), "ops");
  EXPECT_EQ(ks.authenticate("k3"), "");
  EXPECT_EQ(ks.authenticate(""), "");
}

TEST(ServeUnits, TokenBucketRefills) {
  RateLimiter rl(2, 3);  // 2/s, burst 3
  auto t0 = RateLimiter::Clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rl.acquire("a", t0), 0);
  double wait = rl.acquire("a", t0);
  EXPECT_NEAR(wait, 0.5, 1e-9);
  EXPECT_EQ(rl.acquire("b", t0), 0);  // per client
  EXPECT_EQ(rl.acquire("a", t0 + std::chrono::milliseconds(600)), 0);
  EXPECT_GT(rl.acquire("a", t0 + std::chrono::milliseconds(600)), 0);
  EXPECT_FALSE(RateLimiter(0, 0).enabled());
}

TEST(ServeUnits, InferRequestParsing) {
  InferInput in;
  ApiError err;
  std::string ok = R"({"id": "q", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1, 1, 2],
                      "data": [[1, 2], [3, 4]]}]})";
  ASSERT_TRUE(parse_infer_request(ok, "x", {1, 1, 2}, 8, &in, &err)) << err.message;
  EXPECT_EQ(in.rows, 2);
  EXPECT_EQ(in.id, "q");
  EXPECT_EQ(in.data, (std::vector<float>{1, 2, 3, 4}));
  auto bad = [&](const std::string& body, const std::string& needle) {
    InferInput i2;
    ApiError e2;
    EXPECT_FALSE(parse_infer_request(body, "x", {1, 1, 2}, 8, &i2, &e2)) << body;
    EXPECT_EQ(e2.http, 400);
    EXPECT_NE(e2.message.find(needle), std::string::npos) << e2.message;
  };
  bad("[]", "JSON object");
  bad(R"({"inputs": []})", "exactly one");
  bad(R"({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1,1,1,2], "data": [1,2]}]})", "name");
  bad(R"({"inputs": [{"datatype": "FP16", "shape": [1,1,1,2], "data": [1,2]}]})", "FP32");
  bad(R"({"inputs": [{"datatype": "FP32", "shape": [1,1,2,1], "data": [1,2]}]})", "must be");
  bad(R"({"inputs": [{"datatype": "FP32", "shape": [9,1,1,2], "data": [1,2]}]})", "1..8");
  bad(R"({"inputs": [{"datatype": "FP32", "shape": [1,1,1,2], "data": [1,2,3]}]})", "2 numbers");
  bad(R"({"inputs": [{"datatype": "FP32", "shape": [1,1,1,2], "data": [1,"a"]}]})", "2 numbers");
}

TEST(ServeUnits, HttpStatusMapping) {
  EXPECT_EQ(http_status_for(invalid_argument("x: ... (possible decompression bomb)")), 413);
  EXPECT_EQ(http_status_for(invalid_argument("bad")), 400);
  EXPECT_EQ(http_status_for(unsupported("JPEG 2000")), 415);
  EXPECT_EQ(http_status_for(not_found("m")), 404);
  EXPECT_EQ(http_status_for(internal_error("m")), 500);
  EXPECT_EQ(make_request_id("abc-1.2_3"), "abc-1.2_3");
  std::string gen = make_request_id("bad id\n{}");
  EXPECT_EQ(gen.size(), 32u);
  EXPECT_NE(gen, make_request_id(""));
}

TEST(ServeUnits, MetricsText) {
  Metrics m;
  m.inc("medq_requests_total", {{"endpoint", "predict"}, {"code", "200"}});
  m.inc("medq_requests_total", {{"endpoint", "predict"}, {"code", "200"}});
  m.observe("medq_batch_size", {{"model", "a"}}, 3);
  std::string t = m.render();
  EXPECT_NE(t.find("# TYPE medq_requests_total counter"), std::string::npos);
  EXPECT_NE(t.find("medq_requests_total{endpoint=\"predict\",code=\"200\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("medq_batch_size_bucket{model=\"a\",le=\"2\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("medq_batch_size_bucket{model=\"a\",le=\"4\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("medq_batch_size_bucket{model=\"a\",le=\"+Inf\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("medq_batch_size_sum{model=\"a\"} 3\n"), std::string::npos);
  EXPECT_EQ(m.sum("medq_requests_total", {{"code", "200"}}), 2);
}

// Concurrent submissions are gathered into batches of at most max_batch, each row answered
// with its own output row.
TEST(ServeUnits, BatcherGroupsRowsAndKeepsOrder) {
  std::atomic<int> runs{0}, max_rows{0};
  Batcher::Options o;
  o.max_batch = 4;
  o.max_delay_ms = 50;
  o.queue_capacity = 64;
  Batcher b("m", {2}, o, [&](const Tensor& x) {
    runs++;
    max_rows = std::max<int>(max_rows, static_cast<int>(x.dim(0)));
    BatchRun r;
    r.logits = Tensor(DataType::kFloat32, {x.dim(0), 1});
    for (int64_t i = 0; i < x.dim(0); ++i) r.logits.data<float>()[i] = x.data<float>()[2 * i] + x.data<float>()[2 * i + 1];
    r.model_used = "fp32";
    return r;
  }, nullptr);
  std::vector<std::future<BatchResult>> fs(8);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(b.submit({float(i), float(10 * i)}, 1, deadline, &fs[i]));
  for (int i = 0; i < 8; ++i) {
    BatchResult r = fs[i].get();
    ASSERT_TRUE(r.status.is_ok());
    EXPECT_FLOAT_EQ(r.logits[0], 11.f * i);
  }
  EXPECT_EQ(max_rows.load(), 4);
  EXPECT_EQ(runs.load(), 2);
}

// Deferred rows are filled on the batcher's threads right before the run, beside rows submitted
// as floats; a request whose fill fails is answered with its HTTP status and message, and the
// batch runs without its rows (the others' rows stay in order).
TEST(ServeUnits, BatcherFillsDeferredRowsAndDropsBadOnes) {
  std::vector<std::vector<float>> inputs;
  std::mutex mu;
  Batcher::Options o;
  o.max_batch = 8;
  o.max_delay_ms = 200;
  o.fill_threads = 2;
  Batcher b("m", {2}, o, [&](const Tensor& x) {
    {
      std::lock_guard<std::mutex> lk(mu);
      inputs.emplace_back(x.data<float>(), x.data<float>() + x.numel());
    }
    BatchRun r;
    r.logits = Tensor(DataType::kFloat32, {x.dim(0), 1});
    for (int64_t i = 0; i < x.dim(0); ++i) r.logits.data<float>()[i] = x.data<float>()[2 * i] + x.data<float>()[2 * i + 1];
    r.model_used = "fp32";
    return r;
  }, nullptr);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  // Request k: a fill writing (k, 10k) per row, or failing for k == 2 (row 1 of 2) and k == 4.
  auto fill = [](int k) {
    return FillFn([k](int64_t row, float* dst, std::string* msg) {
      if ((k == 2 && row == 1) || k == 4) {
        *msg = "upload " + std::to_string(k) + " is bad";
        return k == 2 ? 415 : 413;
      }
      dst[0] = float(k);
      dst[1] = 10.f * float(k) + float(row);
      return 0;
    });
  };
  std::vector<std::future<BatchResult>> fs(6);
  ASSERT_TRUE(b.submit(fill(0), 1, deadline, &fs[0]));
  ASSERT_TRUE(b.submit(std::vector<float>{100.f, 1.f}, 1, deadline, &fs[1]));
  ASSERT_TRUE(b.submit(fill(2), 2, deadline, &fs[2]));
  ASSERT_TRUE(b.submit(fill(3), 2, deadline, &fs[3]));
  ASSERT_TRUE(b.submit(fill(4), 1, deadline, &fs[4]));
  ASSERT_TRUE(b.submit(fill(5), 1, deadline, &fs[5]));  // 8 rows: one batch
  std::vector<BatchResult> r;
  for (auto& f : fs) r.push_back(f.get());
  EXPECT_EQ(r[2].http_error, 415);
  EXPECT_EQ(r[2].status.message(), "upload 2 is bad");
  EXPECT_EQ(r[4].http_error, 413);
  EXPECT_TRUE(r[2].logits.empty());
  for (int k : {0, 1, 3, 5}) {
    EXPECT_EQ(r[k].http_error, 0) << k;
    ASSERT_TRUE(r[k].status.is_ok()) << k;
    EXPECT_EQ(r[k].batch_rows, 5) << k;
  }
  EXPECT_FLOAT_EQ(r[0].logits[0], 0.f);
  EXPECT_FLOAT_EQ(r[1].logits[0], 101.f);
  ASSERT_EQ(r[3].logits.size(), 2u);
  EXPECT_FLOAT_EQ(r[3].logits[0], 3.f + 30.f);
  EXPECT_FLOAT_EQ(r[3].logits[1], 3.f + 31.f);
  EXPECT_FLOAT_EQ(r[5].logits[0], 5.f + 50.f);
  std::lock_guard<std::mutex> lk(mu);
  ASSERT_EQ(inputs.size(), 1u);
  EXPECT_EQ(inputs[0], (std::vector<float>{0, 0, 100, 1, 3, 30, 3, 31, 5, 50}));
}

// instances = 2: two batches of one model are in flight at once (each run waits until it sees the
// other; with one instance the second batch would only start after the first returned).
TEST(ServeUnits, BatcherInstancesRunBatchesConcurrently) {
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0, most = 0;
  Batcher::Options o;
  o.max_batch = 1;
  o.max_delay_ms = 0;
  o.instances = 2;
  Batcher b("m", {1}, o, [&](const Tensor& x) {
    {
      std::unique_lock<std::mutex> lk(mu);
      most = std::max(most, ++in_flight);
      cv.notify_all();
      cv.wait_for(lk, std::chrono::seconds(2), [&] { return most >= 2; });
      --in_flight;
    }
    BatchRun r;
    r.logits = Tensor(DataType::kFloat32, {x.dim(0), 1});
    r.logits.data<float>()[0] = x.data<float>()[0];
    r.model_used = "fp32";
    return r;
  }, nullptr);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<std::future<BatchResult>> fs(2);
  ASSERT_TRUE(b.submit(std::vector<float>{1.f}, 1, deadline, &fs[0]));
  ASSERT_TRUE(b.submit(std::vector<float>{2.f}, 1, deadline, &fs[1]));
  EXPECT_FLOAT_EQ(fs[0].get().logits[0], 1.f);
  EXPECT_FLOAT_EQ(fs[1].get().logits[0], 2.f);
  EXPECT_EQ(most, 2);
}

// Every upload of a batch fails: nothing runs and every request gets its own error.
TEST(ServeUnits, BatcherWithOnlyBadUploadsRunsNothing) {
  std::atomic<int> runs{0};
  Batcher::Options o;
  o.max_batch = 2;
  o.max_delay_ms = 200;
  Batcher b("m", {1}, o, [&](const Tensor& x) {
    ++runs;
    BatchRun r;
    r.logits = Tensor(DataType::kFloat32, {x.dim(0), 1});
    return r;
  }, nullptr);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<std::future<BatchResult>> fs(2);
  for (auto& f : fs)
    ASSERT_TRUE(b.submit(FillFn([](int64_t, float*, std::string* msg) {
                           *msg = "bad";
                           return 400;
                         }),
                         1, deadline, &f));
  for (auto& f : fs) EXPECT_EQ(f.get().http_error, 400);
  EXPECT_EQ(runs.load(), 0);
}

}  // namespace
}  // namespace medq::serve
