// assign_layouts pass: which values become blocked (nhwc / nChw16c between
// dnnl kernels), that the markers agree on both sides of every value, and
// that the compiled graphs compute what the original computes.
#include <gtest/gtest.h>

#include "kernels/dnnl/dnnl_layout.h"
#include "onnx_test_builder.h"
#include "ops/fused.h"
#include "passes/pass.h"
#include "runtime/session.h"

namespace medq {
namespace {

using namespace testing_onnx;

Graph optimize(const Model& m, std::vector<std::string> backends = {}, PassContext* out = nullptr,
               const std::string& layout = "") {
  PassContext ctx;
  ctx.opset = m.opset("");
  ctx.verify = true;
  ctx.backends = std::move(backends);
  ctx.layout = layout;
  Graph g = m.graph;
  Status st = run_default_pipeline(g, ctx);
  EXPECT_TRUE(st.is_ok()) << st.message();
  if (out) *out = ctx;
  return g;
}

// Layout of value `name` as written by its producer; checks every consumer agrees.
Layout layout_of(const Graph& g, const std::string& name) {
  const uint32_t vid = g.find_value(name);
  EXPECT_NE(vid, kNoValue) << name;
  if (vid == kNoValue) return Layout::kPlain;
  const Value& v = g.value(vid);
  Layout l = Layout::kPlain;
  if (v.producer != kNoNode) {
    const Node& p = g.nodes[v.producer];
    for (size_t k = 0; k < p.outputs.size(); ++k)
      if (p.outputs[k] == vid) l = node_layout(p, false, k);
  }
  for (uint32_t ci : v.consumers) {
    const Node& c = g.nodes[ci];
    for (size_t k = 0; k < c.inputs.size(); ++k)
      if (c.inputs[k] == vid) EXPECT_EQ(node_layout(c, true, k), l) << name << " at " << c.label();
  }
  return l;
}

// Every marker in g is consistent between producer and consumers.
void expect_consistent(const Graph& g) {
  for (const auto& v : g.values) layout_of(g, v.name);
}

void add_conv(OnnxBuilder& b, const std::string& x, const std::string& y, int64_t cin, int64_t cout, int64_t k,
              uint32_t seed, int64_t group = 1) {
  b.init(y + "_W", random_f32({cout, cin / group, k, k}, seed, -0.3f, 0.3f));
  b.init(y + "_B", random_f32({cout}, seed + 1));
  auto* n = b.node("Conv", {x, y + "_W", y + "_B"}, {y}, y + "_conv");
  attr_ints(n, "kernel_shape", {k, k});
  attr_ints(n, "pads", std::vector<int64_t>(4, k / 2));
  if (group > 1) attr_i(n, "group", group);
}

void expect_same_outputs(const Model& m, const Graph& g, const std::vector<Tensor>& x, double tol) {
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(m, x, false, &want).is_ok());
  Status st = run_model(with_graph(m, g), x, false, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_LE(max_abs_diff(got[i], want[i]), tol) << "output " << i;
}
void expect_same_outputs(const Model& m, const Graph& g, const Tensor& x, double tol) {
  expect_same_outputs(m, g, std::vector<Tensor>{x}, tol);
}

// conv -> relu -> maxpool -> conv + residual -> relu -> GAP -> flatten.
Model resnet_like() {
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 12, 12});
  add_conv(b, "X", "c1", 16, 32, 3, 1);
  b.node("Relu", {"c1"}, {"r1"});
  auto* mp = b.node("MaxPool", {"r1"}, {"p1"});
  attr_ints(mp, "kernel_shape", {2, 2});
  attr_ints(mp, "strides", {2, 2});
  add_conv(b, "p1", "c2", 32, 32, 3, 3);
  b.node("Add", {"c2", "p1"}, {"a2"});
  b.node("Relu", {"a2"}, {"r2"});
  b.node("GlobalAveragePool", {"r2"}, {"g"});
  b.node("Flatten", {"g"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.value();
}

// The layout tests run once per blocked layout the pass can choose on its own (nhwc: oneDNN's
// AVX-512 layout and Winograd's; nChw8c: AVX2's native one), whatever this CPU would pick.
class PassLayoutsAt : public ::testing::TestWithParam<Layout> {};
INSTANTIATE_TEST_SUITE_P(Layouts, PassLayoutsAt, ::testing::Values(Layout::kNhwc, Layout::kNChw8c),
                         [](const ::testing::TestParamInfo<Layout>& i) { return std::string(layout_name(i.param)); });

TEST_P(PassLayoutsAt, ResnetBlockKeepsActivationsBlocked) {
  Model m = resnet_like();
  PassContext ctx;
  Graph g = optimize(m, {}, &ctx, layout_name(GetParam()));
  const Layout bl = GetParam();
  expect_consistent(g);
  EXPECT_EQ(layout_of(g, "X"), Layout::kPlain);   // graph input
  EXPECT_EQ(layout_of(g, "r1"), bl);              // fused conv -> maxpool
  EXPECT_EQ(layout_of(g, "p1"), bl);              // maxpool -> conv and residual sum
  EXPECT_EQ(layout_of(g, "r2"), bl);              // fused conv(+sum+relu) -> GAP
  EXPECT_EQ(layout_of(g, "g"), Layout::kPlain);   // [N,C,1,1] feeding Flatten
  EXPECT_EQ(layout_of(g, "Y"), Layout::kPlain);   // graph output
  bool logged = false;
  for (const auto& l : ctx.log) logged |= l.find("layouts:") == 0;
  EXPECT_TRUE(logged);
  expect_same_outputs(m, g, random_f32({2, 16, 12, 12}, 5), 1e-4);
  expect_same_outputs(m, g, random_f32({1, 16, 12, 12}, 6), 1e-4);
}

TEST(PassLayouts, RefOnlySessionsGetNoMarkers) {
  Model m = resnet_like();
  Graph g = optimize(m, {"ref"});
  for (const auto& n : g.nodes) EXPECT_FALSE(has_layout_marker(n)) << n.label();
  SessionOptions o;
  o.backends = {"ref"};
  auto s = Session::create(m, o);
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  auto y = s.value()->run({random_f32({2, 16, 12, 12}, 7)});
  ASSERT_TRUE(y.is_ok()) << y.status().message();
}

TEST(PassLayouts, TunedConvolutionsGiveTheSameResults) {
  // SessionOptions::tune_kernels times oneDNN's convolution implementations on the first run of
  // a shape and keeps the fastest; any choice must compute the same function.
  Model m = resnet_like();
  SessionOptions plain, tuned;
  plain.num_threads = tuned.num_threads = 2;
  tuned.tune_kernels = true;
  auto a = Session::create(m, plain);
  auto b = Session::create(m, tuned);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  for (int64_t batch : {1, 3}) {
    Tensor x = random_f32({batch, 16, 12, 12}, 17 + static_cast<uint32_t>(batch));
    auto ya = a.value()->run({x});
    auto yb = b.value()->run({x});
    ASSERT_TRUE(ya.is_ok() && yb.is_ok());
    double scale = 0;
    for (int64_t i = 0; i < ya.value()[0].numel(); ++i)
      scale = std::max(scale, static_cast<double>(std::fabs(ya.value()[0].data<float>()[i])));
    EXPECT_LT(max_abs_diff(ya.value()[0], yb.value()[0]), 1e-4 * (1 + scale)) << "batch " << batch;
  }
}

TEST(PassLayouts, PassIsIdempotent) {
  Model m = resnet_like();
  Graph g = optimize(m);
  Graph g2 = g;
  PassContext ctx;
  ctx.opset = 13;
  auto ps = make_pipeline({"layouts"});
  ASSERT_TRUE(ps.is_ok());
  ASSERT_TRUE(run_passes(g2, ctx, ps.value()).is_ok());
  ASSERT_EQ(g.nodes.size(), g2.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    EXPECT_EQ(g.nodes[i].attr_ints(kInLayoutsAttr), g2.nodes[i].attr_ints(kInLayoutsAttr));
    EXPECT_EQ(g.nodes[i].attr_ints(kOutLayoutsAttr), g2.nodes[i].attr_ints(kOutLayoutsAttr));
  }
}

TEST_P(PassLayoutsAt, DenseNetBlockUsesBlockedBatchNormReluConcat) {
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 10, 10});
  add_conv(b, "X", "c0", 16, 32, 3, 11);
  for (int i = 0; i < 4; ++i) {
    const std::string p = "bn" + std::to_string(i);
    b.init(p + "_s", random_f32({32}, 20 + i, 0.5f, 1.5f));
    b.init(p + "_b", random_f32({32}, 30 + i));
    b.init(p + "_m", random_f32({32}, 40 + i));
    b.init(p + "_v", random_f32({32}, 50 + i, 0.5f, 2.f));
  }
  b.node("BatchNormalization", {"c0", "bn0_s", "bn0_b", "bn0_m", "bn0_v"}, {"n0"});
  b.node("Relu", {"n0"}, {"r0"});
  add_conv(b, "r0", "c1", 32, 16, 1, 12);
  b.node("Concat", {"c0", "c1"}, {"cat"})->add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("axis");
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(1);
    return a;
  }());
  auto* ap = b.node("AveragePool", {"cat"}, {"ap"});
  attr_ints(ap, "kernel_shape", {2, 2});
  attr_ints(ap, "strides", {2, 2});
  add_conv(b, "ap", "Y", 48, 8, 3, 13);
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  const Model& m = mr.value();
  Graph g = optimize(m, {}, nullptr, layout_name(GetParam()));
  const Layout bl = GetParam();
  expect_consistent(g);
  EXPECT_EQ(count_op(g, "FusedBatchNorm"), 1);  // BN -> Relu fused for dnnl
  EXPECT_EQ(count_op(g, "Relu"), 0);
  EXPECT_EQ(layout_of(g, "c0"), bl);  // conv -> BN and Concat
  EXPECT_EQ(layout_of(g, "r0"), bl);  // FusedBatchNorm -> conv
  EXPECT_EQ(layout_of(g, "c1"), bl);
  EXPECT_EQ(layout_of(g, "cat"), bl);  // 48 channels: C % 16 == 0 for nChw16c too
  EXPECT_EQ(layout_of(g, "ap"), bl);
  EXPECT_EQ(layout_of(g, "Y"), Layout::kPlain);
  for (const auto& n : g.nodes) EXPECT_TRUE(has_layout_marker(n)) << n.label();
  expect_same_outputs(m, g, random_f32({2, 16, 10, 10}, 8), 1e-4);
}

// DenseNet's dense layer: Concat -> BatchNormalization (-> Relu) becomes one ConcatBatchNorm that never
// writes the concatenation. Three cases: a graph input (plain) beside an nhwc conv output (mixed
// layouts), two nhwc conv outputs without Relu, and two graph inputs feeding a graph output (plain).
TEST_P(PassLayoutsAt, ConcatBatchNormFusesDenseLayers) {
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 6, 6});
  b.input("Z", {-1, 8, 6, 6});
  add_conv(b, "X", "c1", 16, 16, 3, 61);
  add_conv(b, "X", "c1b", 16, 8, 1, 62);
  auto bn = [&](const std::string& p, int64_t c, uint32_t seed) {
    b.init(p + "_s", random_f32({c}, seed, 0.5f, 1.5f));
    b.init(p + "_b", random_f32({c}, seed + 1));
    b.init(p + "_m", random_f32({c}, seed + 2));
    b.init(p + "_v", random_f32({c}, seed + 3, 0.5f, 2.f));
    return std::vector<std::string>{p + "_s", p + "_b", p + "_m", p + "_v"};
  };
  auto concat = [&](const std::vector<std::string>& in, const std::string& out) {
    attr_i(b.node("Concat", in, {out}), "axis", 1);
  };
  auto with = [](std::string x, std::vector<std::string> p) {
    p.insert(p.begin(), x);
    return p;
  };
  concat({"X", "c1"}, "catA");
  b.node("BatchNormalization", with("catA", bn("bnA", 32, 70)), {"nA"});
  b.node("Relu", {"nA"}, {"rA"});
  add_conv(b, "rA", "Y1", 32, 16, 3, 63);
  concat({"c1", "c1b"}, "catB");
  b.node("BatchNormalization", with("catB", bn("bnB", 24, 80)), {"nB"});
  add_conv(b, "nB", "Y2", 24, 8, 1, 64);
  concat({"X", "Z"}, "catC");
  b.node("BatchNormalization", with("catC", bn("bnC", 24, 90)), {"nC"});
  b.node("Relu", {"nC"}, {"Y3"});
  b.output("Y1");
  b.output("Y2");
  b.output("Y3");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  const Model& m = mr.value();
  Graph g = optimize(m, {}, nullptr, layout_name(GetParam()));
  const Layout bl = GetParam();
  expect_consistent(g);
  EXPECT_EQ(count_op(g, "ConcatBatchNorm"), 3);
  EXPECT_EQ(count_op(g, "Concat"), 0);
  EXPECT_EQ(count_op(g, "BatchNormalization"), 0);
  EXPECT_EQ(count_op(g, "Relu"), 0);
  const Layout want = bl == Layout::kNhwc ? bl : Layout::kPlain;  // the kernel does nhwc and plain only
  EXPECT_EQ(layout_of(g, "c1"), want);
  EXPECT_EQ(layout_of(g, "rA"), want);
  EXPECT_EQ(layout_of(g, "nB"), want);
  ASSERT_EQ(g.outputs.size(), 3u);
  expect_same_outputs(m, g, {random_f32({2, 16, 6, 6}, 65), random_f32({2, 8, 6, 6}, 66)}, 1e-4);
}

TEST_P(PassLayoutsAt, SqueezeExcitationMul) {
  OnnxBuilder b(13);
  b.input("X", {-1, 32, 8, 8});
  add_conv(b, "X", "c0", 32, 32, 3, 61, 32);  // depthwise
  b.node("GlobalAveragePool", {"c0"}, {"g"});
  add_conv(b, "g", "s1", 32, 8, 1, 62);
  b.node("Relu", {"s1"}, {"s1r"});
  add_conv(b, "s1r", "s2", 8, 32, 1, 63);
  b.node("Sigmoid", {"s2"}, {"s"});
  b.node("Mul", {"c0", "s"}, {"x"});
  add_conv(b, "x", "Y", 32, 16, 1, 64);
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  const Model& m = mr.value();
  Graph g = optimize(m, {}, nullptr, layout_name(GetParam()));
  const Layout bl = GetParam();
  expect_consistent(g);
  EXPECT_EQ(layout_of(g, "c0"), bl);
  EXPECT_EQ(layout_of(g, "g"), Layout::kPlain);  // H = W = 1
  EXPECT_EQ(layout_of(g, "x"), bl);
  expect_same_outputs(m, g, random_f32({2, 32, 8, 8}, 9), 1e-4);
}

TEST(PassLayouts, ValueWithNonDnnlConsumerStaysPlain) {
  OnnxBuilder b(13);
  b.input("X", {1, 16, 6, 6});
  add_conv(b, "X", "c0", 16, 16, 3, 71);
  add_conv(b, "c0", "Y", 16, 16, 3, 72);
  auto* t = b.node("Transpose", {"c0"}, {"Z"});
  attr_ints(t, "perm", {0, 1, 3, 2});  // only NCHW <-> NHWC transposes read blocked inputs
  b.output("Y").output("Z");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Graph g = optimize(mr.value());
  expect_consistent(g);
  EXPECT_EQ(layout_of(g, "c0"), Layout::kPlain);
  expect_same_outputs(mr.value(), g, random_f32({1, 16, 6, 6}, 10), 1e-4);
}

TEST(PassLayouts, NhwcTransposesAroundAChainKeepItBlocked) {
  // tf2onnx/Keras style: NHWC input -> Transpose -> Conv -> Relu -> Transpose to NHWC -> Transpose
  // back -> MaxPool -> Transpose to NHWC (the head). Every value between the convolution and
  // the head stays nhwc; the Transposes touching them are copies or nothing.
  OnnxBuilder b(13);
  b.input("X", {2, 12, 10, 3});
  auto* t0 = b.node("Transpose", {"X"}, {"x"});
  attr_ints(t0, "perm", {0, 3, 1, 2});
  add_conv(b, "x", "c0", 3, 16, 3, 73);
  b.node("Relu", {"c0"}, {"r0"});
  auto* t1 = b.node("Transpose", {"r0"}, {"h"});
  attr_ints(t1, "perm", {0, 2, 3, 1});
  auto* t2 = b.node("Transpose", {"h"}, {"p_in"});
  attr_ints(t2, "perm", {0, 3, 1, 2});
  auto* mp = b.node("MaxPool", {"p_in"}, {"p"});
  attr_ints(mp, "kernel_shape", {2, 2});
  attr_ints(mp, "strides", {2, 2});
  auto* t3 = b.node("Transpose", {"p"}, {"Y"});
  attr_ints(t3, "perm", {0, 2, 3, 1});
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  PassContext ctx;
  Graph g = optimize(mr.value(), {}, &ctx, "nhwc");
  expect_consistent(g);
  std::string log;
  for (const auto& l : ctx.log) log += l + "\n";
  for (const char* v : {"x", "p"}) EXPECT_EQ(layout_of(g, v), Layout::kNhwc) << v << "\n" << log;
  expect_same_outputs(mr.value(), g, random_f32({2, 12, 10, 3}, 11), 1e-4);
  Graph g8 = optimize(mr.value(), {}, nullptr, "nChw8c");
  expect_consistent(g8);
  expect_same_outputs(mr.value(), g8, random_f32({2, 12, 10, 3}, 12), 1e-4);
}

TEST(PassLayouts, NonFloatOrUnknownShapesStayPlain) {
  // Spatial dims unknown: the pass cannot prove the layout applies.
  OnnxBuilder b(13);
  b.input("X", {1, 16, -1, -1}, kF32, "H");
  add_conv(b, "X", "c0", 16, 16, 3, 81);
  b.node("Relu", {"c0"}, {"r"});
  add_conv(b, "r", "Y", 16, 16, 3, 82);
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Graph g = optimize(mr.value());
  for (const auto& n : g.nodes) EXPECT_FALSE(has_blocked_io(n)) << n.label();
}

TEST(PassLayouts, SessionRejectsBlockedNodeOnRef) {
  // A graph carrying markers (as compiled) run with the ref backend only and no
  // passes: the Session must refuse instead of computing on blocked data.
  Model m = resnet_like();
  Graph g = optimize(m);
  bool any = false;
  for (const auto& n : g.nodes) any |= has_blocked_io(n);
  if (!any) GTEST_SKIP() << "no blocked values";
  SessionOptions o;
  o.optimize = false;
  o.backends = {"ref"};
  auto s = Session::create(with_graph(m, g), o);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInternal) << s.status().message();
}

// MaxPool between nhwc convolutions runs medq's own nhwc loop (dnnl_pool.cc; between nChw8c
// ones, oneDNN's pooling): every window shape of resnet's stem pool and its edge cases (odd
// sizes, asymmetric pads, ceil_mode, stride larger than the kernel, 1x1 windows) against the
// unoptimized reference graph.
TEST_P(PassLayoutsAt, NhwcMaxPoolMatchesReference) {
  struct Case {
    int64_t k, s, pb, pe;
    int64_t ceil;
    int64_t h, w;
  };
  for (const Case& c : {Case{3, 2, 1, 1, 0, 13, 11}, Case{3, 2, 1, 1, 1, 12, 12}, Case{2, 2, 0, 0, 1, 7, 9},
                        Case{2, 3, 0, 1, 0, 10, 8}, Case{1, 1, 0, 0, 0, 5, 6}, Case{3, 1, 0, 2, 0, 6, 5}}) {
    SCOPED_TRACE("k " + std::to_string(c.k) + " s " + std::to_string(c.s) + " pads " + std::to_string(c.pb) +
                 std::to_string(c.pe) + " ceil " + std::to_string(c.ceil));
    OnnxBuilder b(13);
    b.input("X", {-1, 16, c.h, c.w});
    add_conv(b, "X", "c0", 16, 24, 1, 111);
    auto* mp = b.node("MaxPool", {"c0"}, {"p0"});
    attr_ints(mp, "kernel_shape", {c.k, c.k});
    attr_ints(mp, "strides", {c.s, c.s});
    attr_ints(mp, "pads", {c.pb, c.pb, c.pe, c.pe});
    attr_i(mp, "ceil_mode", c.ceil);
    add_conv(b, "p0", "c1", 24, 16, 1, 113);
    b.node("Relu", {"c1"}, {"Y"});
    b.output("Y");
    auto mr = b.build();
    ASSERT_TRUE(mr.is_ok()) << mr.status().message();
    Graph g = optimize(mr.value(), {}, nullptr, layout_name(GetParam()));
    expect_consistent(g);
    EXPECT_EQ(layout_of(g, "p0"), GetParam());  // nhwc: medq's own loop; nChw8c: oneDNN's pooling
    expect_same_outputs(mr.value(), g, random_f32({3, 16, c.h, c.w}, 115), 1e-4);
  }
}

TEST_P(PassLayoutsAt, NoOpPadBeforePoolIsRemoved) {
  // DenseNet's transitions: Conv -> Pad(all zero pads) -> AveragePool.
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 8, 8});
  add_conv(b, "X", "c0", 16, 32, 1, 101);
  b.init("zp", Tensor::from_vector<int64_t>(std::vector<int64_t>(8, 0), {8}));
  b.init("p1", Tensor::from_vector<int64_t>(std::vector<int64_t>{0, 0, 1, 1, 0, 0, 1, 1}, {8}));
  b.node("Pad", {"c0", "zp"}, {"pd"});
  auto* ap = b.node("AveragePool", {"pd"}, {"ap"});
  attr_ints(ap, "kernel_shape", {2, 2});
  attr_ints(ap, "strides", {2, 2});
  b.node("Pad", {"ap", "p1"}, {"Y"});  // a real pad stays
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Graph g = optimize(mr.value(), {}, nullptr, layout_name(GetParam()));
  EXPECT_EQ(count_op(g, "Pad"), 1);
  expect_consistent(g);
  EXPECT_EQ(layout_of(g, "c0"), GetParam());
  expect_same_outputs(mr.value(), g, random_f32({2, 16, 8, 8}, 102), 1e-4);
}

TEST_P(PassLayoutsAt, StandaloneBatchNormAndReluWhenNotFusable) {
  // BN output used twice: no fusion; BN and Relu run on dnnl with blocked data.
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 6, 6});
  add_conv(b, "X", "c0", 16, 16, 3, 91);
  b.init("s", random_f32({16}, 92, 0.5f, 1.5f));
  b.init("bb", random_f32({16}, 93));
  b.init("m", random_f32({16}, 94));
  b.init("v", random_f32({16}, 95, 0.5f, 2.f));
  b.node("Relu", {"c0"}, {"r"});  // keeps BN from folding into the conv
  b.node("BatchNormalization", {"r", "s", "bb", "m", "v"}, {"n"});
  b.node("Relu", {"n"}, {"r2"});
  b.node("Add", {"r2", "n"}, {"a"});
  add_conv(b, "a", "Y", 16, 16, 3, 96);
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Graph g = optimize(mr.value(), {}, nullptr, layout_name(GetParam()));
  const Layout bl = GetParam();
  expect_consistent(g);
  EXPECT_EQ(count_op(g, "FusedBatchNorm"), 0);
  EXPECT_EQ(layout_of(g, "n"), bl);
  EXPECT_EQ(layout_of(g, "r2"), bl);
  EXPECT_EQ(layout_of(g, "a"), bl);
  expect_same_outputs(mr.value(), g, random_f32({2, 16, 6, 6}, 97), 1e-4);
}


// A ref-only op (HardSigmoid, alpha not hardswish's) between two convolutions: the Mul sees plain
// inputs and a blocked output, a mix for which oneDNN 2.6 has only its reference binary (25x
// slower); the kernel then computes in one layout and reorders. Same results either way.
TEST_P(PassLayoutsAt, BinaryWithMixedLayoutsMatchesReference) {
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 9, 7});
  add_conv(b, "X", "c0", 16, 32, 3, 121);
  auto* hs = b.node("HardSigmoid", {"c0"}, {"h"});
  attr_f(hs, "alpha", 0.3f);
  b.node("Mul", {"c0", "h"}, {"m"});
  add_conv(b, "m", "Y", 32, 16, 1, 122);
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Graph g = optimize(mr.value(), {}, nullptr, layout_name(GetParam()));
  expect_consistent(g);
  EXPECT_EQ(layout_of(g, "h"), Layout::kPlain);  // HardSigmoid runs on ref
  EXPECT_EQ(layout_of(g, "m"), GetParam());      // the Mul writes the blocked layout
  expect_same_outputs(mr.value(), g, random_f32({3, 16, 9, 7}, 123), 1e-4);
}

// The layout the pass picks by itself: nhwc on AVX-512 CPUs, for 8-bit graphs, and where Winograd
// (nhwc only) carries a tenth or more of the convolution work; nChw8c for a depthwise/1x1 graph
// on AVX2. An explicit request wins.
TEST(PassLayouts, AutomaticChoiceFollowsTheConvolutionMix) {
  auto build = [](bool with_3x3) {
    OnnxBuilder b(13);
    b.input("X", {-1, 32, 16, 16});
    add_conv(b, "X", "d", 32, 32, 3, 131, 32);  // depthwise 3x3
    add_conv(b, "d", "p", 32, 64, 1, 132);      // pointwise
    if (with_3x3) add_conv(b, "p", "q", 64, 64, 3, 133);
    b.node("GlobalAveragePool", {with_3x3 ? "q" : "p"}, {"Y"});
    b.output("Y");
    auto mr = b.build();
    EXPECT_TRUE(mr.is_ok()) << mr.status().message();
    return mr.value();
  };
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (std::getenv("MEDQ_DNNL_BLOCKED")) GTEST_SKIP() << "MEDQ_DNNL_BLOCKED overrides the choice";
  const Model dw = build(false), mixed = build(true);
  EXPECT_EQ(blocked_layout_for(dw.graph), avx512 ? Layout::kNhwc : Layout::kNChw8c);
  EXPECT_EQ(blocked_layout_for(mixed.graph), Layout::kNhwc);
  EXPECT_EQ(blocked_layout_for(mixed.graph, "nChw8c"), Layout::kNChw8c);
  EXPECT_EQ(blocked_layout_for(dw.graph, "nhwc"), Layout::kNhwc);
  Graph g = optimize(dw);
  EXPECT_EQ(layout_of(g, "d"), avx512 ? Layout::kNhwc : Layout::kNChw8c);
  expect_same_outputs(dw, g, random_f32({2, 32, 16, 16}, 134), 1e-4);

  SessionOptions o;
  o.layout = "nChw8c";
  auto s = Session::create(mixed, o);
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s.value()->activation_layout(), "nChw8c");
  o.layout = "nchw8c";
  auto bad = Session::create(mixed, o);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("unknown activation layout 'nchw8c'"), std::string::npos)
      << bad.status().message();
}


// convnext's blocks between Transposes: elementwise ops on [N, H, W, C] with broadcasts along the
// last axis. No convolution or pool joins them, so their values stay plain (blocked they hit
// oneDNN's reference binary kernels); the conv chain next to them keeps its blocked layout.
TEST_P(PassLayoutsAt, ElementwiseOnlyChainsStayPlain) {
  OnnxBuilder b(13);
  b.input("X", {-1, 16, 8, 8});
  add_conv(b, "X", "c0", 16, 16, 3, 141);
  add_conv(b, "c0", "c1", 16, 16, 1, 142);
  auto* t = b.node("Transpose", {"c1"}, {"t"});
  attr_ints(t, "perm", {0, 2, 3, 1});
  b.init("g", random_f32({16}, 143));
  b.init("bb", random_f32({16}, 144));
  b.node("Mul", {"t", "g"}, {"m"});
  b.node("Add", {"m", "bb"}, {"a"});
  b.node("Relu", {"a"}, {"r"});
  auto* t2 = b.node("Transpose", {"r"}, {"Y"});
  attr_ints(t2, "perm", {0, 3, 1, 2});
  b.output("Y");
  auto mr = b.build();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Graph g = optimize(mr.value(), {}, nullptr, layout_name(GetParam()));
  expect_consistent(g);
  EXPECT_EQ(layout_of(g, "c0"), GetParam());  // conv -> conv
  EXPECT_EQ(layout_of(g, "m"), Layout::kPlain);
  EXPECT_EQ(layout_of(g, "a"), Layout::kPlain);
  expect_same_outputs(mr.value(), g, random_f32({2, 16, 8, 8}, 145), 1e-4);
}

}  // namespace
}  // namespace medq
