// medq serve against a real server on loopback (ephemeral port), with httplib::Client.
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "serve/metrics.h"
#include "serve/model.h"
#include "serve_test_util.h"

namespace medq::serve_test {
namespace {

using serve::Server;
using serve::ServeConfig;

struct Running {
  std::unique_ptr<Server> server;
  std::unique_ptr<httplib::Client> cli;
};

Running start(const ServeConfig& cfg) {
  Running r;
  r.server = std::make_unique<Server>(cfg);
  Status st = r.server->start();
  EXPECT_TRUE(st.is_ok()) << st.message();
  r.cli = std::make_unique<httplib::Client>("127.0.0.1", r.server->port());
  r.cli->set_read_timeout(20, 0);
  return r;
}

// {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 3, 8, 8], "data": [...]}]} with
// channel c of row r filled with vals[r][c].
std::string infer_body(const std::vector<std::array<float, 3>>& vals) {
  std::vector<float> data;
  for (const auto& v : vals)
    for (int c = 0; c < 3; ++c) data.insert(data.end(), 64, v[c]);
  json j = {{"id", "req-1"},
            {"inputs", json::array({{{"name", "x"},
                                     {"datatype", "FP32"},
                                     {"shape", {static_cast<int64_t>(vals.size()), 3, 8, 8}},
                                     {"data", data}}})}};
  return j.dump();
}

// The accept backlog of the IPv4 TCP socket listening on `port` (sock_diag reports a listener's
// maximum backlog as idiag_wqueue); -1 where sock_diag cannot be used.
int listen_backlog(int port) {
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return -1;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 r;
  } req{};
  req.nlh.nlmsg_len = sizeof(req);
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = AF_INET;
  req.r.sdiag_protocol = IPPROTO_TCP;
  req.r.idiag_states = 1u << 10;  // TCP_LISTEN
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  int found = -1;
  if (::sendto(fd, &req, sizeof(req), 0, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == sizeof(req)) {
    alignas(nlmsghdr) char buf[32768];
    for (bool done = false; !done;) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
          done = true;
          break;
        }
        const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
        if (ntohs(m->id.idiag_sport) == port) found = static_cast<int>(m->idiag_wqueue);
      }
    }
  }
  ::close(fd);
  return found;
}

// Threads of this process (/proc/self/task), waiting up to 2 s for it to reach at most `want`
// (exiting threads leave the list a moment after they are joined).
size_t threads_settling_to(size_t want = 0) {
  size_t n = 0;
  for (int i = 0; i < 200; ++i) {
    n = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/task")) n += e.is_directory() ? 1 : 0;
    if (n <= want || want == 0) break;  // 0: count once
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return n;
}

// Loading and warming a model runs OpenMP regions; they must not leave an OpenMP pool behind on
// the loading thread: libgomp cuts every waiting thread's spin to 100 iterations once it manages
// more threads than CPUs, and the batcher's compute threads then sleep around every barrier.
TEST(ServeServer, LoadingLeavesNoOpenMPPoolBehind) {
  LogCapture logs;
  std::string dir = temp_dir("omppool");
  fs::create_directories(fs::path(dir) / "conv");
  testing_onnx::OnnxBuilder b;
  b.input("x", {-1, 3, 32, 32}).output("logits");
  b.init("K", testing_onnx::random_f32({32, 3, 3, 3}, 5));
  b.init("W", testing_onnx::random_f32({3, 32}, 6));
  b.node("Conv", {"x", "K"}, {"c"});
  b.node("Relu", {"c"}, {"r"});
  b.node("GlobalAveragePool", {"r"}, {"p"});
  b.node("Flatten", {"p"}, {"f"});
  auto* g = b.node("Gemm", {"f", "W"}, {"logits"});
  testing_onnx::attr_i(g, "transB", 1);
  auto* m = b.proto().add_metadata_props();
  m->set_key("preprocess");
  m->set_value(R"({"resize": [32, 32], "layout": "NCHW"})");
  ASSERT_TRUE(write_file_atomic((fs::path(dir) / "conv" / "fp32.onnx").string(), b.bytes()).is_ok());
  ServeConfig cfg = base_config(dir);
  cfg.threads = 4;  // a pool of 3 workers if one were left
  serve::Metrics metrics;
  const size_t before = threads_settling_to();
  {
    auto model = serve::ServedModel::load("conv", (fs::path(dir) / "conv").string(), cfg, &metrics);
    ASSERT_TRUE(model.is_ok()) << model.status().message();
    EXPECT_EQ(threads_settling_to(before), before) << "threads left by loading the model";
  }
  fs::remove_all(dir);
}

// cpp-httplib's own backlog is 5: 16+ clients connecting at once had their handshakes dropped.
TEST(ServeServer, ListensWithALargeBacklog) {
  LogCapture logs;
  std::string dir = temp_dir("backlog");
  write_bundle(dir, "tiny", "");
  auto r = start(base_config(dir));
  const int backlog = listen_backlog(r.server->port());
  if (backlog < 0) GTEST_SKIP() << "sock_diag unavailable here";
  EXPECT_GE(backlog, 128) << "listen backlog of port " << r.server->port();
  r.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, EndpointsAnswerWithRealOutputs) {
  LogCapture logs;
  std::string dir = temp_dir("endpoints");
  write_bundle(dir, "tiny", "agree");
  auto r = start(base_config(dir));
  httplib::Client& c = *r.cli;

  auto live = c.Get("/v2/health/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  auto ready = c.Get("/v2/health/ready");
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(body_json(ready)["ready"], true);

  auto meta = c.Get("/v2/models/tiny");
  ASSERT_EQ(meta->status, 200);
  json m = body_json(meta);
  EXPECT_EQ(m["inputs"][0]["name"], "x");
  EXPECT_EQ(m["inputs"][0]["shape"], json({-1, 3, 8, 8}));
  EXPECT_EQ(m["outputs"][0]["shape"], json({-1, 3}));
  EXPECT_EQ(m["parameters"]["labels"], json({"red", "green", "blue"}));
  EXPECT_EQ(m["parameters"]["active"], "compressed");
  EXPECT_EQ(c.Get("/v2/models/tiny/ready")->status, 200);
  EXPECT_EQ(c.Get("/v2/models/nope")->status, 404);
  EXPECT_EQ(c.Get("/v2/models/nope/ready")->status, 404);

  // KServe v2 infer: logits = 4 * channel mean + bias, computed here independently.
  auto inf = c.Post("/v2/models/tiny/infer", infer_body({{0.5f, 0.25f, 0.f}, {0.f, 0.f, 1.f}}), "application/json");
  ASSERT_EQ(inf->status, 200) << inf->body;
  json ij = body_json(inf);
  EXPECT_EQ(ij["id"], "req-1");
  EXPECT_EQ(ij["model_name"], "tiny");
  EXPECT_EQ(ij["outputs"][0]["shape"], json({2, 3}));
  EXPECT_EQ(ij["parameters"]["model_used"], "compressed");
  std::vector<float> want = {2.1f, 1.f, -0.1f, 0.1f, 0.f, 3.9f};
  auto got = ij["outputs"][0]["data"].get<std::vector<float>>();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;

  // v1 predict, raw body: the PNG decoded + preprocessed; probabilities sum to 1.
  std::string png = png_bytes();
  auto p = c.Post("/v1/models/tiny/predict", png, "image/png");
  ASSERT_EQ(p->status, 200) << p->body;
  json pj = body_json(p);
  EXPECT_EQ(pj["model"], "tiny");
  EXPECT_EQ(pj["model_used"], "compressed");
  EXPECT_EQ(pj["fallback"], false);
  EXPECT_FALSE(pj["request_id"].get<std::string>().empty());
  EXPECT_EQ(p->get_header_value("X-Request-Id"), pj["request_id"]);
  auto probs = pj["probabilities"].get<std::vector<float>>();
  ASSERT_EQ(probs.size(), 3u);
  EXPECT_NEAR(probs[0] + probs[1] + probs[2], 1.0, 1e-5);
  int top = pj["top_index"];
  EXPECT_EQ(pj["top_class"], pj["labels"][top]);
  for (float q : probs) EXPECT_LE(q, probs[top]);

  // The same image as multipart: identical answer; client request ids are echoed.
  httplib::MultipartFormDataItems items = {{"image", png, "scan.png", "image/png"}};
  auto pm = c.Post("/v1/models/tiny/predict", {{"X-Request-Id", "abc-123"}}, items);
  ASSERT_EQ(pm->status, 200) << pm->body;
  EXPECT_EQ(body_json(pm)["request_id"], "abc-123");
  EXPECT_EQ(body_json(pm)["probabilities"], pj["probabilities"]);

  // predict_batch: two images, results in order.
  httplib::MultipartFormDataItems two = {{"images", png, "a.png", "image/png"},
                                         {"images", png_bytes("synth_444.jpg"), "b.jpg", "image/jpeg"}};
  auto pb = c.Post("/v1/models/tiny/predict_batch", two);
  ASSERT_EQ(pb->status, 200) << pb->body;
  json bj = body_json(pb);
  ASSERT_EQ(bj["results"].size(), 2u);
  EXPECT_EQ(bj["results"][0]["filename"], "a.png");
  EXPECT_EQ(bj["results"][0]["probabilities"], pj["probabilities"]);
  EXPECT_EQ(bj["results"][1]["filename"], "b.jpg");

  // Metrics: the requests, model_used rows and histograms.
  auto mt = c.Get("/metrics");
  ASSERT_EQ(mt->status, 200);
  const std::string& t = mt->body;
  EXPECT_NE(t.find("medq_requests_total{endpoint=\"predict\",code=\"200\"} 2"), std::string::npos) << t;
  EXPECT_NE(t.find("medq_model_used_total{model=\"tiny\",variant=\"compressed\"} 6"), std::string::npos) << t;
  EXPECT_NE(t.find("medq_errors_total{code=\"404\"} 2"), std::string::npos);
  EXPECT_NE(t.find("medq_compute_seconds_bucket{model=\"tiny\",le=\"+Inf\"}"), std::string::npos);
  EXPECT_NE(t.find("medq_queue_seconds_count{model=\"tiny\"}"), std::string::npos);
  EXPECT_NE(t.find("medq_batch_size_bucket"), std::string::npos);
  EXPECT_EQ(c.Get("/v3/nothing")->status, 404);

  // Access logs are JSON lines with the request id.
  bool found = false;
  for (const auto& l : logs.lines()) {
    json j = json::parse(l, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << l;
    if (j["event"] == "request" && j.value("request_id", "") == "abc-123") found = true;
  }
  EXPECT_TRUE(found);
  r.server->shutdown();
  fs::remove_all(dir);
}

// Uploads are decoded on the model's compute threads when their batch runs: concurrent clients,
// some sending garbage, land in shared batches; each good one gets the answer a lone request gets,
// each bad one its own 415 while its batch runs without it.
TEST(ServeServer, ConcurrentUploadsDecodedInTheirBatch) {
  LogCapture logs;
  std::string dir = temp_dir("decoders");
  write_bundle(dir, "tiny", "agree");
  const std::string png = png_bytes();
  ServeConfig cfg = base_config(dir);
  cfg.threads = 2;
  cfg.max_batch = 4;
  cfg.max_delay_ms = 50;
  auto r = start(cfg);
  auto one = r.cli->Post("/v1/models/tiny/predict", png, "image/png");
  ASSERT_EQ(one->status, 200) << one->body;
  const json want = body_json(one)["probabilities"];
  const int n = 12;
  std::vector<json> got(n);
  std::vector<int> status(n, 0), rows(n, 0);
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", r.server->port());
      c.set_read_timeout(20, 0);
      const bool bad = i % 4 == 3;
      auto res = c.Post("/v1/models/tiny/predict", bad ? std::string("definitely not an image") : png,
                        bad ? "application/octet-stream" : "image/png");
      status[i] = res ? res->status : -1;
      if (res && res->status == 200) {
        got[i] = body_json(res)["probabilities"];
        rows[i] = body_json(res)["batch_rows"].get<int>();
      }
    });
  for (auto& t : ts) t.join();
  int shared = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 4 == 3) {
      EXPECT_EQ(status[i], 415) << "request " << i;
      continue;
    }
    EXPECT_EQ(status[i], 200) << "request " << i;
    EXPECT_EQ(got[i], want) << "request " << i;
    shared += rows[i] > 1;
  }
  EXPECT_GT(shared, 0) << "no two uploads shared a batch";
  const std::string metrics = r.cli->Get("/metrics")->body;
  EXPECT_NE(metrics.find("medq_decode_seconds_count{model=\"tiny\"}"), std::string::npos);
  r.server->shutdown();
  fs::remove_all(dir);
}

// A metric's value in the /metrics text (-1 if absent).
double metric(httplib::Client& c, const std::string& series) {
  const std::string body = c.Get("/metrics")->body;
  const size_t p = body.find("\n" + series + " ");
  return p == std::string::npos ? -1 : std::stod(body.substr(p + series.size() + 2));
}

// Uploads over batching.batch_decode_max_bytes are decoded on their connection thread (no batch
// waits on them) and answered exactly like the in-batch path; an unrecognised upload is answered
// before anything is queued.
TEST(ServeServer, LargeUploadsAreDecodedBeforeQueueing) {
  LogCapture logs;
  std::string dir = temp_dir("inline");
  write_bundle(dir, "tiny", "agree");
  const std::string png = png_bytes();
  json want;  // the in-batch answer
  for (int64_t limit : {int64_t(1) << 20, int64_t(0)}) {  // in batch, then every upload "large"
    ServeConfig cfg = base_config(dir);
    cfg.batch_decode_max_bytes = limit;
    auto r = start(cfg);
    httplib::Client& c = *r.cli;
    auto one = c.Post("/v1/models/tiny/predict", png, "image/png");
    ASSERT_EQ(one->status, 200) << one->body;
    if (want.is_null()) want = body_json(one)["probabilities"];
    EXPECT_EQ(body_json(one)["probabilities"], want) << "limit " << limit;
    httplib::MultipartFormDataItems two = {{"images", png, "a.png", "image/png"}, {"images", png, "b.png", "image/png"}};
    auto batch = c.Post("/v1/models/tiny/predict_batch", two);
    ASSERT_EQ(batch->status, 200) << batch->body;
    EXPECT_EQ(body_json(batch)["results"][1]["probabilities"], body_json(one)["probabilities"]);
    const double decodes = metric(c, "medq_decode_seconds_count{model=\"tiny\"}");
    EXPECT_EQ(decodes, limit > 0 ? 2 : -1) << "limit " << limit;  // batches that decoded uploads
    const double batches = metric(c, "medq_batch_size_count{model=\"tiny\"}");
    EXPECT_EQ(c.Post("/v1/models/tiny/predict", "definitely not an image", "image/png")->status, 415);
    EXPECT_EQ(c.Post("/v1/models/tiny/predict_batch",
                     httplib::MultipartFormDataItems{{"images", png, "a.png", "image/png"}, {"images", "", "b.png", "image/png"}})
                  ->status,
              400);
    EXPECT_EQ(metric(c, "medq_batch_size_count{model=\"tiny\"}"), batches);
    EXPECT_EQ(metric(c, "medq_decode_seconds_count{model=\"tiny\"}"), decodes) << "a bad upload was queued";
    r.server->shutdown();
  }
  fs::remove_all(dir);
}

TEST(ServeServer, MalformedAndOversizedUploads) {
  LogCapture logs;
  std::string dir = temp_dir("malformed");
  write_bundle(dir, "tiny", "");
  ServeConfig cfg = base_config(dir);
  cfg.max_body_bytes = 64 * 1024;
  cfg.max_pixels = 1000;
  auto r = start(cfg);
  httplib::Client& c = *r.cli;

  auto garbage = c.Post("/v1/models/tiny/predict", "definitely not an image", "application/octet-stream");
  EXPECT_EQ(garbage->status, 415);
  EXPECT_NE(body_json(garbage)["error"].get<std::string>().find("not a PNG, JPEG or DICOM"), std::string::npos);
  EXPECT_EQ(c.Post("/v1/models/tiny/predict", "", "image/png")->status, 400);
  std::string png = png_bytes();
  auto trunc = c.Post("/v1/models/tiny/predict", png.substr(0, png.size() / 2), "image/png");
  EXPECT_EQ(trunc->status, 400) << trunc->body;

  auto big = c.Post("/v1/models/tiny/predict", std::string(100 * 1024, 'x'), "image/png");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);

  // 40x30 = 1200 pixels > max_pixels: rejected from the header, before decoding.
  auto bomb = read_file(std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/synth_444.jpg");
  ASSERT_TRUE(bomb.is_ok());
  auto bj = c.Post("/v1/models/tiny/predict", bomb.value(), "image/jpeg");
  EXPECT_EQ(bj->status, 413) << bj->body;
  EXPECT_NE(bj->body.find("decompression bomb"), std::string::npos);

  // Multipart without an image part; two images on predict.
  httplib::MultipartFormDataItems none = {{"comment", "hi", "", "text/plain"}};
  EXPECT_EQ(c.Post("/v1/models/tiny/predict", none)->status, 400);
  httplib::MultipartFormDataItems two = {{"image", png, "a.png", "image/png"}, {"image", png, "b.png", "image/png"}};
  EXPECT_EQ(c.Post("/v1/models/tiny/predict", two)->status, 400);
  EXPECT_EQ(c.Post("/v1/models/tiny/predict_batch", png, "image/png")->status, 400);

  // KServe shape / datatype / JSON checks.
  EXPECT_EQ(c.Post("/v2/models/tiny/infer", "{not json", "application/json")->status, 400);
  json wrong = json::parse(infer_body({{1, 0, 0}}));
  wrong["inputs"][0]["shape"] = {1, 3, 8, 4};
  auto ws = c.Post("/v2/models/tiny/infer", wrong.dump(), "application/json");
  EXPECT_EQ(ws->status, 400);
  EXPECT_NE(ws->body.find("[-1,3,8,8]"), std::string::npos) << ws->body;
  json dt = json::parse(infer_body({{1, 0, 0}}));
  dt["inputs"][0]["datatype"] = "INT64";
  EXPECT_EQ(c.Post("/v2/models/tiny/infer", dt.dump(), "application/json")->status, 400);
  json shortd = json::parse(infer_body({{1, 0, 0}}));
  shortd["inputs"][0]["data"].erase(0);
  EXPECT_EQ(c.Post("/v2/models/tiny/infer", shortd.dump(), "application/json")->status, 400);

  // Corrupt DICOM (truncated pixel data) -> 4xx, never 5xx; the server keeps serving.
  const std::string dcm = std::string(MEDQ_SHARED_DATA) + "/dicom/MR_truncated.dcm";
  if (fs::exists(dcm)) {
    auto d = c.Post("/v1/models/tiny/predict", read_file(dcm).value(), "application/dicom");
    EXPECT_GE(d->status, 400);
    EXPECT_LT(d->status, 500) << d->body;
  }
  EXPECT_EQ(c.Post("/v1/models/tiny/predict", png, "image/png")->status, 200);
  r.server->shutdown();
  fs::remove_all(dir);
}

// Sends raw bytes on a fresh connection and returns what came back within `timeout_s`.
// read_all: read until the server closes (or the timeout), not just the first response.
// split: send req[0, split), wait 300 ms, then the rest (0: all at once).
std::string raw_exchange(int port, const std::string& req, double timeout_s, double* seconds, bool half_close = false,
                         bool read_all = false, size_t split = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{static_cast<time_t>(timeout_s), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  auto t0 = std::chrono::steady_clock::now();
  if (split > 0 && split < req.size()) {
    (void)!::send(fd, req.data(), split, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (void)!::send(fd, req.data() + split, req.size() - split, 0);
  } else {
    (void)!::send(fd, req.data(), req.size(), 0);
  }
  if (half_close) ::shutdown(fd, SHUT_WR);  // the client is done sending
  std::string got;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    auto he = got.find("\r\n\r\n");
    if (he != std::string::npos && !read_all) {  // headers + Content-Length body complete
      auto cl = got.find("Content-Length: ");
      if (cl != std::string::npos && got.size() >= he + 4 + std::stoul(got.substr(cl + 16))) break;
    }
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  return got;
}

TEST(ServeServer, BodilessPostsAreAnsweredAtOnce) {
  // `curl -X POST URL` sends neither Content-Length nor a chunked body: the body is empty and the
  // answer must come at once (was: cpp-httplib read until the 30 s socket timeout).
  LogCapture logs;
  std::string dir = temp_dir("bodiless");
  write_bundle(dir, "tiny", "");
  ServeConfig cfg = base_config(dir);
  cfg.socket_timeout_s = 30;
  auto r = start(cfg);
  for (const char* path : {"/v1/models/tiny/predict", "/v1/models/tiny/predict_batch", "/v2/models/tiny/infer"}) {
    double secs = 0;
    std::string got = raw_exchange(r.server->port(), std::string("POST ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n", 10, &secs);
    EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u) << path << ": " << got;
    EXPECT_NE(got.find("empty request body"), std::string::npos) << got;
    EXPECT_LT(secs, 2.0) << path;
  }
  double secs = 0;
  std::string got = raw_exchange(r.server->port(), "POST /v2/repository/models/tiny/load HTTP/1.1\r\nHost: x\r\n\r\n", 20, &secs);
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;  // a load needs no body
  EXPECT_LT(secs, 10.0);
  // A truncated body (Content-Length larger than what the client sent before finishing):
  // answered as soon as the client closes its side, not after the socket timeout.
  got = raw_exchange(r.server->port(),
                     "POST /v1/models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     "Content-Length: 5000\r\n\r\n" + png_bytes().substr(0, 40),
                     10, &secs, /*half_close=*/true);
  EXPECT_LT(secs, 2.0) << got;
  if (!got.empty()) EXPECT_EQ(got.rfind("HTTP/1.1 4", 0), 0u) << got;
  // KServe data nested far deeper than the tensor's rank (was: a stack overflow killing the server).
  {
    const int depth = 100000;
    std::string deep = R"({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": )";
    deep += std::string(depth, '[') + "1" + std::string(depth, ']') + "}]}";
    auto dr = r.cli->Post("/v2/models/tiny/infer", deep, "application/json");
    ASSERT_TRUE(dr);
    EXPECT_EQ(dr->status, 400) << dr->body;
    EXPECT_EQ(r.cli->Get("/v2/health/ready")->status, 200);
  }
  // The server keeps serving; multipart uploads log their size (was bytes_in 0).
  std::string png = png_bytes();
  httplib::MultipartFormDataItems one = {{"image", png, "a.png", "image/png"}};
  EXPECT_EQ(r.cli->Post("/v1/models/tiny/predict", one)->status, 200);
  r.server->shutdown();
  bool found = false;
  for (const auto& l : logs.lines()) {
    json j = json::parse(l, nullptr, false);
    if (j.is_object() && j.value("endpoint", "") == "predict" && j.value("status", 0) == 200) {
      EXPECT_GT(j.value("bytes_in", 0), static_cast<int>(png.size())) << l;
      found = true;
    }
  }
  EXPECT_TRUE(found) << logs.all();
  fs::remove_all(dir);
}

// Number of HTTP responses in a raw exchange.
int count_responses(const std::string& got) {
  int n = 0;
  for (size_t p = got.find("HTTP/1.1 "); p != std::string::npos; p = got.find("HTTP/1.1 ", p + 1)) ++n;
  return n;
}

TEST(ServeServer, RefusalsWithABodyAreAnsweredOnceAndReloadNamesAreBundles) {
  LogCapture logs;
  std::string dir = temp_dir("desync");
  write_bundle(dir, "tiny", "");
  ServeConfig cfg = base_config(dir);
  cfg.api_keys = {{"alice", serve::hash_api_key("alice-secret")}};
  auto r = start(cfg);
  // A refused request whose body is itself a request, the body sent after the headers: exactly one
  // answer (was two: the 401 was sent from the pre-routing hook, the unread body then parsed as
  // the next request).
  const std::string inner = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string head = "POST /v1/models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           "Content-Length: " + std::to_string(inner.size()) + "\r\n\r\n";
  double secs = 0;
  std::string got = raw_exchange(r.server->port(), head + inner, 2, &secs, false, /*read_all=*/true, head.size());
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  EXPECT_EQ(count_responses(got), 1) << got;
  // Requests without a body are still answered at once.
  got = raw_exchange(r.server->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 2, &secs);
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  // Reload: only names of bundles in the model directory ("%2e%2e" = ".." loaded MODEL_DIR/..).
  ASSERT_TRUE(write_file_atomic((fs::path(dir) / "fp32.onnx").string(), tiny_model_bytes(kAgreeW())).is_ok());
  httplib::Headers auth = {{"Authorization", "Bearer alice-secret"}};
  for (const char* bad : {"/v2/repository/models/%2e%2e/load", "/v2/repository/models/./load"}) {
    auto lr = r.cli->Post(bad, auth, "", "application/json");
    ASSERT_TRUE(lr) << bad;
    EXPECT_GE(lr->status, 400) << bad << ": " << lr->body;
    EXPECT_LT(lr->status, 500) << bad;
  }
  // Failed logins from one address: 10 at once, then 429 (a correct key still works).
  httplib::Headers wrong = {{"Authorization", "Bearer guess"}};
  int n401 = 0, n429 = 0;
  for (int i = 0; i < 20; ++i) {
    auto g = r.cli->Get("/v2/models/tiny", wrong);
    ASSERT_TRUE(g);
    n401 += g->status == 401;
    n429 += g->status == 429;
  }
  EXPECT_LE(n401, 11);
  EXPECT_GE(n429, 9);
  EXPECT_EQ(r.cli->Get("/v2/models/tiny", auth)->status, 200);
  auto ok = r.cli->Post("/v2/repository/models/tiny/load", auth, "", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(r.cli->Get("/v2/models/../ready", auth)->status, 404);
  r.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, DicomLogsCarryNoPatientData) {
  const std::string dcm = std::string(MEDQ_SHARED_DATA) + "/dicom/MR_small.dcm";
  if (!fs::exists(dcm)) GTEST_SKIP() << "shared data not found: " << dcm;
  LogCapture logs;
  std::string dir = temp_dir("dicom");
  write_bundle(dir, "tiny", "");
  auto r = start(base_config(dir));
  std::string bytes = read_file(dcm).value();
  ASSERT_NE(bytes.find("CompressedSamples^MR1"), std::string::npos);  // the PatientName in the file
  httplib::MultipartFormDataItems items = {{"image", bytes, "Doe^John.dcm", "application/dicom"}};
  auto p = r.cli->Post("/v1/models/tiny/predict", items);
  ASSERT_EQ(p->status, 200) << p->body;
  EXPECT_EQ(body_json(p)["model_used"], "fp32");
  r.server->shutdown();
  std::string all = logs.all();
  EXPECT_NE(all.find(body_json(p)["request_id"].get<std::string>()), std::string::npos);
  EXPECT_EQ(all.find("CompressedSamples"), std::string::npos);
  EXPECT_EQ(all.find("Doe^John"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ServeServer, ApiKeysRateLimitAndCors) {
  LogCapture logs;
  std::string dir = temp_dir("auth");
  write_bundle(dir, "tiny", "");
  ServeConfig cfg = base_config(dir);
  cfg.api_keys = {{"alice", serve::hash_api_key("alice-secret")}, {"bob", serve::hash_api_key("bob-secret")}};
  cfg.rate_limit_rps = 0.5;
  cfg.rate_limit_burst = 3;
  cfg.cors_origins = {"https://viewer.example"};
  auto r = start(cfg);
  httplib::Client& c = *r.cli;
  std::string body = infer_body({{1, 0, 0}});

  EXPECT_EQ(c.Get("/v2/health/live")->status, 200);  // health needs no key
  auto none = c.Post("/v2/models/tiny/infer", body, "application/json");
  EXPECT_EQ(none->status, 401);
  EXPECT_NE(none->body.find("missing API key"), std::string::npos);
  auto wrong = c.Post("/v2/models/tiny/infer", {{"Authorization", "Bearer alice-secreT"}}, body, "application/json");
  EXPECT_EQ(wrong->status, 401);
  EXPECT_NE(wrong->body.find("invalid API key"), std::string::npos);
  EXPECT_EQ(c.Get("/metrics")->status, 401);

  // alice: burst of 3, then 429 with Retry-After; bob has his own bucket.
  httplib::Headers alice = {{"Authorization", "Bearer alice-secret"}};
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.Post("/v2/models/tiny/infer", alice, body, "application/json")->status, 200);
  auto limited = c.Post("/v2/models/tiny/infer", alice, body, "application/json");
  EXPECT_EQ(limited->status, 429);
  int retry = std::stoi(limited->get_header_value("Retry-After"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 2);
  EXPECT_EQ(c.Post("/v2/models/tiny/infer", {{"X-API-Key", "bob-secret"}}, body, "application/json")->status, 200);

  // CORS: the allowed origin is echoed, others get no CORS headers; preflight 204 / 403.
  auto ok = c.Get("/v2/health/ready", {{"Origin", "https://viewer.example"}});
  EXPECT_EQ(ok->get_header_value("Access-Control-Allow-Origin"), "https://viewer.example");
  auto bad = c.Get("/v2/health/ready", {{"Origin", "https://evil.example"}});
  EXPECT_FALSE(bad->has_header("Access-Control-Allow-Origin"));
  auto pre = c.Options("/v1/models/tiny/predict", {{"Origin", "https://viewer.example"},
                                                   {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(pre->status, 204);
  EXPECT_NE(pre->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  EXPECT_EQ(c.Options("/v1/models/tiny/predict", {{"Origin", "https://evil.example"}})->status, 403);
  r.server->shutdown();
  // The keys never reach the logs.
  EXPECT_EQ(logs.all().find("alice-secret"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ServeServer, FullQueueAnswers503AndDeadline504) {
  LogCapture logs;
  std::string dir = temp_dir("queue");
  write_bundle(dir, "tiny", "");
  ServeConfig cfg = base_config(dir);
  cfg.queue_capacity = 1;
  cfg.max_batch = 64;
  cfg.max_delay_ms = 400;  // the first request waits for company, holding the only queue slot
  auto r = start(cfg);
  std::string body = infer_body({{1, 0, 0}});
  int first_status = 0;
  std::thread t([&] {
    httplib::Client c("127.0.0.1", r.server->port());
    auto res = c.Post("/v2/models/tiny/infer", body, "application/json");
    first_status = res ? res->status : -1;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto full = r.cli->Post("/v2/models/tiny/infer", body, "application/json");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 503);
  EXPECT_EQ(full->get_header_value("Retry-After"), "1");
  t.join();
  EXPECT_EQ(first_status, 200);
  r.server->shutdown();

  // Deadline shorter than the batching delay: 504, and the server keeps answering.
  cfg.queue_capacity = 16;
  cfg.deadline_ms = 50;
  auto r2 = start(cfg);
  auto late = r2.cli->Post("/v2/models/tiny/infer", body, "application/json");
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 504);
  // Metrics are recorded by the access logger after the response is written: poll briefly.
  bool counted = false;
  for (int i = 0; i < 100 && !counted; ++i) {
    counted = r2.cli->Get("/metrics")->body.find("medq_errors_total{code=\"504\"} 1") != std::string::npos;
    if (!counted) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(counted);
  r2.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, ForcedCompressedFailureFallsBackToFp32) {
  LogCapture logs;
  std::string dir = temp_dir("fallback");
  write_bundle(dir, "tiny", "agree");
  ServeConfig cfg = base_config(dir);
  cfg.debug_fail_compressed = true;
  auto r = start(cfg);
  EXPECT_EQ(body_json(r.cli->Get("/v2/models/tiny"))["parameters"]["active"], "compressed");
  auto a = r.cli->Post("/v2/models/tiny/infer", infer_body({{1, 0, 0}}), "application/json");
  ASSERT_EQ(a->status, 200) << a->body;  // the failing run is answered by fp32, not an error
  EXPECT_EQ(body_json(a)["parameters"]["model_used"], "fp32");
  auto p = r.cli->Post("/v1/models/tiny/predict", png_bytes(), "image/png");
  ASSERT_EQ(p->status, 200);
  EXPECT_EQ(body_json(p)["model_used"], "fp32");
  EXPECT_EQ(body_json(p)["fallback"], false);  // already switched: no second failure
  json meta = body_json(r.cli->Get("/v2/models/tiny"));
  EXPECT_EQ(meta["parameters"]["active"], "fp32");
  EXPECT_NE(meta["parameters"]["selection_reason"].get<std::string>().find("run_error"), std::string::npos);
  std::string m = r.cli->Get("/metrics")->body;
  EXPECT_NE(m.find("medq_fallbacks_total{model=\"tiny\",reason=\"run\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("medq_model_used_total{model=\"tiny\",variant=\"fp32\"} 2"), std::string::npos) << m;
  EXPECT_NE(m.find("medq_model_active{model=\"tiny\",variant=\"fp32\"} 1"), std::string::npos) << m;
  r.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, CompressedModelSelection) {
  LogCapture logs;
  std::string dir = temp_dir("select");
  write_bundle(dir, "corrupt", "corrupt");
  write_bundle(dir, "rejected", "agree", "REJECTED");
  write_bundle(dir, "noreport", "agree", "");
  write_bundle(dir, "good", "agree");
  // A report for another file: the sha256 check refuses the compressed model.
  fs::create_directories(dir + "/good2");
  { Status ws = write_file_atomic(dir + "/good2/fp32.onnx", tiny_model_bytes(kAgreeW())); ASSERT_TRUE(ws.is_ok()) << ws.message(); }
  ASSERT_TRUE(write_file_atomic(dir + "/good2/model.onnx", tiny_model_bytes(kDisagreeW())).is_ok());
  fs::copy_file(dir + "/good/report.json", dir + "/good2/report.json");
  auto r = start(base_config(dir));
  auto active = [&](const std::string& n) {
    return body_json(r.cli->Get("/v2/models/" + n))["parameters"];
  };
  EXPECT_EQ(active("good")["active"], "compressed");
  for (const char* n : {"corrupt", "rejected", "noreport", "good2"}) EXPECT_EQ(active(n)["active"], "fp32") << n;
  EXPECT_NE(active("corrupt")["selection_reason"].get<std::string>().find("failed to load"), std::string::npos);
  EXPECT_NE(active("rejected")["selection_reason"].get<std::string>().find("REJECTED"), std::string::npos);
  EXPECT_NE(active("good2")["selection_reason"].get<std::string>().find("sha256"), std::string::npos);
  auto p = r.cli->Post("/v1/models/corrupt/predict", png_bytes(), "image/png");
  ASSERT_EQ(p->status, 200);
  EXPECT_EQ(body_json(p)["model_used"], "fp32");
  EXPECT_NE(r.cli->Get("/metrics")->body.find("medq_fallbacks_total{model=\"corrupt\",reason=\"load\"} 1"),
            std::string::npos);
  r.server->shutdown();

  // selection fp32 ignores an approved compressed model.
  ServeConfig cfg = base_config(dir);
  cfg.selection = "fp32";
  auto r2 = start(cfg);
  EXPECT_EQ(body_json(r2.cli->Get("/v2/models/good"))["parameters"]["active"], "fp32");
  r2.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, ShadowDisagreementSwitchesToFp32) {
  LogCapture logs;
  std::string dir = temp_dir("shadow");
  write_bundle(dir, "tiny", "disagree");
  ServeConfig cfg = base_config(dir);
  cfg.max_batch = 1;
  cfg.shadow_fraction = 1.0;
  cfg.shadow_window = 4;
  cfg.shadow_threshold = 0.5;
  auto r = start(cfg);
  std::vector<std::string> used;
  for (int i = 0; i < 6; ++i) {
    auto a = r.cli->Post("/v2/models/tiny/infer", infer_body({{0.9f, 0.1f, 0.1f}}), "application/json");
    ASSERT_EQ(a->status, 200);
    json j = body_json(a);
    used.push_back(j["parameters"]["model_used"]);
    // The answer always comes from the model named in model_used.
    auto d = j["outputs"][0]["data"].get<std::vector<float>>();
    int top = static_cast<int>(std::max_element(d.begin(), d.end()) - d.begin());
    EXPECT_EQ(top, used.back() == "compressed" ? 2 : 0) << i;
  }
  // Four disagreeing shadow rows fill the window (rate 1 > 0.5): requests 5 and 6 use fp32.
  EXPECT_EQ(used, (std::vector<std::string>{"compressed", "compressed", "compressed", "compressed", "fp32", "fp32"}));
  std::string m = r.cli->Get("/metrics")->body;
  EXPECT_NE(m.find("medq_shadow_disagreements_total{model=\"tiny\"} 4"), std::string::npos) << m;
  EXPECT_NE(m.find("medq_model_switches_total{model=\"tiny\",reason=\"shadow_disagreement\"} 1"), std::string::npos);
  r.server->shutdown();

  // An agreeing compressed model is never switched.
  write_bundle(dir, "tiny", "agree");
  auto r2 = start(cfg);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(body_json(r2.cli->Post("/v2/models/tiny/infer", infer_body({{0.9f, 0.1f, 0.1f}}), "application/json"))
                  ["parameters"]["model_used"],
              "compressed");
  EXPECT_NE(r2.cli->Get("/metrics")->body.find("medq_shadow_rows_total{model=\"tiny\"} 6"), std::string::npos);
  r2.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, GracefulShutdownAnswersInFlightRequests) {
  LogCapture logs;
  std::string dir = temp_dir("shutdown");
  write_bundle(dir, "tiny", "");
  ServeConfig cfg = base_config(dir);
  cfg.max_batch = 64;
  cfg.max_delay_ms = 2000;  // requests sit in the queue while shutdown begins
  auto r = start(cfg);
  const int n = 8;
  std::vector<int> status(n, 0);
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", r.server->port());
      c.set_read_timeout(20, 0);
      auto res = c.Post("/v2/models/tiny/infer", infer_body({{1, 0, 0}}), "application/json");
      status[i] = res ? res->status : -1;
    });
  // Shut down once all n requests were accepted and sit in the batch queue.
  auto s = r.server->slot("tiny");
  ASSERT_TRUE(s);
  for (int i = 0; i < 2000 && s->batcher->queued_rows() < n; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(s->batcher->queued_rows(), n);
  s.reset();
  r.server->shutdown();  // returns once every in-flight request was answered
  for (auto& t : ts) t.join();
  for (int i = 0; i < n; ++i) EXPECT_EQ(status[i], 200) << "request " << i;
  EXPECT_FALSE(r.server->ready());
  httplib::Client after("127.0.0.1", r.server->port());
  after.set_connection_timeout(1, 0);
  EXPECT_FALSE(after.Get("/v2/health/live"));  // no longer accepting
  fs::remove_all(dir);
}

TEST(ServeServer, ReloadWithoutRestart) {
  LogCapture logs;
  std::string dir = temp_dir("reload");
  write_bundle(dir, "tiny", "");
  auto r = start(base_config(dir));
  EXPECT_EQ(body_json(r.cli->Get("/v2/models/tiny"))["parameters"]["active"], "fp32");
  // A compressed model + approving report appear: reload picks them up.
  write_bundle(dir, "tiny", "agree");
  auto l = r.cli->Post("/v2/repository/models/tiny/load", "", "application/json");
  ASSERT_EQ(l->status, 200) << l->body;
  EXPECT_EQ(body_json(l)["active"], "compressed");
  auto a = r.cli->Post("/v2/models/tiny/infer", infer_body({{1, 0, 0}}), "application/json");
  EXPECT_EQ(body_json(a)["parameters"]["model_used"], "compressed");
  // A broken fp32 model: reload fails, the previous version keeps serving.
  ASSERT_TRUE(write_file_atomic(dir + "/tiny/fp32.onnx", "broken").is_ok());
  auto bad = r.cli->Post("/v2/repository/models/tiny/load", "", "application/json");
  EXPECT_GE(bad->status, 400);
  EXPECT_NE(bad->body.find("previous version keeps serving"), std::string::npos);
  EXPECT_EQ(r.cli->Post("/v2/models/tiny/infer", infer_body({{1, 0, 0}}), "application/json")->status, 200);
  EXPECT_EQ(r.cli->Post("/v2/repository/models/nope/load", "", "application/json")->status, 404);
  r.server->shutdown();
  fs::remove_all(dir);
}

TEST(ServeServer, StartErrorsAreClear) {
  LogCapture logs;
  std::string dir = temp_dir("empty");
  Server s1(base_config(dir));
  Status st = s1.start();
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("holds no bundle"), std::string::npos) << st.message();
  Server s2(base_config(dir + "/missing"));
  EXPECT_NE(s2.start().message().find("does not exist"), std::string::npos);
  fs::remove_all(dir);
}

// The reference brain model served end to end: logits match PyTorch's for a test image.
TEST(ServeServer, ReferenceModelMatchesPytorchLogits) {
  const std::string model = std::string(MEDQ_SHARED_DATA) + "/models/brain_resnet18.onnx";
  const std::string img = std::string(MEDQ_SHARED_DATA) + "/brain_mri/test/glioma/Te-glTr_0000.jpg";
  if (!fs::exists(model) || !fs::exists(img)) GTEST_SKIP() << "shared data not found: " << model;
  LogCapture logs;
  std::string dir = temp_dir("brain");
  fs::create_directories(dir + "/brain");
  fs::copy_file(model, dir + "/brain/fp32.onnx");
  ServeConfig cfg = base_config(dir);
  cfg.threads = 2;
  cfg.max_batch = 1;  // warm-up at batch 1 only: keeps the test fast on 2 cores
  auto r = start(cfg);
  auto p = r.cli->Post("/v1/models/brain/predict", read_file(img).value(), "image/jpeg");
  ASSERT_EQ(p->status, 200) << p->body;
  json j = body_json(p);
  EXPECT_EQ(j["top_class"], "glioma");
  // test/glioma/Te-glTr_0000.jpg in brain_resnet18_test_logits.csv
  std::vector<float> want = {3.473657f, -1.065293f, -0.711898f, -1.119550f};
  auto got = j["logits"].get<std::vector<float>>();
  ASSERT_EQ(got.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(got[i], want[i], 2e-3) << i;
  EXPECT_EQ(j["labels"], json({"glioma", "meningioma", "notumor", "pituitary"}));
  r.server->shutdown();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace medq::serve_test
