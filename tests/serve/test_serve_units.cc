// medq serve building blocks without sockets: config parsing, keys, token buckets, KServe
// request parsing, metrics text, request ids, the batcher.
#include <gtest/gtest.h>

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

TEST(ServeUnits, BatcherWaitsForRowsBeingDecoded) {
  // One row queued and three rows still "decoding" that arrive after the first row's max_delay
  // (300 ms) is over: the batcher keeps waiting for them (up to another max_delay) and runs one
  // batch of 4 instead of a batch of 1 followed by one of 3. Margins are 150 ms either side.
  std::vector<int> sizes;
  std::mutex mu;
  Batcher::Options o;
  o.max_batch = 4;
  o.max_delay_ms = 300;
  o.queue_capacity = 64;
  Batcher b("m", {1}, o, [&](const Tensor& x) {
    {
      std::lock_guard<std::mutex> lk(mu);
      sizes.push_back(static_cast<int>(x.dim(0)));
    }
    BatchRun r;
    r.logits = Tensor(DataType::kFloat32, {x.dim(0), 1});
    std::memcpy(r.logits.data<float>(), x.data<float>(), x.dim(0) * sizeof(float));
    r.model_used = "fp32";
    return r;
  }, nullptr);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<std::unique_ptr<Batcher::Incoming>> decoding;
  for (int i = 0; i < 3; ++i) decoding.push_back(std::make_unique<Batcher::Incoming>(b, 1));
  std::vector<std::future<BatchResult>> fs(4);
  ASSERT_TRUE(b.submit({0.f}, 1, deadline, &fs[0]));
  std::this_thread::sleep_for(std::chrono::milliseconds(450));
  for (int i = 1; i < 4; ++i) {
    decoding[i - 1]->release();
    ASSERT_TRUE(b.submit({float(i)}, 1, deadline, &fs[i]));
  }
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(fs[i].get().logits[0], float(i));
  // A decode that fails (Incoming destroyed without a submit) leaves nothing announced.
  { Batcher::Incoming failed(b, 1); }
  std::future<BatchResult> f;
  ASSERT_TRUE(b.submit({7.f}, 1, deadline, &f));
  EXPECT_FLOAT_EQ(f.get().logits[0], 7.f);
  std::lock_guard<std::mutex> lk(mu);
  EXPECT_EQ(sizes, (std::vector<int>{4, 1}));
}

}  // namespace
}  // namespace medq::serve
