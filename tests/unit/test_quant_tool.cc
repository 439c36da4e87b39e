// Quantization tool tests: streamed calibration histograms, range-selection
// methods on known distributions, the QDQ writer (ONNX checker, expected Q/DQ
// nodes, int8 weights, int32 bias), dynamic mode, fp16 conversion and the real
// brain_resnet18 model (skipped when ../shared/data is absent).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <onnx/onnx_pb.h>

#include "../passes/onnx_test_builder.h"
#include "core/fileio.h"
#include "data/dataset.h"
#include "data/preprocess.h"
#include "quant/calibration.h"
#include "quant/fp16.h"
#include "quant/quantize.h"
#include "runtime/session.h"

namespace medq {
namespace {

using namespace testing_onnx;

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ---------------------------------------------------------------------------
// Histogram streaming

TEST(QuantHistogram, StreamedBatchesMatchOneShot) {
  // Batches with growing spread force several range doublings.
  std::vector<float> all;
  StreamingHistogram streamed(4096);
  double first_range = 0;
  for (int b = 0; b < 8; ++b) {
    auto v = gaussian(20000, 10 + b, 0.25f * (b + 1));
    streamed.add(v.data(), static_cast<int64_t>(v.size()));
    if (b == 0) first_range = streamed.range();
    all.insert(all.end(), v.begin(), v.end());
  }
  EXPECT_GT(streamed.range(), 4 * first_range);  // grew
  StreamingHistogram once(4096);
  once.add(all.data(), static_cast<int64_t>(all.size()));
  EXPECT_EQ(streamed.count(), once.count());
  EXPECT_EQ(streamed.min(), once.min());
  EXPECT_EQ(streamed.max(), once.max());
  int64_t total = 0;
  for (auto c : streamed.bins()) total += c;
  EXPECT_EQ(total, static_cast<int64_t>(all.size()));
  // Same statistics within a couple of (streamed) bin widths.
  const double tol = 3 * streamed.bin_width();
  for (CalibMethod m : {CalibMethod::kPercentile, CalibMethod::kEntropy, CalibMethod::kMse}) {
    RangeOptions o;
    o.method = m;
    o.percentile = 99.9;
    auto a = compute_range(streamed, o), b = compute_range(once, o);
    EXPECT_NEAR(a.hi, b.hi, tol + 0.05 * std::fabs(b.hi)) << calib_method_name(m);
    EXPECT_NEAR(a.lo, b.lo, tol + 0.05 * std::fabs(b.lo)) << calib_method_name(m);
  }
}

TEST(QuantHistogram, RebinningIsExactWhenEdgesAlign) {
  // [-1, 1] then [-4, 4]: the second batch widens R by 4; old bins merge 4 -> 1.
  StreamingHistogram h(64);
  // (The maximum itself sits in the closed last bin before growth, so keep values off R.)
  std::vector<float> a = {-1.f, -0.5f, 0.f, 0.26f, 0.9f}, b = {-4.f, 3.9f, 0.f};
  h.add(a.data(), 5);
  EXPECT_DOUBLE_EQ(h.range(), 1.0);  // R = max |x| of the first batch
  h.add(b.data(), 3);
  EXPECT_DOUBLE_EQ(h.range(), 4.0);
  StreamingHistogram ref(64);
  std::vector<float> ab = {-4.f};  // fixes R = 4 first
  ref.add(ab.data(), 1);
  std::vector<float> rest = {-1.f, -0.5f, 0.f, 0.26f, 0.9f, 3.9f, 0.f};
  ref.add(rest.data(), static_cast<int64_t>(rest.size()));
  EXPECT_EQ(h.bins(), ref.bins());
}

TEST(QuantHistogram, AllZeroThenData) {
  StreamingHistogram h(16);
  std::vector<float> z(10, 0.f), d = {2.f, -1.f};
  h.add(z.data(), 10);
  EXPECT_EQ(h.range(), 0.0);
  h.add(d.data(), 2);
  int64_t total = 0;
  for (auto c : h.bins()) total += c;
  EXPECT_EQ(total, 12);
  EXPECT_EQ(h.abs_bins()[0], 10.0);
}

// ---------------------------------------------------------------------------
// Methods on known distributions

TEST(QuantMethods, UniformKeepsTheMaximum) {
  auto v = uniform(200000, 3, 0.f, 1.f);
  StreamingHistogram h(4096);
  h.add(v.data(), static_cast<int64_t>(v.size()));
  RangeOptions o;
  o.method = CalibMethod::kMinMax;
  EXPECT_EQ(compute_range(h, o).hi, h.max());
  EXPECT_EQ(compute_range(h, o).lo, h.min());
  o.method = CalibMethod::kPercentile;
  o.percentile = 99.99;
  EXPECT_NEAR(compute_range(h, o).hi, 0.9999, 0.003);
  o.method = CalibMethod::kEntropy;
  EXPECT_GT(compute_range(h, o).hi, 0.85);
  o.method = CalibMethod::kMse;
  EXPECT_GT(compute_range(h, o).hi, 0.9);
}

TEST(QuantMethods, GaussianWithOutliersClipsBelowTheOutlier) {
  // 1M N(0,1) values + 2 outliers at 30: clipping them costs less (MSE) than the
  // resolution lost by keeping them.
  auto v = gaussian(1000000, 5);
  v[1000] = v[500000] = 30.f;
  StreamingHistogram h(4096);
  for (size_t s = 0; s < v.size(); s += 125000) h.add(v.data() + s, 125000);
  RangeOptions o;
  o.method = CalibMethod::kMinMax;
  EXPECT_EQ(compute_range(h, o).hi, 30.f);
  o.method = CalibMethod::kPercentile;
  o.percentile = 99.99;
  float p = compute_range(h, o).hi;
  EXPECT_GT(p, 3.0f);
  EXPECT_LT(p, 5.0f);
  o.method = CalibMethod::kEntropy;
  float e = compute_range(h, o).hi;
  EXPECT_GT(e, 2.0f);
  EXPECT_LT(e, 10.0f);
  o.method = CalibMethod::kMse;
  float m = compute_range(h, o).hi;
  EXPECT_GT(m, 2.0f);
  EXPECT_LT(m, 10.0f);
}

TEST(QuantMethods, ActivationQParams) {
  auto q = activation_qparams(0.f, 2.55f, DataType::kUInt8, false);
  EXPECT_NEAR(q.scale, 0.01f, 1e-7);
  EXPECT_EQ(q.zero_point, 0);
  q = activation_qparams(0.5f, 2.55f, DataType::kUInt8, false);  // 0 always included
  EXPECT_EQ(q.zero_point, 0);
  q = activation_qparams(-1.f, 1.f, DataType::kInt8, true);
  EXPECT_NEAR(q.scale, 1.f / 127, 1e-7);
  EXPECT_EQ(q.zero_point, 0);
  q = activation_qparams(0.f, 0.f, DataType::kUInt8, false);
  EXPECT_EQ(q.scale, 1.f);
}

// ---------------------------------------------------------------------------
// QDQ writer on a small CNN

// X -> conv1(+B1) -> relu1 --+
// X -> conv2 --------------- Add -> relu2 -> GAP -> Flatten -> Gemm(+C) -> logits
Result<Model> small_model() {
  OnnxBuilder b(13);
  b.input("X", {-1, 3, 8, 8}, kF32, "batch");
  b.init("W1", random_f32({4, 3, 3, 3}, 1));
  b.init("B1", random_f32({4}, 2));
  b.init("W2", random_f32({4, 3, 3, 3}, 3));
  b.init("Wfc", random_f32({2, 4}, 4));
  b.init("Bfc", random_f32({2}, 5));
  attr_ints(b.node("Conv", {"X", "W1", "B1"}, {"c1"}, "conv1"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  attr_ints(b.node("Conv", {"X", "W2"}, {"c2"}, "conv2"), "pads", {1, 1, 1, 1});
  b.node("Add", {"r1", "c2"}, {"s"}, "add");
  b.node("Relu", {"s"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"f"}, "flatten");
  attr_i(b.node("Gemm", {"f", "Wfc", "Bfc"}, {"logits"}, "fc"), "transB", 1);
  b.output("logits");
  auto m = b.build("small_quant.onnx");
  if (m.is_ok()) m.value().set_meta("note", "keep me");
  return m;
}

BatchSource random_batches(int n, uint32_t seed) {
  auto i = std::make_shared<int>(0);
  return [=](std::vector<Tensor>& in) -> Result<bool> {
    if (*i >= n) return false;
    in = {random_f32({4, 3, 8, 8}, seed + (*i)++)};
    return true;
  };
}

std::string tmp_path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

const Value* find(const Graph& g, const std::string& name) {
  uint32_t v = g.find_value(name);
  return v == kNoValue ? nullptr : &g.value(v);
}

const Node* producer_of(const Graph& g, const std::string& name) {
  for (const auto& n : g.nodes)
    for (uint32_t o : n.outputs)
      if (o != kNoValue && g.value(o).name == name) return &n;
  return nullptr;
}

TEST(QuantQdq, SaveWithoutIntermediateValueInfo) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Model m = mr.value();
  auto rep = quantize_static(m, QuantizeOptions{}, random_batches(6, 100));
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  auto with = save_model_checked(m, tmp_path("vi_with.onnx"));
  auto without = save_model_checked(m, tmp_path("vi_without.onnx"), /*intermediate_value_info=*/false);
  ASSERT_TRUE(with.is_ok() && without.is_ok());
  EXPECT_LT(without.value(), with.value());
  auto bytes = read_file(tmp_path("vi_without.onnx"));
  ASSERT_TRUE(bytes.is_ok());
  onnx::ModelProto mp;
  ASSERT_TRUE(mp.ParseFromString(bytes.value()));
  EXPECT_EQ(mp.graph().value_info_size(), 0);
  EXPECT_EQ(mp.graph().input_size(), 1);
  EXPECT_TRUE(mp.graph().input(0).type().tensor_type().has_shape());
  // Shape inference on load gives the intermediate tensors their types back.
  auto a = load_model(tmp_path("vi_with.onnx")), b = load_model(tmp_path("vi_without.onnx"));
  ASSERT_TRUE(a.is_ok() && b.is_ok()) << b.status().message();
  for (const auto& n : b.value().graph.nodes)
    if (n.op_type == "QuantizeLinear") {
      EXPECT_EQ(b.value().graph.value(n.outputs[0]).dtype, DataType::kUInt8) << n.name;
    }
  auto sa = Session::create(a.value()), sb = Session::create(b.value());
  ASSERT_TRUE(sa.is_ok() && sb.is_ok());
  std::vector<Tensor> in;
  auto src = random_batches(1, 7);
  ASSERT_TRUE(src(in).value());
  auto ya = sa.value()->run(in), yb = sb.value()->run(in);
  ASSERT_TRUE(ya.is_ok() && yb.is_ok());
  ASSERT_EQ(ya.value()[0].numel(), yb.value()[0].numel());
  for (int64_t i = 0; i < ya.value()[0].numel(); ++i)
    EXPECT_EQ(ya.value()[0].data<float>()[i], yb.value()[0].data<float>()[i]);
}

TEST(QuantQdq, StaticWriterProducesCheckedQdqModel) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Model fp32 = mr.value();
  Model m = fp32;
  QuantizeOptions o;
  auto rep = quantize_static(m, o, random_batches(6, 100));
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  std::string path = tmp_path("small_qdq.onnx");
  auto saved = save_model_checked(m, path);
  ASSERT_TRUE(saved.is_ok()) << saved.status().message();
  auto qr = load_model(path);  // runs the ONNX checker + shape inference
  ASSERT_TRUE(qr.is_ok()) << qr.status().message();
  const Model& q = qr.value();
  const Graph& g = q.graph;
  EXPECT_GE(q.opset(""), 13);
  // Q on X (shared by both convs), conv1+relu1 output, conv2 output, add+relu2 output, GAP, Flatten.
  EXPECT_EQ(count_op(g, "QuantizeLinear"), 6);
  EXPECT_EQ(count_op(g, "DequantizeLinear"), 6 + 3 + 2);  // activations + 3 weights + 2 biases
  EXPECT_EQ(count_op(g, "Relu"), 0);  // uint8 zp 0: relus folded into the Q clamp
  int q_on_x = 0;
  for (const auto& n : g.nodes) q_on_x += n.op_type == "QuantizeLinear" && g.value(n.inputs[0]).name == "X";
  EXPECT_EQ(q_on_x, 1);
  // Graph I/O stay float; logits produced by the Gemm itself.
  EXPECT_EQ(g.value(g.inputs[0]).dtype, DataType::kFloat32);
  EXPECT_EQ(g.value(g.outputs[0]).dtype, DataType::kFloat32);
  const Node* fc = producer_of(g, "logits");
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(fc->op_type, "Gemm");
  // int8 per-channel weights, int32 bias.
  const Value* w1 = find(g, "W1_q");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->initializer.dtype(), DataType::kInt8);
  EXPECT_EQ(find(g, "W1_s")->initializer.shape(), (Shape{4}));
  const Value* b1 = find(g, "B1_q");
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(b1->initializer.dtype(), DataType::kInt32);
  EXPECT_EQ(find(g, "W1"), nullptr);  // float weights gone
  const Node* dqw = producer_of(g, "W1_dq");
  ASSERT_NE(dqw, nullptr);
  EXPECT_EQ(dqw->attr_i("axis", -1), 0);
  // All-zero weight/bias zero points are left out (optional; the int8/int32 input gives the type).
  EXPECT_EQ(dqw->inputs.size(), 2u);
  EXPECT_EQ(producer_of(g, "B1_dq")->inputs.size(), 2u);
  // The bias scale is not stored: Mul(x_scale, w_scale) of the two scales already in the file.
  {
    const Node* bdq = producer_of(g, "B1_dq");
    const Node* mul = producer_of(g, g.value(bdq->inputs[1]).name);
    ASSERT_NE(mul, nullptr);
    EXPECT_EQ(mul->op_type, "Mul");
    EXPECT_EQ(g.value(mul->inputs[1]).name, "W1_s");
    const Node* conv1 = nullptr;
    for (const auto& n : g.nodes)
      if (n.name == "conv1") conv1 = &n;
    ASSERT_NE(conv1, nullptr);
    const Node* xdq = producer_of(g, g.value(conv1->inputs[0]).name);
    ASSERT_NE(xdq, nullptr);
    EXPECT_EQ(xdq->op_type, "DequantizeLinear");
    EXPECT_EQ(mul->inputs[0], xdq->inputs[1]);  // the activation's scale initializer
  }
  // Activation zero points: omitted only where QuantizeLinear's default (uint8, 0) says the same.
  for (const auto& n : g.nodes)
    if (n.op_type == "QuantizeLinear") {
      const Tensor& sc = g.value(n.inputs[1]).initializer;
      if (n.has_input(2)) {
        EXPECT_FALSE(g.value(n.inputs[2]).initializer.dtype() == DataType::kUInt8 &&
                     g.value(n.inputs[2]).initializer.get_i64(0) == 0) << n.name;
      }
      EXPECT_EQ(g.value(n.outputs[0]).dtype, DataType::kUInt8) << n.name;
      EXPECT_EQ(sc.numel(), 1) << n.name;
    }
  const Node* dqfc = producer_of(g, "Wfc_dq");
  ASSERT_NE(dqfc, nullptr);
  EXPECT_EQ(dqfc->attr_i("axis", -1), 0);  // transB=1: output channels on axis 0
  // Metadata kept + quantization record.
  EXPECT_EQ(q.meta("note"), "keep me");
  auto meta = nlohmann::json::parse(q.meta("medq.quantization"));
  EXPECT_EQ(meta["method"], "minmax");
  EXPECT_EQ(meta["samples"], 24);
  EXPECT_EQ(meta["activations"], "uint8");
  // Report.
  EXPECT_EQ(rep.value()["layers"].size(), 6u);
  EXPECT_LT(rep.value()["size_after_bytes"].get<int64_t>(), rep.value()["size_before_bytes"].get<int64_t>());
  // Runs in medq and stays close to fp32.
  Tensor x = random_f32({4, 3, 8, 8}, 999);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(fp32, {x}, true, &want).is_ok());
  Status st = run_model(q, {x}, true, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  double scale = 0;
  for (int64_t i = 0; i < want[0].numel(); ++i) scale = std::max(scale, (double)std::fabs(want[0].data<float>()[i]));
  EXPECT_LT(max_abs_diff(want[0], got[0]), 0.05 * scale + 0.02);
}

TEST(QuantQdq, SymmetricInt8PerTensorAndExclude) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  QuantizeOptions o;
  o.activation_dtype = DataType::kInt8;
  o.symmetric_activations = true;
  o.per_channel = false;
  o.method = CalibMethod::kEntropy;
  o.exclude = {"conv2"};
  auto rep = quantize_static(m, o, random_batches(3, 7));
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  const Graph& g = m.graph;
  EXPECT_EQ(count_op(g, "Relu"), 2);  // symmetric int8 cannot clamp at 0: relus kept
  const Node* conv2 = nullptr;
  for (const auto& n : g.nodes)
    if (n.name == "conv2") conv2 = &n;
  ASSERT_NE(conv2, nullptr);
  EXPECT_EQ(g.value(conv2->inputs[0]).name, "X");   // excluded: float input
  EXPECT_EQ(g.value(conv2->inputs[1]).name, "W2");  // float weight kept
  const Node* dqw = producer_of(g, "W1_dq");
  ASSERT_NE(dqw, nullptr);
  EXPECT_FALSE(dqw->has_attr("axis"));
  EXPECT_EQ(find(g, "W1_s")->initializer.rank(), 0);
  for (const auto& n : g.nodes)
    if (n.op_type == "QuantizeLinear") {
      EXPECT_EQ(g.value(n.inputs[2]).initializer.dtype(), DataType::kInt8);
      EXPECT_EQ(g.value(n.inputs[2]).initializer.get_i64(0), 0);
    }
  EXPECT_EQ(rep.value()["excluded"].size(), 1u);
  auto saved = save_model_checked(m, tmp_path("small_qdq_s8.onnx"));
  EXPECT_TRUE(saved.is_ok()) << saved.status().message();
  // A typo in --exclude is an error.
  Model m2 = mr.value();
  o.exclude = {"conv9"};
  auto bad = quantize_static(m2, o, random_batches(1, 7));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("--exclude"), std::string::npos);
}

TEST(QuantQdq, ReluKeptWhenAFloatNodeReadsIt) {
  // relu1's output feeds the excluded Add (float): removing relu1 would drop its clamp there.
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  QuantizeOptions o;
  o.exclude = {"add"};
  auto rep = quantize_static(m, o, random_batches(3, 100));
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  // relu1 kept (float reader); relu2 kept too: its producer (the Add) is not quantized.
  EXPECT_EQ(count_op(m.graph, "Relu"), 2);
  const Node* relu1 = nullptr;
  for (const auto& n : m.graph.nodes)
    if (n.name == "relu1") relu1 = &n;
  ASSERT_NE(relu1, nullptr);
  EXPECT_EQ(m.graph.value(relu1->inputs[0]).name, "c1");  // no Q/DQ between conv1 and relu1
  Tensor x = random_f32({4, 3, 8, 8}, 999);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(mr.value(), {x}, true, &want).is_ok());
  Status st = run_model(m, {x}, true, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  double scale = 0;
  for (int64_t i = 0; i < want[0].numel(); ++i) scale = std::max(scale, (double)std::fabs(want[0].data<float>()[i]));
  EXPECT_LT(max_abs_diff(want[0], got[0]), 0.05 * scale + 0.02);
}

TEST(QuantQdq, ReluAfterAnExcludedConvStaysFloatWithoutAnExtraQdq) {
  // conv1 excluded: relu1 runs in float on conv1's output (no Q/DQ between them, which
  // would round the wide pre-activation range once more); r1 is quantized once, for the Add.
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  QuantizeOptions o;
  o.exclude = {"conv1"};
  auto rep = quantize_static(m, o, random_batches(3, 100));
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  const Graph& g = m.graph;
  const Node* relu1 = nullptr;
  for (const auto& n : g.nodes)
    if (n.name == "relu1") relu1 = &n;
  ASSERT_NE(relu1, nullptr);
  EXPECT_EQ(g.value(relu1->inputs[0]).name, "c1");
  const Node* q_r1 = nullptr;
  for (const auto& n : g.nodes)
    if (n.op_type == "QuantizeLinear" && g.value(n.inputs[0]).name == "r1") q_r1 = &n;
  EXPECT_NE(q_r1, nullptr);
  EXPECT_EQ(rep.value()["excluded"].size(), 1u);
  ASSERT_EQ(rep.value()["float_with_producer"].size(), 1u);
  EXPECT_NE(rep.value()["float_with_producer"][0].get<std::string>().find("relu1"), std::string::npos);
}

// One Conv with a bias on all-positive inputs (mean far from 0), per-tensor weights: the
// weight rounding error shifts each output channel's mean by (W_q - W) . E[x].
Result<Model> positive_conv_model() {
  OnnxBuilder b(13);
  b.input("X", {-1, 8, 6, 6}, kF32, "batch");
  b.init("W", random_f32({6, 8, 3, 3}, 11, -0.5f, 0.5f));
  b.init("B", random_f32({6}, 12));
  b.node("Conv", {"X", "W", "B"}, {"Y"}, "conv");
  b.output("Y");
  return b.build("positive_conv.onnx");
}

BatchSource positive_batches(int n, uint32_t seed) {
  auto i = std::make_shared<int>(0);
  return [=](std::vector<Tensor>& in) -> Result<bool> {
    if (*i >= n) return false;
    in = {random_f32({8, 8, 6, 6}, seed + (*i)++, 1.f, 3.f)};
    return true;
  };
}

// Mean over images and pixels of (quantized - fp32) output, per channel, summed in |.|.
double channel_mean_bias(const Model& fp32, const Model& q) {
  std::vector<double> acc(6, 0.0);
  int64_t count = 0;
  for (uint32_t seed = 500; seed < 508; ++seed) {
    Tensor x = random_f32({8, 8, 6, 6}, seed, 1.f, 3.f);
    std::vector<Tensor> a, b;
    if (!run_model(fp32, {x}, true, &a).is_ok() || !run_model(q, {x}, true, &b).is_ok()) return 1e9;
    const int64_t hw = a[0].dim(2) * a[0].dim(3);
    for (int64_t n = 0; n < a[0].dim(0); ++n)
      for (int64_t c = 0; c < 6; ++c)
        for (int64_t i = 0; i < hw; ++i) {
          const int64_t k = (n * 6 + c) * hw + i;
          acc[c] += b[0].data<float>()[k] - a[0].data<float>()[k];
        }
    count += a[0].dim(0) * hw;
  }
  double sum = 0;
  for (double v : acc) sum += std::fabs(v / count);
  return sum;
}

TEST(QuantQdq, BiasCorrectionRemovesTheMeanShiftOfWeightRounding) {
  auto mr = positive_conv_model();
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  QuantizeOptions o;
  o.per_channel = false;  // coarser weights: a larger shift to correct
  Model with = mr.value(), without = mr.value();
  auto r1 = quantize_static(with, o, positive_batches(6, 40));
  ASSERT_TRUE(r1.is_ok()) << r1.status().message();
  o.bias_correction = false;
  auto r0 = quantize_static(without, o, positive_batches(6, 40));
  ASSERT_TRUE(r0.is_ok()) << r0.status().message();
  EXPECT_TRUE(r1.value()["bias_correction"].get<bool>());
  ASSERT_TRUE(r1.value()["weight_layers"][0].contains("bias_correction_max_abs"));
  EXPECT_GT(r1.value()["weight_layers"][0]["bias_correction_max_abs"].get<double>(), 0.0);
  EXPECT_FALSE(r0.value()["weight_layers"][0].contains("bias_correction_max_abs"));
  const double b0 = channel_mean_bias(mr.value(), without), b1 = channel_mean_bias(mr.value(), with);
  std::printf("[ bias correction ] sum over channels of |mean output error|: %.5f without, %.5f with\n", b0, b1);
  EXPECT_LT(b1, 0.5 * b0);
}

TEST(QuantQdq, Fp16WeightStorageKeepsFloatCompute) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  auto n = store_weights_fp16(m, {"conv2", "fc", ""});
  ASSERT_TRUE(n.is_ok()) << n.status().message();
  EXPECT_EQ(n.value(), 2);  // conv2's W2 and fc's Wfc; conv1 untouched
  const Graph& g = m.graph;
  EXPECT_EQ(find(g, "W1")->initializer.dtype(), DataType::kFloat32);
  EXPECT_TRUE(find(g, "W2") == nullptr || find(g, "W2")->consumers.empty());  // not saved
  const Value* h = find(g, "W2_f16");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->initializer.dtype(), DataType::kFloat16);
  EXPECT_EQ(count_op(g, "Cast"), 2);
  Tensor x = random_f32({4, 3, 8, 8}, 77);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(mr.value(), {x}, true, &want).is_ok());
  Status st = run_model(m, {x}, true, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_LT(max_abs_diff(want[0], got[0]), 2e-3);
  auto saved = save_model_checked(m, tmp_path("small_fp16_weights.onnx"));
  EXPECT_TRUE(saved.is_ok()) << saved.status().message();
}

TEST(QuantQdq, DynamicRefusesConv) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  auto r = quantize_dynamic(m, QuantizeOptions{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("dynamic quantization of Conv is an accuracy trap"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("static"), std::string::npos);
}

TEST(QuantQdq, DynamicMatMulRunsAndIsClose) {
  OnnxBuilder b(13);
  b.input("X", {-1, 16}, kF32, "batch");
  b.init("W", random_f32({16, 8}, 11));
  b.init("Wg", random_f32({3, 8}, 12));
  b.init("Bg", random_f32({3}, 13));
  b.node("MatMul", {"X", "W"}, {"h"}, "mm");
  b.node("Relu", {"h"}, {"r"}, "relu");
  attr_i(b.node("Gemm", {"r", "Wg", "Bg"}, {"Y"}, "fc"), "transB", 1);
  b.output("Y");
  auto mr = b.build("dyn.onnx");
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  Model m = mr.value();
  auto r = quantize_dynamic(m, QuantizeOptions{});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(count_op(m.graph, "DynamicQuantizeLinear"), 2);
  auto saved = save_model_checked(m, tmp_path("dyn_q.onnx"));
  ASSERT_TRUE(saved.is_ok()) << saved.status().message();
  auto q = load_model(tmp_path("dyn_q.onnx"));
  ASSERT_TRUE(q.is_ok()) << q.status().message();
  EXPECT_EQ(find(q.value().graph, "W_q")->initializer.dtype(), DataType::kInt8);
  Tensor x = random_f32({5, 16}, 77);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(mr.value(), {x}, true, &want).is_ok());
  Status st = run_model(q.value(), {x}, true, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_LT(max_abs_diff(want[0], got[0]), 0.1);
}

TEST(QuantQdq, OpsetRaise) {
  Model m;
  m.opset_imports = {{"", 11}};
  Node n;
  n.op_type = "Conv";
  m.graph.nodes.push_back(n);
  EXPECT_TRUE(raise_opset_to_13(m).is_ok());
  EXPECT_EQ(m.opset(""), 13);
  Model m2;
  m2.opset_imports = {{"", 11}};
  n.op_type = "Squeeze";
  m2.graph.nodes.push_back(n);
  Status st = raise_opset_to_13(m2);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("Squeeze"), std::string::npos);
}

// ---------------------------------------------------------------------------
// fp16
// Runs a float16 model the way `medq run` does: the session's fp16 legalization
// (passes/lower_fp16.cc) widens the weights once and computes in float32.
Status run_fp16(const Model& m16, const std::vector<Tensor>& in, std::vector<Tensor>* out) {
  return run_model(m16, in, true, out);
}

TEST(QuantFp16, SmallModelConvertsWithCastsAtIo) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  Fp16Options o;
  o.block_nodes = {"gap"};
  auto r = convert_fp16(m, o);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  auto saved = save_model_checked(m, tmp_path("small_fp16.onnx"));
  ASSERT_TRUE(saved.is_ok()) << saved.status().message();
  auto q = load_model(tmp_path("small_fp16.onnx"));
  ASSERT_TRUE(q.is_ok()) << q.status().message();
  const Graph& g = q.value().graph;
  EXPECT_EQ(g.value(g.inputs[0]).dtype, DataType::kFloat32);
  EXPECT_EQ(g.value(g.outputs[0]).dtype, DataType::kFloat32);
  EXPECT_EQ(g.value(g.outputs[0]).name, "logits");
  EXPECT_EQ(find(g, "W1")->initializer.dtype(), DataType::kFloat16);
  // X cast once (shared by both convs), around the blocked GAP (2), logits: 4 casts.
  EXPECT_EQ(count_op(g, "Cast"), 4);
  EXPECT_EQ(r.value()["blocked_nodes"].size(), 1u);
  Tensor x = random_f32({2, 3, 8, 8}, 5);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(mr.value(), {x}, true, &want).is_ok());
  Status st = run_fp16(q.value(), {x}, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_LT(max_abs_diff(want[0], got[0]), 1e-2);
}

TEST(QuantFp16, OutputLayerKeptFloat32) {
  auto mr = small_model();
  ASSERT_TRUE(mr.is_ok());
  // auto: fc holds 10 of ~230 weights (> 2%): converted like the rest.
  Model a = mr.value();
  auto ra = convert_fp16(a, {});
  ASSERT_TRUE(ra.is_ok()) << ra.status().message();
  EXPECT_EQ(ra.value()["kept_output_layers"].size(), 0u);
  EXPECT_EQ(find(a.graph, "Wfc")->initializer.dtype(), DataType::kFloat16);
  // on: the logits Gemm stays float32, the rest is float16.
  Model m = mr.value();
  Fp16Options o;
  o.keep_output_layers = 1;
  auto r = convert_fp16(m, o);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r.value()["kept_output_layers"].size(), 1u);
  EXPECT_NE(r.value()["kept_output_layers"][0]["node"].get<std::string>().find("fc"), std::string::npos);
  EXPECT_EQ(find(m.graph, "Wfc")->initializer.dtype(), DataType::kFloat32);
  EXPECT_EQ(find(m.graph, "W1")->initializer.dtype(), DataType::kFloat16);
  Tensor x = random_f32({2, 3, 8, 8}, 6);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(run_model(mr.value(), {x}, true, &want).is_ok());
  Status st = run_model(m, {x}, true, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_LT(max_abs_diff(want[0], got[0]), 1e-2);
}

TEST(QuantFp16, ClampsOutOfRangeInitializers) {
  OnnxBuilder b(13);
  b.input("X", {-1, 2}, kF32, "batch");
  b.init("big", Tensor::from_vector<float>({1e6f, -1e6f}, {2}));
  b.node("Mul", {"X", "big"}, {"Y"}, "mul");
  b.output("Y");
  auto mr = b.build("big.onnx");
  ASSERT_TRUE(mr.is_ok());
  Model m = mr.value();
  auto r = convert_fp16(m, {});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()["clamped_values"], 2);
  const Tensor& t = m.graph.value(m.graph.find_value("big")).initializer;
  ASSERT_EQ(t.dtype(), DataType::kFloat16);
  EXPECT_EQ(half_to_float(t.data<uint16_t>()[0]), 65504.f);
  EXPECT_EQ(half_to_float(t.data<uint16_t>()[1]), -65504.f);
}

// ---------------------------------------------------------------------------
// Real model (skips without ../shared/data)

const std::string kModels = std::string(MEDQ_SHARED_DATA) + "/models";
bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

int argmax_row(const Tensor& t, int64_t row) {
  int64_t c = t.dim(1);
  const float* p = t.data<float>() + row * c;
  return static_cast<int>(std::max_element(p, p + c) - p);
}

TEST(QuantRealModel, BrainResnet18Int8AgreesWithFp32Top1) {
  const std::string model = kModels + "/brain_resnet18.onnx";
  const std::string manifest = std::string(MEDQ_SHARED_DATA) + "/brain_mri/manifest.csv";
  const std::string tdir = kModels + "/brain_resnet18_test_data/test_data_set_0";
  if (!exists(model) || !exists(manifest) || !exists(tdir)) GTEST_SKIP() << "shared data absent: " << model;
  auto mr = load_model(model);
  ASSERT_TRUE(mr.is_ok()) << mr.status().message();
  auto x = load_tensor_pb(tdir + "/input_0.pb");
  auto y = load_tensor_pb(tdir + "/output_0.pb");
  ASSERT_TRUE(x.is_ok() && y.is_ok());

  DatasetSpec spec;
  spec.path = manifest;
  spec.split = "train";
  auto ds = Dataset::open(spec);
  ASSERT_TRUE(ds.is_ok()) << ds.status().message();
  auto idx = balanced_sample(*ds.value(), 32, {"label"}, 0, nullptr);
  ASSERT_TRUE(idx.is_ok());
  auto cfg = parse_preprocess_json(mr.value().meta("preprocess"));
  ASSERT_TRUE(cfg.is_ok());
  BatchLoader loader(*ds.value(), idx.value(), cfg.value(), 16);
  BatchSource next = [&](std::vector<Tensor>& in) -> Result<bool> {
    Batch b;
    if (!loader.next(b)) {
      RETURN_IF_ERROR(loader.status());
      return false;
    }
    in = {b.x};
    return true;
  };
  Model q = mr.value();
  QuantizeOptions o;
  auto rep = quantize_static(q, o, next);
  ASSERT_TRUE(rep.is_ok()) << rep.status().message();
  EXPECT_EQ(rep.value()["samples"], 32);
  const std::string qpath = tmp_path("brain_int8.onnx");
  auto saved = save_model_checked(q, qpath);
  ASSERT_TRUE(saved.is_ok()) << saved.status().message();
  auto ql = load_model(qpath);
  ASSERT_TRUE(ql.is_ok()) << ql.status().message();
  EXPECT_LT(saved.value(), 0.3 * 44.7e6);
  std::vector<Tensor> got;
  Status st = run_model(ql.value(), {x.value()}, true, &got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  ASSERT_EQ(got[0].shape(), y.value().shape());
  for (int64_t i = 0; i < y.value().dim(0); ++i) EXPECT_EQ(argmax_row(got[0], i), argmax_row(y.value(), i)) << i;

  // fp16 of the same model: finite initializers, logits within ~1e-2.
  Model h = mr.value();
  auto fr = convert_fp16(h, {});
  ASSERT_TRUE(fr.is_ok()) << fr.status().message();
  for (const auto& v : h.graph.values)
    if (v.is_constant() && v.initializer.dtype() == DataType::kFloat16)
      for (int64_t i = 0; i < v.initializer.numel(); ++i)
        ASSERT_TRUE(std::isfinite(half_to_float(v.initializer.data<uint16_t>()[i]))) << v.name;
  auto hs = save_model_checked(h, tmp_path("brain_fp16.onnx"));
  ASSERT_TRUE(hs.is_ok()) << hs.status().message();
  auto hl = load_model(tmp_path("brain_fp16.onnx"));
  ASSERT_TRUE(hl.is_ok()) << hl.status().message();
  std::vector<Tensor> got16;
  st = run_fp16(hl.value(), {x.value()}, &got16);
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_LT(max_abs_diff(got16[0], y.value()), 2e-2);
}

}  // namespace
}  // namespace medq
