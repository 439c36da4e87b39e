// Graph pass tests: each pass on small ONNX models built in the test. Checks
// (a) the rewrite happened (op counts / attributes) and (b) the rewritten graph
// computes the same outputs as the original (both run without passes) within
// 1e-5 on random inputs. Plus the full default pipeline on the shared models.
#include <gtest/gtest.h>
#include <dirent.h>

#include <cmath>

#include "ops/fused.h"
#include "passes/pass.h"
#include "onnx_test_builder.h"

namespace medq {
namespace {

using namespace testing_onnx;

Graph apply(const Model& m, const std::vector<std::string>& names, PassContext* out_ctx = nullptr) {
  PassContext ctx;
  ctx.opset = m.opset("");
  ctx.verify = true;
  Graph g = m.graph;
  auto ps = make_pipeline(names);
  EXPECT_TRUE(ps.is_ok()) << ps.status().message();
  Status st = run_passes(g, ctx, ps.value());
  EXPECT_TRUE(st.is_ok()) << st.message();
  EXPECT_TRUE(g.verify().is_ok());
  if (out_ctx) *out_ctx = ctx;
  return g;
}

// Runs `m` as is and with graph `g`; both without passes. Skips when an op has no kernel yet.
#define EXPECT_SAME_OUTPUTS(m, g, tol, ...)                                              \
  do {                                                                                      \
    std::vector<Tensor> _ref, _got;                                                         \
    Status _s1 = run_model((m), std::vector<Tensor>{__VA_ARGS__}, false, &_ref);                                    \
    if (_s1.code() == StatusCode::kUnsupported) GTEST_SKIP() << _s1.message();              \
    ASSERT_TRUE(_s1.is_ok()) << _s1.message();                                              \
    Status _s2 = run_model(with_graph((m), (g)), std::vector<Tensor>{__VA_ARGS__}, false, &_got);                   \
    ASSERT_TRUE(_s2.is_ok()) << _s2.message();                                              \
    ASSERT_EQ(_ref.size(), _got.size());                                                    \
    for (size_t _i = 0; _i < _ref.size(); ++_i)                                             \
      EXPECT_LE(max_abs_diff(_got[_i], _ref[_i]), (tol)) << "output " << _i;                \
  } while (0)

// Conv X[1,3,6,6] * W[4,3,3,3] (+B) pads 1 -> name.
void add_conv(OnnxBuilder& b, const std::string& x, const std::string& y, const std::string& prefix, bool bias,
              uint32_t seed, int64_t cin = 3, int64_t cout = 4) {
  b.init(prefix + "_W", random_f32({cout, cin, 3, 3}, seed));
  std::vector<std::string> ins = {x, prefix + "_W"};
  if (bias) {
    b.init(prefix + "_B", random_f32({cout}, seed + 1));
    ins.push_back(prefix + "_B");
  }
  auto* n = b.node("Conv", ins, {y}, prefix);
  attr_ints(n, "pads", {1, 1, 1, 1});
  attr_ints(n, "kernel_shape", {3, 3});
}

// ---------------------------------------------------------------- identity / dropout

TEST(PassIdentity, RemovesIdentityAndDropoutChains) {
  OnnxBuilder b(13);
  b.input("X", {2, 5});
  b.node("Relu", {"X"}, {"a"});
  b.node("Identity", {"a"}, {"b"});
  b.node("Dropout", {"b"}, {"c"});
  b.node("Relu", {"c"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"identity"});
  EXPECT_EQ(count_op(g, "Identity"), 0);
  EXPECT_EQ(count_op(g, "Dropout"), 0);
  EXPECT_EQ(g.nodes.size(), 2u);
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-6, random_f32({2, 5}, 1));
}

TEST(PassIdentity, IdentityProducingGraphOutputKeepsOutputName) {
  OnnxBuilder b(13);
  b.input("X", {2, 5});
  b.node("Relu", {"X"}, {"a"});
  b.node("Identity", {"a"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"identity"});
  EXPECT_EQ(count_op(g, "Identity"), 0);
  ASSERT_EQ(g.outputs.size(), 1u);
  EXPECT_EQ(g.value(g.outputs[0]).name, "Y");
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-6, random_f32({2, 5}, 2));
}

TEST(PassIdentity, KeepsIdentityFromGraphInputToGraphOutput) {
  OnnxBuilder b(13);
  b.input("X", {2, 5});
  b.node("Identity", {"X"}, {"Y"});
  b.node("Relu", {"X"}, {"Z"});
  b.output("Y").output("Z");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"identity"});
  EXPECT_EQ(count_op(g, "Identity"), 1);
  EXPECT_SAME_OUTPUTS(m.value(), g, 0, random_f32({2, 5}, 3));
}

TEST(PassIdentity, IdentityOutputUsedTwiceAndAsGraphOutput) {
  // a = Relu(X); Y = Identity(a) is a graph output and a also feeds another node.
  OnnxBuilder b(13);
  b.input("X", {2, 5});
  b.node("Relu", {"X"}, {"a"});
  b.node("Identity", {"a"}, {"Y"});
  b.node("Neg", {"a"}, {"Z"});
  b.output("Y").output("Z");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"identity", "dce"});
  EXPECT_EQ(g.value(g.outputs[0]).name, "Y");
  EXPECT_EQ(g.value(g.outputs[1]).name, "Z");
  EXPECT_SAME_OUTPUTS(m.value(), g, 0, random_f32({2, 5}, 4));
}

TEST(PassIdentity, KeepsDropoutWhoseMaskIsUsed) {
  OnnxBuilder b(12);
  b.input("X", {2, 5});
  b.node("Dropout", {"X"}, {"a", "mask"});
  b.node("Relu", {"a"}, {"Y"});
  b.output("Y").output("mask", onnx::TensorProto::BOOL);
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"identity"});
  EXPECT_EQ(count_op(g, "Dropout"), 1);
}

TEST(PassIdentity, KeepsDropoutInTrainingModeOrUnknownMode) {
  for (bool constant : {true, false}) {
    OnnxBuilder b(13);
    b.input("X", {2, 5});
    if (constant) b.init("training", Tensor::scalar<bool>(true));
    else b.input("training", {}, onnx::TensorProto::BOOL);
    b.node("Dropout", {"X", "", "training"}, {"Y"});
    b.output("Y");
    auto m = b.build();
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    Graph g = apply(m.value(), {"identity"});
    EXPECT_EQ(count_op(g, "Dropout"), 1) << "constant training_mode: " << constant;
  }
}

// ---------------------------------------------------------------- dead code

TEST(PassDce, RemovesUnusedNodesAndInitializers) {
  OnnxBuilder b(13);
  b.input("X", {2, 5});
  b.init("unused_c", random_f32({5}, 9));
  b.node("Add", {"X", "unused_c"}, {"dead1"});
  b.node("Relu", {"dead1"}, {"dead2"});
  b.node("Relu", {"X"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"dce"});
  EXPECT_EQ(g.nodes.size(), 1u);
  uint32_t c = g.find_value("unused_c");
  ASSERT_NE(c, kNoValue);
  EXPECT_FALSE(g.value(c).is_constant()) << "unused initializer should be dropped";
  EXPECT_SAME_OUTPUTS(m.value(), g, 0, random_f32({2, 5}, 5));
}

TEST(PassDce, KeepsNodesWithOneLiveOutput) {
  OnnxBuilder b(13);
  b.input("X", {4, 6});
  b.init("split", Tensor::from_vector<int64_t>({2, 2}, {2}));
  b.node("Split", {"X", "split"}, {"s0", "s1"});
  b.node("Relu", {"s1"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"dce"});
  EXPECT_EQ(g.nodes.size(), 2u);
  EXPECT_SAME_OUTPUTS(m.value(), g, 0, random_f32({4, 6}, 6));
}

// ---------------------------------------------------------------- constant folding

TEST(PassFold, FoldsConstantSubgraph) {
  OnnxBuilder b(13);
  b.input("X", {2, 3});
  b.init("c1", random_f32({3}, 10));
  b.init("c2", random_f32({3}, 11));
  b.node("Add", {"c1", "c2"}, {"c3"});
  b.node("Relu", {"c3"}, {"c4"});
  b.node("Mul", {"X", "c4"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  PassContext ctx;
  Graph g = apply(m.value(), {"fold", "dce"}, &ctx);
  EXPECT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(count_op(g, "Mul"), 1);
  EXPECT_FALSE(ctx.log.empty());
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-6, random_f32({2, 3}, 12));
}

TEST(PassFold, ConstantNodeAndConstantGraphOutput) {
  // A Constant node folds to an initializer; an all-constant node producing a graph
  // output must still be produced (output name kept).
  OnnxBuilder b(13);
  b.input("X", {3});
  auto* c = b.node("Constant", {}, {"k"});
  auto* a = c->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  tensor_to_proto(Tensor::from_vector<float>({1, 2, 3}, {3}), "", a->mutable_t());
  b.node("Neg", {"k"}, {"K2"});
  b.node("Add", {"X", "k"}, {"Y"});
  b.output("Y").output("K2");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fold", "dce"});
  EXPECT_EQ(count_op(g, "Constant"), 0);
  EXPECT_EQ(g.value(g.outputs[1]).name, "K2");
  EXPECT_SAME_OUTPUTS(m.value(), g, 0, random_f32({3}, 13));
}

TEST(PassFold, ShapeChainWithDynamicBatchStaysCorrect) {
  // X[N,3,4,4] -> Shape -> Gather(0) -> Unsqueeze -> Concat(-1) -> Reshape(X) = [N, 48].
  OnnxBuilder b(13);
  b.input("X", {-1, 3, 4, 4});
  b.init("idx0", Tensor::scalar<int64_t>(0));
  b.init("axes0", Tensor::from_vector<int64_t>({0}, {1}));
  b.init("minus1", Tensor::from_vector<int64_t>({-1}, {1}));
  b.init("c_scale", Tensor::from_vector<float>({2.0f}, {1}));
  b.init("c_one", Tensor::from_vector<float>({1.0f}, {1}));
  b.node("Shape", {"X"}, {"shp"});
  b.node("Gather", {"shp", "idx0"}, {"n"});
  auto* g0 = b.proto().mutable_graph()->mutable_node(1);
  attr_i(g0, "axis", 0);
  b.node("Unsqueeze", {"n", "axes0"}, {"n1"});
  auto* cc = b.node("Concat", {"n1", "minus1"}, {"newshape"});
  attr_i(cc, "axis", 0);
  b.node("Reshape", {"X", "newshape"}, {"r"});
  b.node("Add", {"c_scale", "c_one"}, {"c3"});  // foldable
  b.node("Mul", {"r", "c3"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fold", "dce"});
  EXPECT_EQ(count_op(g, "Add"), 0);
  EXPECT_EQ(count_op(g, "Reshape"), 1);
  for (int64_t n : {1, 3, 8, 1}) {
    std::vector<Tensor> in = {random_f32({n, 3, 4, 4}, 20 + static_cast<uint32_t>(n))};
    std::vector<Tensor> ref;
    Status st = run_model(with_graph(m.value(), g), in, false, &ref);
    if (st.code() == StatusCode::kUnsupported) GTEST_SKIP() << st.message();
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_EQ(ref[0].shape(), (Shape{n, 48}));
    for (int64_t i = 0; i < ref[0].numel(); ++i) ASSERT_FLOAT_EQ(ref[0].data<float>()[i], 3.0f * in[0].data<float>()[i]);
    EXPECT_SAME_OUTPUTS(m.value(), g, 0, in);
  }
}

TEST(PassFold, StaticShapeChainFoldsToConstantReshape) {
  // With a static input shape the Shape chain folds completely (Shape of a value
  // whose shape is fully known is a constant).
  OnnxBuilder b(13);
  b.input("X", {2, 3, 4, 4});
  b.init("idx0", Tensor::scalar<int64_t>(0));
  b.init("axes0", Tensor::from_vector<int64_t>({0}, {1}));
  b.init("minus1", Tensor::from_vector<int64_t>({-1}, {1}));
  b.node("Relu", {"X"}, {"x1"});
  b.node("Shape", {"x1"}, {"shp"});
  auto* g0 = b.node("Gather", {"shp", "idx0"}, {"n"});
  attr_i(g0, "axis", 0);
  b.node("Unsqueeze", {"n", "axes0"}, {"n1"});
  auto* cc = b.node("Concat", {"n1", "minus1"}, {"newshape"});
  attr_i(cc, "axis", 0);
  b.node("Reshape", {"x1", "newshape"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fold", "dce"});
  EXPECT_EQ(count_op(g, "Shape"), 0) << graph_to_string(g);
  EXPECT_EQ(count_op(g, "Concat"), 0) << graph_to_string(g);
  EXPECT_EQ(g.nodes.size(), 2u) << graph_to_string(g);
  EXPECT_SAME_OUTPUTS(m.value(), g, 0, random_f32({2, 3, 4, 4}, 30));
}

// ---------------------------------------------------------------- BN folding

// Reference: conv-only model output, then BN applied by hand.
void check_bn_fold(bool conv_bias, float eps) {
  OnnxBuilder b(13);
  b.input("X", {2, 3, 6, 6});
  add_conv(b, "X", "c", "conv", conv_bias, 40);
  b.init("gamma", random_f32({4}, 41, 0.5f, 1.5f));
  b.init("beta", random_f32({4}, 42));
  b.init("mean", random_f32({4}, 43));
  b.init("var", random_f32({4}, 44, 0.01f, 2.0f));
  auto* bn = b.node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"Y"}, "bn");
  attr_f(bn, "epsilon", eps);
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"bn", "dce"});
  ASSERT_EQ(g.nodes.size(), 1u) << graph_to_string(g);
  EXPECT_EQ(g.nodes[0].op_type, "Conv");
  EXPECT_EQ(g.nodes[0].inputs.size(), 3u);
  EXPECT_EQ(g.value(g.outputs[0]).name, "Y");

  Tensor x = random_f32({2, 3, 6, 6}, 45);
  std::vector<Tensor> got;
  Status st = run_model(with_graph(m.value(), g), {x}, false, &got);
  if (st.code() == StatusCode::kUnsupported) GTEST_SKIP() << st.message();
  ASSERT_TRUE(st.is_ok()) << st.message();
  // Conv alone: a graph whose output is the conv's output.
  Graph conv_only = m.value().graph;
  conv_only.outputs = {conv_only.find_value("c")};
  for (auto& n : conv_only.nodes) if (n.op_type == "BatchNormalization") n.dead = true;
  ASSERT_TRUE(conv_only.finalize().is_ok());
  std::vector<Tensor> c;
  ASSERT_TRUE(run_model(with_graph(m.value(), conv_only), {x}, false, &c).is_ok());
  const Graph& og = m.value().graph;
  auto p = [&](const char* n) { return og.value(og.find_value(n)).initializer.data<float>(); };
  Tensor ref = c[0].clone();
  float* r = ref.data<float>();
  for (int64_t i = 0; i < ref.numel(); ++i) {
    int64_t ch = (i / 36) % 4;
    r[i] = (r[i] - p("mean")[ch]) / std::sqrt(p("var")[ch] + eps) * p("gamma")[ch] + p("beta")[ch];
  }
  EXPECT_LE(max_abs_diff(got[0], ref), 1e-5);
  // And against the BN kernel itself when one exists.
  std::vector<Tensor> bn_ref;
  Status s2 = run_model(m.value(), {x}, false, &bn_ref);
  if (s2.is_ok()) {
    EXPECT_LE(max_abs_diff(got[0], bn_ref[0]), 1e-5);
  }
}

TEST(PassBatchNorm, FoldsIntoConvWithBias) { check_bn_fold(true, 1e-5f); }
TEST(PassBatchNorm, FoldsIntoConvWithoutBiasLargeEpsilon) { check_bn_fold(false, 1e-2f); }

TEST(PassBatchNorm, NoFoldWhenConvOutputHasTwoUses) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 50);
  b.init("gamma", random_f32({4}, 51, 0.5f, 1.5f));
  b.init("beta", random_f32({4}, 52));
  b.init("mean", random_f32({4}, 53));
  b.init("var", random_f32({4}, 54, 0.1f, 2.0f));
  b.node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"Y"}, "bn");
  b.node("Relu", {"c"}, {"Z"});
  b.output("Y").output("Z");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"bn"});
  EXPECT_EQ(count_op(g, "BatchNormalization"), 1);
}

TEST(PassBatchNorm, NoFoldWhenConvOutputIsGraphOutput) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 55);
  b.init("gamma", random_f32({4}, 56, 0.5f, 1.5f));
  b.init("beta", random_f32({4}, 57));
  b.init("mean", random_f32({4}, 58));
  b.init("var", random_f32({4}, 59, 0.1f, 2.0f));
  b.node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"Y"}, "bn");
  b.output("Y").output("c");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"bn"});
  EXPECT_EQ(count_op(g, "BatchNormalization"), 1);
}

// ---------------------------------------------------------------- conv fusion

TEST(PassFuse, ConvRelu) {
  OnnxBuilder b(13);
  b.input("X", {2, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 60);
  b.node("Relu", {"c"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].op_type, "FusedConv");
  EXPECT_EQ(g.nodes[0].domain, kMedqDomain);
  EXPECT_EQ(g.nodes[0].attr_s("activation", ""), "Relu");
  EXPECT_EQ(g.value(g.outputs[0]).name, "Y");
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({2, 3, 6, 6}, 61));
}

TEST(PassFuse, ConvOutputThatIsGraphOutputIsNotFusedAway) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 62);
  b.node("Relu", {"c"}, {"Y"});
  b.output("c").output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"identity", "fold", "bn", "fuse", "dce"});
  EXPECT_EQ(count_op(g, "Relu"), 1);
  EXPECT_EQ(g.value(g.outputs[0]).name, "c");
  EXPECT_EQ(g.value(g.outputs[1]).name, "Y");
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 63));
}

TEST(PassFuse, ConvWithTwoConsumersIsNotFused) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 64);
  b.node("Relu", {"c"}, {"Y"});
  b.node("Sigmoid", {"c"}, {"Z"});
  b.output("Y").output("Z");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  EXPECT_EQ(count_op(g, "Conv"), 1);
  EXPECT_EQ(count_op(g, "FusedConv"), 0);
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 65));
}

TEST(PassFuse, ConvAddReluResidualWithoutBias) {
  // Y = Relu(Conv2(Relu(Conv1(X))) + X): conv without bias, residual sum then activation.
  OnnxBuilder b(13);
  b.input("X", {-1, 4, 6, 6});
  add_conv(b, "X", "c1", "conv1", true, 70, 4, 4);
  b.node("Relu", {"c1"}, {"r1"});
  add_conv(b, "r1", "c2", "conv2", false, 72, 4, 4);
  b.node("Add", {"c2", "X"}, {"s"});
  b.node("Relu", {"s"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse", "dce"});
  ASSERT_EQ(g.nodes.size(), 2u) << graph_to_string(g);
  EXPECT_EQ(count_op(g, "FusedConv"), 2);
  const Node& last = g.nodes[1];
  ASSERT_EQ(last.inputs.size(), 4u);
  EXPECT_EQ(last.inputs[2], kNoValue);
  EXPECT_EQ(g.value(last.inputs[3]).name, "X");
  EXPECT_EQ(last.attr_s("activation", ""), "Relu");
  for (int64_t n : {1, 3})
    EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({n, 4, 6, 6}, 73 + static_cast<uint32_t>(n)));
}

TEST(PassFuse, AddWithBroadcastOperandIsNotFusedAsSum) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  b.input("B", {1, 4, 1, 1});
  add_conv(b, "X", "c", "conv", true, 80);
  b.node("Add", {"c", "B"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  EXPECT_EQ(count_op(g, "Add"), 1) << graph_to_string(g);
  EXPECT_EQ(count_op(g, "FusedConv"), 0);
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 81), random_f32({1, 4, 1, 1}, 82));
}

TEST(PassFuse, AddWithConstantOperandIsNotFusedAsSum) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  b.init("K", random_f32({1, 4, 6, 6}, 83));
  add_conv(b, "X", "c", "conv", true, 84);
  b.node("Add", {"K", "c"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  EXPECT_EQ(count_op(g, "Add"), 1);
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 85));
}

TEST(PassFuse, AddOfConvWithItselfIsNotFused) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 86);
  b.node("Add", {"c", "c"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  EXPECT_EQ(count_op(g, "Add"), 1);
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 87));
}

TEST(PassFuse, ClipInputsAtOpset13) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 90);
  b.init("lo", Tensor::scalar<float>(-0.25f));
  b.init("hi", Tensor::scalar<float>(0.5f));
  b.node("Clip", {"c", "lo", "hi"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].attr_s("activation", ""), "Clip");
  EXPECT_EQ(g.nodes[0].attr_floats("activation_params"), (std::vector<float>{-0.25f, 0.5f}));
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 91));
}

TEST(PassFuse, ClipOnlyMaxInputAtOpset13) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 92);
  b.init("hi", Tensor::scalar<float>(0.5f));
  b.node("Clip", {"c", "", "hi"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 93, -3, 3));
}

TEST(PassFuse, ClipWithDynamicBoundsIsNotFused) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  b.input("hi", {}, kF32);
  add_conv(b, "X", "c", "conv", true, 94);
  b.node("Clip", {"c", "", "hi"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  EXPECT_EQ(count_op(g, "Clip"), 1);
}

TEST(PassFuse, ClipAttributesAtOpset7) {  // Clip-6 (min/max attributes); opsets < 7 are rejected by the loader
  OnnxBuilder b(7, 4);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c", "conv", true, 95);
  auto* clip = b.node("Clip", {"c"}, {"Y"});
  attr_f(clip, "min", 0.0f);
  attr_f(clip, "max", 6.0f);
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse"});
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].attr_floats("activation_params"), (std::vector<float>{0.0f, 6.0f}));
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 96, -10, 10));
}

TEST(PassFuse, LeakyReluAndSiLU) {
  OnnxBuilder b(13);
  b.input("X", {1, 3, 6, 6});
  add_conv(b, "X", "c1", "conv1", true, 100);
  auto* lr = b.node("LeakyRelu", {"c1"}, {"l"});
  attr_f(lr, "alpha", 0.2f);
  add_conv(b, "l", "c2", "conv2", true, 102, 4, 4);
  b.node("Sigmoid", {"c2"}, {"sg"});
  b.node("Mul", {"c2", "sg"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = apply(m.value(), {"fuse", "dce"});
  ASSERT_EQ(g.nodes.size(), 2u) << graph_to_string(g);
  EXPECT_EQ(g.nodes[0].attr_s("activation", ""), "LeakyRelu");
  EXPECT_EQ(g.nodes[1].attr_s("activation", ""), "SiLU");
  EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 104));
}

// torch exports hardswish below opset 14 as x * HardSigmoid(x; 1/6, 0.5): fused into the conv as
// HardSwish (mobilenet_v3). Another HardSigmoid gate is a different function and stays.
TEST(PassFuse, HardSigmoidGateBecomesHardSwish) {
  for (float alpha : {1.0f / 6, 0.2f}) {
    SCOPED_TRACE("alpha " + std::to_string(alpha));
    OnnxBuilder b(13);
    b.input("X", {1, 3, 6, 6});
    add_conv(b, "X", "c", "conv", true, 105);
    auto* hs = b.node("HardSigmoid", {"c"}, {"h"});
    attr_f(hs, "alpha", alpha);
    b.node("Mul", {"h", "c"}, {"Y"});
    b.output("Y");
    auto m = b.build();
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    Graph g = apply(m.value(), {"fuse", "dce"});
    if (alpha == 0.2f) {
      EXPECT_EQ(count_op(g, "HardSigmoid"), 1) << graph_to_string(g);
      EXPECT_EQ(count_op(g, "Mul"), 1);
    } else {
      ASSERT_EQ(g.nodes.size(), 1u) << graph_to_string(g);
      EXPECT_EQ(g.nodes[0].attr_s("activation", ""), "HardSwish");
    }
    EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({1, 3, 6, 6}, 106, -6, 6));
  }
}

// torch's LayerNorm below opset 17 (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul
// gamma, Add beta) becomes one LayerNormalization; a mean over a non-trailing axis, or a
// deviation used elsewhere, is left alone.
TEST(PassLayerNorm, DecomposedLayerNormIsRecovered) {
  struct Case {
    std::vector<int64_t> axes;
    bool extra_use, beta, fused;
  };
  for (const Case& c : {Case{{-1}, false, true, true}, Case{{2, 3}, false, true, true}, Case{{-1}, false, false, true},
                        Case{{1}, false, true, false}, Case{{-1}, true, true, false}}) {
    SCOPED_TRACE("axes " + std::to_string(c.axes[0]) + " extra use " + std::to_string(c.extra_use));
    OnnxBuilder b(13);
    b.input("X", {-1, 3, 5, 8});
    const int64_t inner = c.axes.size() == 2 ? 40 : (c.axes[0] == 1 ? 3 : 8);
    const Shape ps = c.axes.size() == 2 ? Shape{5, 8} : c.axes[0] == 1 ? Shape{3, 1, 1} : Shape{inner};
    attr_ints(b.node("ReduceMean", {"X"}, {"m"}), "axes", c.axes);
    b.node("Sub", {"X", "m"}, {"d"});
    b.init("two", Tensor::scalar<float>(2.f));
    b.node("Pow", {"d", "two"}, {"p"});
    attr_ints(b.node("ReduceMean", {"p"}, {"v"}), "axes", c.axes);
    b.init("eps", Tensor::scalar<float>(1e-6f));
    b.node("Add", {"v", "eps"}, {"ve"});
    b.node("Sqrt", {"ve"}, {"s"});
    b.node("Div", {"d", "s"}, {"n"});
    b.init("gamma", random_f32(ps, 160, 0.5f, 1.5f));
    b.node("Mul", {"n", "gamma"}, {c.beta ? "y" : "Y"});
    if (c.beta) {
      b.init("beta", random_f32(ps, 161));
      b.node("Add", {"y", "beta"}, {"Y"});
    }
    b.output("Y");
    if (c.extra_use) {
      b.node("Relu", {"d"}, {"Z"});
      b.output("Z");
    }
    auto m = b.build();
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    Graph g = apply(m.value(), {"layernorm", "dce"});
    EXPECT_EQ(count_op(g, "LayerNormalization"), c.fused ? 1 : 0) << graph_to_string(g);
    EXPECT_EQ(count_op(g, "ReduceMean"), c.fused ? 0 : 2);
    if (c.fused) {
      EXPECT_EQ(g.nodes.size(), 1u) << graph_to_string(g);
      EXPECT_FLOAT_EQ(g.nodes[0].attr_f("epsilon", 0), 1e-6f);
      EXPECT_EQ(g.nodes[0].attr_i("axis", 0), c.axes.size() == 2 ? -2 : -1);
    }
    EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({2, 3, 5, 8}, 162, -3, 3));
  }
}

// A transformer projection: MatMul(A, constant B) + constant bias [N] becomes FusedMatMul (bias in
// the GEMM's epilogue); a bias that is not along the last axis alone stays a separate Add.
TEST(PassFuse, MatMulBiasBecomesFusedMatMul) {
  for (bool per_row : {false, true}) {
    SCOPED_TRACE(per_row ? "bias [5, 16]" : "bias [16]");
    OnnxBuilder b(13);
    b.input("X", {2, 5, 8});
    b.init("B", random_f32({8, 16}, 170));
    b.init("bias", random_f32(per_row ? Shape{5, 16} : Shape{16}, 171));
    b.node("MatMul", {"X", "B"}, {"m"});
    b.node("Add", {"bias", "m"}, {"Y"});
    b.output("Y");
    auto m = b.build();
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    Graph g = apply(m.value(), {"fuse", "dce"});
    EXPECT_EQ(count_op(g, "FusedMatMul"), per_row ? 0 : 1) << graph_to_string(g);
    EXPECT_EQ(count_op(g, "Add"), per_row ? 1 : 0);
    EXPECT_SAME_OUTPUTS(m.value(), g, 1e-5, random_f32({2, 5, 8}, 172));
  }
}

TEST(PassPipeline, DefaultPipelineOnConvBnReluResidual) {
  OnnxBuilder b(13);
  b.input("X", {-1, 4, 6, 6});
  add_conv(b, "X", "c1", "conv1", false, 110, 4, 4);
  b.init("gamma", random_f32({4}, 111, 0.5f, 1.5f));
  b.init("beta", random_f32({4}, 112));
  b.init("mean", random_f32({4}, 113));
  b.init("var", random_f32({4}, 114, 0.1f, 2.0f));
  b.node("BatchNormalization", {"c1", "gamma", "beta", "mean", "var"}, {"bn1"}, "bn1");
  b.node("Identity", {"bn1"}, {"id1"});
  b.node("Add", {"id1", "X"}, {"s"});
  b.node("Relu", {"s"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  Graph g = m.value().graph;
  PassContext ctx;
  ctx.opset = 13;
  ctx.verify = true;
  ASSERT_TRUE(run_default_pipeline(g, ctx).is_ok());
  ASSERT_EQ(g.nodes.size(), 1u) << graph_to_string(g);
  EXPECT_EQ(g.nodes[0].op_type, "FusedConv");
  EXPECT_EQ(g.value(g.outputs[0]).name, "Y");
  Tensor x = random_f32({2, 4, 6, 6}, 115);
  std::vector<Tensor> got;
  Status st = run_model(with_graph(m.value(), g), {x}, false, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  std::vector<Tensor> ref;
  Status s2 = run_model(m.value(), {x}, false, &ref);
  if (s2.code() == StatusCode::kUnsupported) GTEST_SKIP() << s2.message();
  ASSERT_TRUE(s2.is_ok()) << s2.message();
  EXPECT_LE(max_abs_diff(got[0], ref[0]), 1e-5);
}

TEST(PassPipeline, UnknownPassNameIsAnError) {
  auto p = make_pipeline({"fold", "nope"});
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.status().message().find("nope"), std::string::npos);
}

// ---------------------------------------------------------------- real models

std::vector<std::string> shared_models() {
  std::vector<std::string> r;
  std::string dir = std::string(MEDQ_SHARED_DATA) + "/models";
  DIR* d = opendir(dir.c_str());
  if (!d) return r;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 5 && n.substr(n.size() - 5) == ".onnx") r.push_back(dir + "/" + n);
  }
  closedir(d);
  std::sort(r.begin(), r.end());
  return r;
}

TEST(PassPipeline, SharedModelsOptimizedMatchUnoptimized) {
  auto models = shared_models();
  if (models.empty()) GTEST_SKIP() << "no models in " << MEDQ_SHARED_DATA << "/models";
  for (const auto& path : models) {
    SCOPED_TRACE(path);
    auto m = load_model(path);
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    SessionOptions o0, o1;
    o0.optimize = false;
    o1.optimize = true;
    o1.verify_passes = true;
    auto s0 = Session::create(m.value(), o0);
    if (!s0.is_ok() && s0.status().code() == StatusCode::kUnsupported) GTEST_SKIP() << s0.status().message();
    ASSERT_TRUE(s0.is_ok()) << s0.status().message();
    auto s1 = Session::create(m.value(), o1);
    ASSERT_TRUE(s1.is_ok()) << s1.status().message();
    EXPECT_LT(s1.value()->graph().nodes.size(), s0.value()->graph().nodes.size());
    std::vector<Tensor> in;
    for (size_t i = 0; i < s0.value()->graph().inputs.size(); ++i) {
      const Value& v = s0.value()->input_value(i);
      ASSERT_EQ(v.dtype, DataType::kFloat32);
      Shape s = v.shape;
      for (auto& d : s) if (d < 0) d = 1;
      in.push_back(random_f32(s, 120 + static_cast<uint32_t>(i)));
    }
    auto r0 = s0.value()->run(in);
    ASSERT_TRUE(r0.is_ok()) << r0.status().message();
    auto r1 = s1.value()->run(in);
    ASSERT_TRUE(r1.is_ok()) << r1.status().message();
    ASSERT_EQ(r0.value().size(), r1.value().size());
    for (size_t i = 0; i < r0.value().size(); ++i) {
      double scale = 0;
      const Tensor& t = r0.value()[i];
      for (int64_t j = 0; j < t.numel(); ++j) scale = std::max(scale, std::fabs(double(t.data<float>()[j])));
      // Deep nets: BN folding reassociates float math; 1e-5 relative to the output magnitude.
      EXPECT_LE(max_abs_diff(r1.value()[i], t), 1e-5 * std::max(1.0, scale)) << "output " << i;
    }
  }
}


// ---------------------------------------------------------------- fp16 legalization

// Same Conv -> Relu -> GlobalAveragePool model in float16 end to end (float16 graph
// input and output, float16 weights, a Cast inside) and in float32 with the same
// (fp16-rounded) weights. The session runs the fp16 one on fp32 kernels; results
// agree to fp16 output rounding, with and without the optimizing passes.
TEST(PassFp16, Float16ModelRunsOnFloat32Kernels) {
  Tensor w32 = random_f32({4, 3, 3, 3}, 11), b32 = random_f32({4}, 12);
  Tensor w16(DataType::kFloat16, w32.shape()), b16(DataType::kFloat16, b32.shape());
  for (int64_t i = 0; i < w32.numel(); ++i) {
    w16.data<uint16_t>()[i] = float_to_half(w32.data<float>()[i]);
    w32.data<float>()[i] = half_to_float(w16.data<uint16_t>()[i]);
  }
  for (int64_t i = 0; i < b32.numel(); ++i) {
    b16.data<uint16_t>()[i] = float_to_half(b32.data<float>()[i]);
    b32.data<float>()[i] = half_to_float(b16.data<uint16_t>()[i]);
  }
  auto build = [&](bool half) {
    const int et = half ? 10 : kF32;
    OnnxBuilder b(13);
    b.input("X", {-1, 3, 6, 6}, et);
    b.init("W", half ? w16 : w32).init("B", half ? b16 : b32);
    auto* c = b.node("Conv", {"X", "W", "B"}, {"c"}, "conv");
    attr_ints(c, "pads", {1, 1, 1, 1});
    b.node("Relu", {"c"}, {"r"}, "relu");
    // A Cast to the model's own float type (fp16 -> fp16 after legalization: Identity).
    auto* k = b.node("Cast", {"r"}, {"k"}, "cast");
    attr_i(k, "to", et);
    b.node("GlobalAveragePool", {"k"}, {"Y"}, "gap");
    b.output("Y", et);
    return b.build(half ? "conv_fp16.onnx" : "conv_fp32.onnx");
  };
  auto m16 = build(true), m32 = build(false);
  ASSERT_TRUE(m16.is_ok()) << m16.status().message();
  ASSERT_TRUE(m32.is_ok()) << m32.status().message();
  Tensor x32 = random_f32({2, 3, 6, 6}, 13);
  Tensor x16(DataType::kFloat16, x32.shape());
  for (int64_t i = 0; i < x32.numel(); ++i) {
    x16.data<uint16_t>()[i] = float_to_half(x32.data<float>()[i]);
    x32.data<float>()[i] = half_to_float(x16.data<uint16_t>()[i]);
  }
  std::vector<Tensor> ref;
  ASSERT_TRUE(run_model(m32.value(), {x32}, true, &ref).is_ok());
  for (bool optimize : {false, true}) {
    std::vector<Tensor> got;
    Status st = run_model(m16.value(), {x16}, optimize, &got);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_EQ(got[0].dtype(), DataType::kFloat16);
    ASSERT_EQ(got[0].shape(), ref[0].shape());
    for (int64_t i = 0; i < ref[0].numel(); ++i) {
      float want = ref[0].data<float>()[i];
      EXPECT_NEAR(half_to_float(got[0].data<uint16_t>()[i]), want, 1e-3 + 1e-3 * std::fabs(want)) << i;
    }
  }
  // The pass itself: no float16 value is left inside the graph, boundary casts added.
  Graph g = apply(m16.value(), {"fp16"});
  int casts = 0;
  for (const auto& n : g.nodes) casts += n.op_type == "Cast";
  EXPECT_EQ(casts, 2);
  for (const auto& n : g.nodes)
    if (n.op_type == "Conv")
      for (uint32_t in : n.inputs) EXPECT_EQ(g.value(in).dtype, DataType::kFloat32) << g.value(in).name;
  EXPECT_EQ(g.value(g.inputs[0]).dtype, DataType::kFloat16);
  EXPECT_EQ(g.value(g.outputs[0]).dtype, DataType::kFloat16);
}

// Models without float16 compute are left alone by the legalization.
TEST(PassFp16, Float32ModelUnchanged) {
  OnnxBuilder b(13);
  b.input("X", {-1, 3, 6, 6});
  add_conv(b, "X", "Y", "c1", true, 3);
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  PassContext ctx;
  Graph g = apply(m.value(), {"fp16"}, &ctx);
  EXPECT_TRUE(ctx.log.empty());
  EXPECT_EQ(g.nodes.size(), m.value().graph.nodes.size());
}

}  // namespace
}  // namespace medq
