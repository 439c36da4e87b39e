// Session runtime tests: concurrency, dynamic batch, memory plan, arena reuse,
// input validation errors and empty batches.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "../passes/onnx_test_builder.h"

namespace medq {
namespace {

using namespace testing_onnx;

// X[N,3,8,8] -> Conv(3->4) -> Relu -> Conv(4->4) + X' residual ... -> GAP -> Flatten -> Y[N,4]
Result<Model> small_cnn() {
  OnnxBuilder b(13);
  b.input("X", {-1, 3, 8, 8}, kF32, "batch");
  b.init("W1", random_f32({4, 3, 3, 3}, 1));
  b.init("B1", random_f32({4}, 2));
  b.init("W2", random_f32({4, 4, 3, 3}, 3));
  auto* c1 = b.node("Conv", {"X", "W1", "B1"}, {"c1"}, "conv1");
  attr_ints(c1, "pads", {1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto* c2 = b.node("Conv", {"r1", "W2"}, {"c2"}, "conv2");
  attr_ints(c2, "pads", {1, 1, 1, 1});
  b.node("Add", {"c2", "r1"}, {"s"}, "add");
  b.node("Relu", {"s"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"Y"}, "flatten");
  b.output("Y");
  return b.build("small_cnn.onnx");
}

std::unique_ptr<Session> make_session(const Model& m, bool optimize = true, int threads = 2) {
  SessionOptions o;
  o.optimize = optimize;
  o.num_threads = threads;
  auto s = Session::create(m, o);
  if (!s.is_ok()) {
    ADD_FAILURE() << s.status().message();
    return nullptr;
  }
  return std::move(s).value();
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(Runtime, ConcurrentRunsMatchSequentialRuns) {
  auto m = small_cnn();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = make_session(m.value(), true, 1);
  ASSERT_TRUE(s);
  constexpr int kThreads = 4;
  std::vector<Tensor> in, want;
  for (int t = 0; t < kThreads; ++t) {
    in.push_back(random_f32({t + 1, 3, 8, 8}, 100 + t));  // distinct batch sizes: distinct plans
    auto r = s->run({in[t]});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    want.push_back(r.value()[0]);
  }
  std::vector<int> mismatches(kThreads, 0), failures(kThreads, 0);
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t) {
    th.emplace_back([&, t] {
      for (int it = 0; it < 25; ++it) {
        auto r = s->run({in[(t + it) % kThreads]});
        if (!r.is_ok()) { ++failures[t]; continue; }
        if (!bit_equal(r.value()[0], want[(t + it) % kThreads])) ++mismatches[t];
      }
    });
  }
  for (auto& x : th) x.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0) << "thread " << t;
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  }
}

TEST(Runtime, DynamicBatchPerSampleMatchesBatchOne) {
  auto m = small_cnn();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = make_session(m.value());
  ASSERT_TRUE(s);
  const int64_t sample = 3 * 8 * 8;
  Tensor big = random_f32({8, 3, 8, 8}, 7);
  std::vector<Tensor> single;
  for (int64_t i = 0; i < 8; ++i) {
    Tensor x(DataType::kFloat32, {1, 3, 8, 8});
    std::memcpy(x.raw(), big.data<float>() + i * sample, sample * sizeof(float));
    auto r = s->run({x});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    ASSERT_EQ(r.value()[0].shape(), (Shape{1, 4}));
    single.push_back(r.value()[0]);
  }
  for (int64_t n : {1, 3, 8, 1}) {
    Tensor x(DataType::kFloat32, {n, 3, 8, 8});
    std::memcpy(x.raw(), big.raw(), n * sample * sizeof(float));
    auto r = s->run({x});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    const Tensor& y = r.value()[0];
    ASSERT_EQ(y.shape(), (Shape{n, 4}));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < 4; ++j)
        EXPECT_NEAR(y.data<float>()[i * 4 + j], single[i].data<float>()[j], 1e-5) << "batch " << n << " row " << i;
  }
}

// A chain of elementwise ops with views (Reshape/Flatten) in between.
Result<Model> chain_model() {
  OnnxBuilder b(13);
  b.input("X", {-1, 8, 16, 16}, kF32, "batch");
  b.init("shape2", Tensor::from_vector<int64_t>({0, 8, 256}, {3}));
  b.init("shape4", Tensor::from_vector<int64_t>({0, 8, 16, 16}, {4}));
  b.node("Relu", {"X"}, {"a1"});
  b.node("Neg", {"a1"}, {"a2"});
  b.node("Reshape", {"a2", "shape2"}, {"v1"});
  b.node("Abs", {"v1"}, {"a3"});
  b.node("Sigmoid", {"a3"}, {"a4"});
  b.node("Reshape", {"a4", "shape4"}, {"v2"});
  b.node("Neg", {"v2"}, {"a5"});
  b.node("Relu", {"a5"}, {"a6"});
  b.node("Add", {"a6", "X"}, {"a7"});
  b.node("Tanh", {"a7"}, {"a8"});
  b.node("Flatten", {"a8"}, {"Y"});
  b.output("Y");
  return b.build("chain.onnx");
}

TEST(Runtime, MemoryPlanIsSmallerThanNaiveAndReusedRunsAgree) {
  auto m = chain_model();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = make_session(m.value(), false);
  ASSERT_TRUE(s);
  Tensor x = random_f32({2, 8, 16, 16}, 11);
  auto r1 = s->run({x});  // records the plan
  ASSERT_TRUE(r1.is_ok()) << r1.status().message();
  MemoryPlanInfo info = s->last_plan_info();
  EXPECT_GT(info.num_buffers, 3);
  EXPECT_GT(info.naive_bytes, 0u);
  EXPECT_LT(info.arena_bytes, info.naive_bytes);
  // Two live buffers of 8 KiB at a time is enough for a chain.
  EXPECT_LE(info.arena_bytes, 2u * 2 * 8 * 16 * 16 * sizeof(float) + 128);
  auto r2 = s->run({x});  // planned (arena) run
  ASSERT_TRUE(r2.is_ok());
  Tensor keep = r2.value()[0].clone();
  auto r3 = s->run({random_f32({2, 8, 16, 16}, 12)});
  ASSERT_TRUE(r3.is_ok());
  EXPECT_TRUE(bit_equal(r1.value()[0], r2.value()[0]));
  EXPECT_TRUE(bit_equal(r2.value()[0], keep)) << "an output changed after a later run (arena aliasing)";
  EXPECT_FALSE(bit_equal(r2.value()[0], r3.value()[0]));
  // Input untouched.
  Tensor x0 = random_f32({2, 8, 16, 16}, 11);
  EXPECT_TRUE(bit_equal(x, x0));
}

// X -> Conv a -> Relu r1; Conv b(r1) -> c2; Conv c(r1) + c2 -> Relu -> GAP. After fusion the last
// convolution adds c2 with its sum post-op; c2 is dead after it, so the output may take c2's
// buffer. With `keep_c2` c2 is also a graph output, so it must not be overwritten.
Result<Model> residual_model(bool keep_c2) {
  OnnxBuilder b(13);
  b.input("X", {-1, 3, 8, 8}, kF32, "batch");
  b.init("Wa", random_f32({8, 3, 3, 3}, 21));
  b.init("Wb", random_f32({8, 8, 1, 1}, 22));
  b.init("Wc", random_f32({8, 8, 3, 3}, 23));
  b.init("Bc", random_f32({8}, 24));
  attr_ints(b.node("Conv", {"X", "Wa"}, {"c1"}, "conv_a"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu_a");
  b.node("Conv", {"r1", "Wb"}, {"c2"}, "conv_b");
  attr_ints(b.node("Conv", {"r1", "Wc", "Bc"}, {"c3"}, "conv_c"), "pads", {1, 1, 1, 1});
  b.node("Add", {"c3", "c2"}, {"s"}, "add");
  b.node("Relu", {"s"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"Y"}, "gap");
  b.output("Y");
  if (keep_c2) b.output("c2");
  return b.build("residual.onnx");
}

TEST(Runtime, ResidualSumIsComputedInPlaceOnlyWhenItsInputIsDead) {
  for (bool keep_c2 : {false, true}) {
    SCOPED_TRACE(keep_c2 ? "c2 is a graph output" : "c2 dies at the sum");
    auto m = residual_model(keep_c2);
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    auto fused = make_session(m.value(), true);
    auto plain = make_session(m.value(), false);
    ASSERT_TRUE(fused && plain);
    Tensor x = random_f32({2, 3, 8, 8}, 31);
    auto want = plain->run({x});
    auto r1 = fused->run({x});  // records the plan
    ASSERT_TRUE(want.is_ok() && r1.is_ok()) << r1.status().message();
    EXPECT_EQ(fused->last_plan_info().inplace_outputs, keep_c2 ? 0 : 1);
    EXPECT_EQ(plain->last_plan_info().inplace_outputs, 0);  // unfused Add has no in-place contract
    auto r2 = fused->run({x});  // planned run: Y computed into c2's buffer
    ASSERT_TRUE(r2.is_ok());
    for (size_t o = 0; o < want.value().size(); ++o) {
      const Tensor& w = want.value()[o];
      ASSERT_EQ(r2.value()[o].shape(), w.shape());
      for (int64_t i = 0; i < w.numel(); ++i) {
        EXPECT_NEAR(r2.value()[o].data<float>()[i], w.data<float>()[i], 1e-4) << "output " << o << " at " << i;
        EXPECT_EQ(r2.value()[o].data<float>()[i], r1.value()[o].data<float>()[i]);
      }
    }
  }
  // Conv(r1) + r1: the sum input is also the convolution's source, so no in-place output.
  auto m = small_cnn();
  ASSERT_TRUE(m.is_ok());
  auto s = make_session(m.value());
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->run({random_f32({1, 3, 8, 8}, 5)}).is_ok());
  EXPECT_EQ(s->last_plan_info().inplace_outputs, 0);
}

// A server alternates batch sizes: a large arena lent to a small batch must come back to the
// pool as large, or every large batch allocates a new one and the pool fills with them.
TEST(Runtime, ArenaPoolStaysBoundedWhenBatchSizesAlternate) {
  auto m = chain_model();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = make_session(m.value(), false);
  ASSERT_TRUE(s);
  Tensor big = random_f32({8, 8, 16, 16}, 1), small = random_f32({1, 8, 16, 16}, 2);
  ASSERT_TRUE(s->run({big}).is_ok());  // records both plans
  ASSERT_TRUE(s->run({small}).is_ok());
  ASSERT_TRUE(s->run({big}).is_ok());
  const size_t one_big = s->pooled_arena_bytes();
  ASSERT_GT(one_big, 0u);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(s->run({small}).is_ok());
    ASSERT_TRUE(s->run({big}).is_ok());
  }
  EXPECT_EQ(s->pooled_arena_bytes(), one_big);
}

TEST(Runtime, ProfileCountsEveryNode) {
  auto m = chain_model();
  ASSERT_TRUE(m.is_ok());
  auto s = make_session(m.value(), false);
  ASSERT_TRUE(s);
  RunStats st;
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(s->run({random_f32({1, 8, 16, 16}, 5)}, &st).is_ok());
  ASSERT_EQ(st.nodes.size(), s->graph().nodes.size());
  for (const auto& n : st.nodes) EXPECT_EQ(n.calls, 2) << n.name;
}

TEST(Runtime, WrongDtypeNamesInput) {
  auto m = small_cnn();
  ASSERT_TRUE(m.is_ok());
  auto s = make_session(m.value());
  ASSERT_TRUE(s);
  auto r = s->run({Tensor::zeros(DataType::kInt64, {1, 3, 8, 8})});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find("'X'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("float32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("int64"), std::string::npos) << msg;
}

TEST(Runtime, WrongRankAndStaticDimNameInputAndDimParam) {
  auto m = small_cnn();
  ASSERT_TRUE(m.is_ok());
  auto s = make_session(m.value());
  ASSERT_TRUE(s);
  for (Shape bad : {Shape{3, 8, 8}, Shape{1, 4, 8, 8}, Shape{2, 3, 8, 9}, Shape{1, 3, 8, 8, 1}}) {
    auto r = s->run({Tensor::zeros(DataType::kFloat32, bad)});
    ASSERT_FALSE(r.is_ok()) << shape_str(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    const std::string& msg = r.status().message();
    EXPECT_NE(msg.find("'X'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[batch,3,8,8]"), std::string::npos) << msg;
    EXPECT_NE(msg.find(shape_str(bad)), std::string::npos) << msg;
  }
}

TEST(Runtime, WrongInputCountAndNamedInputs) {
  auto m = small_cnn();
  ASSERT_TRUE(m.is_ok());
  auto s = make_session(m.value());
  ASSERT_TRUE(s);
  auto r = s->run({});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("expects 1 input"), std::string::npos) << r.status().message();
  auto r2 = s->run({Tensor()});
  ASSERT_FALSE(r2.is_ok());
  EXPECT_NE(r2.status().message().find("'X'"), std::string::npos);
  auto r3 = s->run_named({{"X", random_f32({1, 3, 8, 8}, 1)}, {"Z", random_f32({1}, 1)}});
  ASSERT_FALSE(r3.is_ok());
  EXPECT_NE(r3.status().message().find("'Z'"), std::string::npos);
  auto r4 = s->run_named({{"Q", random_f32({1, 3, 8, 8}, 1)}});
  ASSERT_FALSE(r4.is_ok());
  EXPECT_NE(r4.status().message().find("'X' is missing"), std::string::npos) << r4.status().message();
  auto r5 = s->run_named({{"X", random_f32({2, 3, 8, 8}, 1)}});
  ASSERT_TRUE(r5.is_ok()) << r5.status().message();
  EXPECT_EQ(r5.value()[0].shape(), (Shape{2, 4}));
}

TEST(Runtime, EmptyBatchGivesEmptyOutput) {
  for (bool optimize : {false, true}) {
    for (auto maker : {small_cnn, chain_model}) {
      auto m = maker();
      ASSERT_TRUE(m.is_ok());
      auto s = make_session(m.value(), optimize);
      ASSERT_TRUE(s);
      Shape in_shape = s->input_value(0).shape;
      in_shape[0] = 0;
      for (int rep = 0; rep < 2; ++rep) {  // recording run, then planned run
        auto r = s->run({Tensor(DataType::kFloat32, in_shape)});
        ASSERT_TRUE(r.is_ok()) << r.status().message();
        ASSERT_EQ(r.value().size(), 1u);
        EXPECT_EQ(r.value()[0].dim(0), 0);
        EXPECT_EQ(r.value()[0].numel(), 0);
      }
      // Still works afterwards.
      Shape ok_shape = in_shape;
      ok_shape[0] = 2;
      auto r = s->run({random_f32(ok_shape, 3)});
      EXPECT_TRUE(r.is_ok()) << r.status().message();
    }
  }
}

TEST(Runtime, GraphInputAndConstantAsOutputs) {
  OnnxBuilder b(13);
  b.input("X", {2, 3});
  b.init("K", random_f32({3}, 4));
  b.node("Identity", {"X"}, {"Y"});
  b.node("Identity", {"K"}, {"KC"});
  b.node("Add", {"X", "K"}, {"Z"});
  b.output("Y").output("KC").output("Z");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  for (bool optimize : {false, true}) {
    auto s = make_session(m.value(), optimize);
    ASSERT_TRUE(s);
    Tensor x = random_f32({2, 3}, 5);
    auto r = s->run({x});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    ASSERT_EQ(r.value().size(), 3u);
    EXPECT_TRUE(bit_equal(r.value()[0], x));
    EXPECT_NE(r.value()[0].raw(), x.raw()) << "outputs must not alias inputs";
    EXPECT_EQ(r.value()[1].shape(), (Shape{3}));
    EXPECT_EQ(s->output_names(), (std::vector<std::string>{"Y", "KC", "Z"}));
  }
}

TEST(Runtime, UnsupportedOpsListedAtCreation) {
  OnnxBuilder b(13);
  b.input("X", {2, 3});
  b.node("Relu", {"X"}, {"a"});
  auto* f1 = b.node("FooOp", {"a"}, {"b"}, "foo1");
  f1->set_domain("com.example");
  auto* f2 = b.node("FooOp", {"b"}, {"c"}, "foo2");
  f2->set_domain("com.example");
  auto* f3 = b.node("BarOp", {"c"}, {"Y"}, "bar1");
  f3->set_domain("com.example");
  b.output("Y");
  auto* o = b.proto().add_opset_import();
  o->set_domain("com.example");
  o->set_version(1);
  LoadOptions lo;
  lo.run_checker = false;
  auto m = load_model_from_bytes(b.bytes(), "custom.onnx", lo);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  auto s = Session::create(m.value());
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnsupported);
  const std::string& msg = s.status().message();
  for (const char* w : {"FooOp", "BarOp", "'foo1'", "'foo2'", "'bar1'"})
    EXPECT_NE(msg.find(w), std::string::npos) << w << " missing in: " << msg;
}

}  // namespace
}  // namespace medq
