// Model loading/saving tests: round trip, external data (incl. path escapes),
// corrupt/truncated input, opset range and unknown-op reports.
#include <gtest/gtest.h>

#include <functional>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "../passes/onnx_test_builder.h"

namespace medq {
namespace {

using namespace testing_onnx;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/medq_model_io_XXXXXX";
    char* d = ::mkdtemp(tmpl);
    path_ = d ? d : "/tmp";
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& n) const { return path_ + "/" + n; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool tensors_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

OnnxBuilder rich_model() {
  OnnxBuilder b(13);
  b.input("X", {-1, 3}, kF32, "batch");
  b.init("W", random_f32({3, 3}, 1));
  b.init("i64", Tensor::from_vector<int64_t>({1, -2, 3}, {3}));
  b.init("u8", Tensor::from_vector<uint8_t>({0, 7, 255}, {3}));
  b.init("i8", Tensor::from_vector<int8_t>({-128, 0, 127}, {3}));
  b.init("flag", Tensor::scalar<bool>(true));
  b.init("empty", Tensor(DataType::kFloat32, {0, 3}));
  b.node("MatMul", {"X", "W"}, {"m"}, "mm");
  b.node("Relu", {"m"}, {"Y"}, "relu");
  b.node("Cast", {"u8"}, {"u8f"}, "cast");
  b.node("Identity", {"i64"}, {"I"}, "id");
  attr_i(b.proto().mutable_graph()->mutable_node(2), "to", kF32);
  auto* c2 = b.node("Cast", {"i8"}, {"i8f"}, "cast_i8");
  attr_i(c2, "to", kF32);
  b.node("Not", {"flag"}, {"nflag"}, "not");
  b.output("Y").output("u8f").output("I", kI64).output("i8f").output("nflag", onnx::TensorProto::BOOL);
  auto& mp = b.proto();
  auto* o = mp.add_opset_import();
  o->set_domain("com.microsoft");
  o->set_version(1);
  mp.set_doc_string("a model");
  mp.set_model_version(42);
  for (auto [k, v] : {std::pair<const char*, const char*>{"labels", "[\"a\", \"b\"]"}, {"preprocess", "{}"},
                      {"empty_value", ""}}) {
    auto* p = mp.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  return b;
}

TEST(ModelIo, SaveLoadRoundTripKeepsEverything) {
  TempDir dir;
  auto m1 = rich_model().build("rich.onnx");
  ASSERT_TRUE(m1.is_ok()) << m1.status().message();
  ASSERT_TRUE(save_model(m1.value(), dir.file("rt.onnx")).is_ok());
  auto m2 = load_model(dir.file("rt.onnx"));
  ASSERT_TRUE(m2.is_ok()) << m2.status().message();
  const Model& a = m1.value();
  const Model& b = m2.value();
  EXPECT_EQ(a.metadata, b.metadata);
  EXPECT_EQ(b.meta("labels"), "[\"a\", \"b\"]");
  EXPECT_EQ(a.opset_imports, b.opset_imports);
  EXPECT_EQ(b.opset(""), 13);
  EXPECT_EQ(b.opset("com.microsoft"), 1);
  EXPECT_EQ(b.doc_string, "a model");
  EXPECT_EQ(b.model_version, 42);
  EXPECT_EQ(b.producer_name, "medq-tests");
  EXPECT_EQ(a.ir_version, b.ir_version);
  ASSERT_EQ(a.graph.nodes.size(), b.graph.nodes.size());
  for (size_t i = 0; i < a.graph.nodes.size(); ++i) {
    EXPECT_EQ(a.graph.nodes[i].name, b.graph.nodes[i].name);
    EXPECT_EQ(a.graph.nodes[i].op_type, b.graph.nodes[i].op_type);
  }
  for (const char* n : {"W", "i64", "u8", "i8", "flag"}) {
    uint32_t va = a.graph.find_value(n), vb = b.graph.find_value(n);
    ASSERT_NE(vb, kNoValue) << n;
    ASSERT_TRUE(b.graph.value(vb).is_constant()) << n;
    EXPECT_TRUE(tensors_equal(a.graph.value(va).initializer, b.graph.value(vb).initializer)) << n;
  }
  // Unused initializer "empty" is dropped on save (only used constants are written).
  ASSERT_EQ(b.graph.inputs.size(), 1u);
  const Value& x = b.graph.value(b.graph.inputs[0]);
  EXPECT_EQ(x.name, "X");
  EXPECT_EQ(x.dtype, DataType::kFloat32);
  ASSERT_EQ(x.shape, (Shape{-1, 3}));
  EXPECT_EQ(x.dim_params[0], "batch");
  ASSERT_EQ(b.graph.outputs.size(), 5u);
  EXPECT_EQ(b.graph.value(b.graph.outputs[2]).name, "I");
  // Same results.
  std::vector<Tensor> ra, rb;
  Tensor in = random_f32({2, 3}, 5);
  Status s1 = run_model(a, {in}, true, &ra);
  if (s1.code() == StatusCode::kUnsupported) GTEST_SKIP() << s1.message();
  ASSERT_TRUE(s1.is_ok()) << s1.message();
  ASSERT_TRUE(run_model(b, {in}, true, &rb).is_ok());
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_TRUE(tensors_equal(ra[i], rb[i])) << i;
}

TEST(ModelIo, SaveIsAtomicAndReportsBadFolder) {
  TempDir dir;
  auto m = rich_model().build();
  ASSERT_TRUE(m.is_ok());
  Status st = save_model(m.value(), dir.file("no/such/folder/m.onnx"));
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("no/such/folder"), std::string::npos) << st.message();
}

TEST(ModelIo, TensorPbRoundTrip) {
  TempDir dir;
  Tensor t = random_f32({2, 3, 4}, 9);
  ASSERT_TRUE(save_tensor_pb(t, "x", dir.file("x.pb")).is_ok());
  std::string name;
  auto r = load_tensor_pb(dir.file("x.pb"), &name);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(name, "x");
  EXPECT_TRUE(tensors_equal(r.value(), t));
  write_bytes(dir.file("bad.pb"), "\xff\xff\xff\xff garbage");
  auto bad = load_tensor_pb(dir.file("bad.pb"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("bad.pb"), std::string::npos);
}

// A Conv-free model whose weight W[4,3] lives in an external file.
OnnxBuilder external_model(const std::string& location, int64_t offset, int64_t length,
                           const std::string& offset_str = "") {
  OnnxBuilder b(13);
  b.input("X", {2, 4});
  auto* tp = b.proto().mutable_graph()->add_initializer();
  tp->set_name("W");
  tp->set_data_type(kF32);
  tp->add_dims(4);
  tp->add_dims(3);
  tp->set_data_location(onnx::TensorProto::EXTERNAL);
  auto kv = [&](const std::string& k, const std::string& v) {
    auto* e = tp->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  kv("location", location);
  kv("offset", offset_str.empty() ? std::to_string(offset) : offset_str);
  if (length >= 0) kv("length", std::to_string(length));
  b.node("MatMul", {"X", "W"}, {"Y"}, "mm");
  b.output("Y");
  return b;
}

std::string weight_bytes(std::vector<float>* values) {
  values->resize(12);
  for (int i = 0; i < 12; ++i) (*values)[i] = 0.5f * i - 2;
  return std::string(reinterpret_cast<const char*>(values->data()), 48);
}

TEST(ModelIo, ExternalDataLoads) {
  TempDir dir;
  std::vector<float> w;
  write_bytes(dir.file("weights.bin"), std::string(16, 'x') + weight_bytes(&w) + "tail");
  write_bytes(dir.file("m.onnx"), external_model("weights.bin", 16, 48).bytes());
  auto m = load_model(dir.file("m.onnx"));
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  const Graph& g = m.value().graph;
  const Tensor& t = g.value(g.find_value("W")).initializer;
  ASSERT_EQ(t.shape(), (Shape{4, 3}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.data<float>()[i], w[i]);
  // In a subfolder, without length.
  ::mkdir(dir.file("data").c_str(), 0755);
  write_bytes(dir.file("data/w.bin"), weight_bytes(&w));
  write_bytes(dir.file("m2.onnx"), external_model("data/w.bin", 0, -1).bytes());
  auto m2 = load_model(dir.file("m2.onnx"));
  ASSERT_TRUE(m2.is_ok()) << m2.status().message();
}

void expect_load_error(const std::string& path, const std::vector<std::string>& needles, bool checker = true) {
  LoadOptions lo;
  lo.run_checker = checker;
  auto m = load_model(path, lo);
  ASSERT_FALSE(m.is_ok()) << path;
  const std::string& msg = m.status().message();
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
}

TEST(ModelIo, ExternalDataMissingFileNamesTheFile) {
  TempDir dir;
  write_bytes(dir.file("m.onnx"), external_model("missing_weights.bin", 0, 48).bytes());
  for (bool checker : {true, false}) expect_load_error(dir.file("m.onnx"), {"missing_weights.bin"}, checker);
}

TEST(ModelIo, ExternalDataPathEscapesAreRejected) {
  TempDir dir;
  std::vector<float> w;
  ::mkdir(dir.file("models").c_str(), 0755);
  write_bytes(dir.file("secret.bin"), weight_bytes(&w));
  ASSERT_EQ(::symlink(dir.file("secret.bin").c_str(), dir.file("models/link.bin").c_str()), 0);
  for (const std::string loc : {"../../etc/passwd", "../secret.bin", "/etc/passwd", "sub/../../secret.bin",
                                "link.bin"}) {
    SCOPED_TRACE(loc);
    write_bytes(dir.file("models/m.onnx"), external_model(loc, 0, -1).bytes());
    for (bool checker : {true, false}) {
      LoadOptions lo;
      lo.run_checker = checker;
      auto m = load_model(dir.file("models/m.onnx"), lo);
      ASSERT_FALSE(m.is_ok()) << "checker " << checker;
      if (!checker) {
        EXPECT_NE(m.status().message().find("escapes the model folder"), std::string::npos) << m.status().message();
      }
    }
  }
}

TEST(ModelIo, ExternalDataBadOffsetLengthOrShortFile) {
  TempDir dir;
  std::vector<float> w;
  write_bytes(dir.file("w.bin"), weight_bytes(&w));
  struct Case { int64_t offset, length; std::string offset_str, needle; };
  std::vector<Case> cases = {{8, -1, "", "too short"},
                             {0, 40, "", "length 40"},
                             {0, -1, "abc", "not a non-negative integer"},
                             {0, -1, "-5", "not a non-negative integer"},
                             {0, -1, "99999999999999999999999", "not a non-negative integer"},
                             {1000, -1, "", "too short"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.needle + " " + c.offset_str);
    write_bytes(dir.file("m.onnx"), external_model("w.bin", c.offset, c.length, c.offset_str).bytes());
    expect_load_error(dir.file("m.onnx"), {"'W'", c.needle}, false);
    LoadOptions lo;
    EXPECT_FALSE(load_model(dir.file("m.onnx"), lo).is_ok());  // with the checker: no throw either
  }
}

TEST(ModelIo, MissingFileNamesIt) {
  auto m = load_model("/nonexistent/dir/model.onnx");
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("/nonexistent/dir/model.onnx"), std::string::npos);
}

TEST(ModelIo, TruncatedModelsGiveErrorsNotCrashes) {
  std::string bytes;
  std::string real = std::string(MEDQ_SHARED_DATA) + "/models/brain_resnet18.onnx";
  auto rb = read_file(real);
  bytes = rb.is_ok() ? rb.value() : rich_model().bytes();
  ASSERT_GT(bytes.size(), 100u);
  std::vector<size_t> cuts = {1, 2, 10, 100, bytes.size() / 3, bytes.size() / 2, bytes.size() - 100,
                              bytes.size() - 1};
  for (size_t n : cuts) {
    auto m = load_model_from_bytes(bytes.substr(0, n), "cut.onnx");
    ASSERT_FALSE(m.is_ok()) << "first " << n << " bytes loaded";
    EXPECT_NE(m.status().message().find("cut.onnx"), std::string::npos) << m.status().message();
  }
  // Every prefix of the small model: never crashes. A cut inside the fields up to and including
  // the first opset_import is always an error; a cut between trailing top-level fields
  // (metadata_props) is undetectable by design of protobuf and may load.
  OnnxBuilder rb2 = rich_model();
  std::string small = rb2.bytes();
  onnx::ModelProto head;
  ASSERT_TRUE(head.ParseFromString(small));
  head.clear_metadata_props();
  while (head.opset_import_size() > 1) head.mutable_opset_import()->RemoveLast();
  const size_t must_fail = head.ByteSizeLong();
  for (size_t n = 0; n < small.size(); ++n) {
    auto m = load_model_from_bytes(small.substr(0, n), "small_cut.onnx");
    if (n < must_fail) EXPECT_FALSE(m.is_ok()) << "prefix of " << n << " bytes loaded";
  }
}

TEST(ModelIo, GarbageBytesGiveErrors) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 200; ++i) {
    std::string g(1 + rng() % 2000, '\0');
    for (auto& c : g) c = static_cast<char>(rng());
    auto m = load_model_from_bytes(g, "garbage.onnx");
    EXPECT_FALSE(m.is_ok());
    if (!m.is_ok()) EXPECT_NE(m.status().message().find("garbage.onnx"), std::string::npos);
  }
  auto e = load_model_from_bytes("", "empty.onnx");
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.status().message().find("empty"), std::string::npos);
}

TEST(ModelIo, OpsetOutOfRangeIsAClearError) {
  for (int64_t opset : {4, 5, 19, 25}) {
    OnnxBuilder b(opset, opset >= 19 ? 9 : 3);
    b.input("X", {2});
    b.node("Relu", {"X"}, {"Y"});
    b.output("Y");
    for (bool checker : {true, false}) {
      LoadOptions lo;
      lo.run_checker = checker;
      auto m = load_model_from_bytes(b.bytes(), "old.onnx", lo);
      ASSERT_FALSE(m.is_ok()) << opset;
      EXPECT_EQ(m.status().code(), StatusCode::kUnsupported) << m.status().message();
      EXPECT_NE(m.status().message().find("opset " + std::to_string(opset)), std::string::npos) << m.status().message();
      EXPECT_NE(m.status().message().find("6 to 18"), std::string::npos) << m.status().message();
    }
  }
  // Programmatic models bypassing the loader are checked by the Session too.
  OnnxBuilder b(13);
  b.input("X", {2});
  b.node("Relu", {"X"}, {"Y"});
  b.output("Y");
  auto m = b.build();
  ASSERT_TRUE(m.is_ok());
  Model old = m.value();
  old.opset_imports = {{"", 19}};
  auto s = Session::create(old);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("opset 19"), std::string::npos);
}

TEST(ModelIo, LegacyOpset6BroadcastWithAxisIsRefused) {
  OnnxBuilder b(6, 3);
  b.input("A", {2, 3, 4});
  b.input("B", {3});
  auto* n = b.node("Add", {"A", "B"}, {"Y"});
  attr_i(n, "broadcast", 1);
  attr_i(n, "axis", 1);
  b.output("Y");
  auto m = load_model_from_bytes(b.bytes(), "legacy.onnx");
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(m.status().message().find("legacy"), std::string::npos) << m.status().message();
}

TEST(ModelIo, NoOpsetImportIsAnError) {
  OnnxBuilder b(13);
  b.input("X", {2});
  b.node("Relu", {"X"}, {"Y"});
  b.output("Y");
  b.proto().clear_opset_import();
  auto m = load_model_from_bytes(b.bytes(), "noopset.onnx");
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("opset_import"), std::string::npos) << m.status().message();
}

TEST(ModelIo, UnknownOpsListedInOneError) {
  OnnxBuilder b(13);
  b.input("X", {2});
  b.node("FooOp", {"X"}, {"a"}, "foo_1");
  b.node("Relu", {"a"}, {"b"}, "relu");
  b.node("BarOp", {"b"}, {"c"}, "bar_1");
  b.node("FooOp", {"c"}, {"Y"}, "foo_2");
  b.output("Y");
  auto m = load_model_from_bytes(b.bytes(), "custom.onnx");
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnsupported);
  const std::string& msg = m.status().message();
  for (const char* w : {"custom.onnx", "FooOp (2 nodes: 'foo_1', 'foo_2')", "BarOp (1 node: 'bar_1')"})
    EXPECT_NE(msg.find(w), std::string::npos) << w << " not in: " << msg;
  EXPECT_EQ(msg.find("Relu"), std::string::npos) << msg;
}

TEST(ModelIo, HugeDeclaredInitializerIsRejectedWithoutAllocating) {
  OnnxBuilder b(13);
  b.input("X", {2});
  auto* tp = b.proto().mutable_graph()->add_initializer();
  tp->set_name("big");
  tp->set_data_type(kF32);
  for (int i = 0; i < 4; ++i) tp->add_dims(1 << 20);  // 2^80 elements
  tp->set_raw_data("abcd");
  auto* tp2 = b.proto().mutable_graph()->add_initializer();
  tp2->set_name("big2");
  tp2->set_data_type(kF32);
  tp2->add_dims(int64_t(1) << 36);  // 256 GiB with only 1 value stored
  tp2->add_float_data(1.0f);
  b.node("Relu", {"X"}, {"Y"});
  b.output("Y");
  for (bool checker : {true, false}) {
    LoadOptions lo;
    lo.run_checker = checker;
    auto m = load_model_from_bytes(b.bytes(), "big.onnx", lo);
    ASSERT_FALSE(m.is_ok());
  }
}

// Regression (fuzz_model_loader): libonnx 1.12 LayerNormalization shape inference crashed on
// axis < -rank. Loading must not crash; the kernel (if any) reports the bad axis.
TEST(ModelIo, LayerNormWithOutOfRangeAxisDoesNotCrash) {
  for (int64_t axis : {int64_t(-137707388929), int64_t(-3), int64_t(7)}) {
    OnnxBuilder b(17);
    b.input("X", {3, 4});
    b.input("W", {4});
    b.input("B", {4});
    auto* n = b.node("LayerNormalization", {"X", "W", "B"}, {"Y", "Mean", "InvStdDev"}, "ln");
    attr_i(n, "axis", axis);
    b.output_with_shape("Y", {3, 4}).output_with_shape("Mean", {3, 1}).output_with_shape("InvStdDev", {3, 1});
    auto m = load_model_from_bytes(b.raw_bytes(), "ln.onnx");  // raw: the builder's own inference would crash
    if (!m.is_ok()) continue;
    auto s = Session::create(m.value());
    if (!s.is_ok()) continue;
    auto r = s.value()->run({random_f32({3, 4}, 1), random_f32({4}, 2), random_f32({4}, 3)});
    EXPECT_FALSE(r.is_ok()) << "axis " << axis << " accepted";
  }
}

TEST(ModelIo, MalformedWindowAttributesAndRanksAreErrorsNotCrashes) {
  // Each of these made libonnx 1.12's shape inference divide by zero or index out of bounds
  // (SIGFPE / SIGSEGV in medq info, run and serve, and on a reload); the fuzzer found the ranks.
  struct Case {
    const char* what;
    std::function<void(OnnxBuilder&)> build;
    const char* needle;
    int opset;
  };
  auto strides0 = [](const char* op) {
    return [op](OnnxBuilder& b) {
      b.input("X", {1, 1, 5, 5});
      std::vector<std::string> ins{"X"};
      if (std::string(op) == "Conv") {
        b.init("W", random_f32({1, 1, 3, 3}, 1));
        ins.push_back("W");
      }
      auto* n = b.node(op, ins, {"Y"}, "n");
      if (std::string(op) != "Conv") attr_ints(n, "kernel_shape", {2, 2});
      attr_ints(n, "strides", {0, 0});
      b.output_with_shape("Y", {1, 1, 2, 2});
    };
  };
  const std::vector<Case> cases = {
      {"Conv strides 0", strides0("Conv"), "'strides' must be positive", 13},
      {"MaxPool strides 0", strides0("MaxPool"), "'strides' must be positive", 13},
      {"AveragePool strides 0", strides0("AveragePool"), "'strides' must be positive", 13},
      {"ConvInteger pads of the wrong length",
       [](OnnxBuilder& b) {
         b.input("X", {1, 1, 5, 5}, onnx::TensorProto::UINT8);
         b.input("W", {1, 1, 3, 3}, onnx::TensorProto::UINT8);
         attr_ints(b.node("ConvInteger", {"X", "W"}, {"Y"}, "n"), "pads", {1, 1});
         b.output_with_shape("Y", {1, 1, 3, 3}, onnx::TensorProto::INT32);
       },
       "'pads'", 13},
      {"ConvTranspose rank-2 input",
       [](OnnxBuilder& b) {
         b.input("X", {2, 3});
         b.init("W", random_f32({3, 1, 2, 2}, 2));
         b.node("ConvTranspose", {"X", "W"}, {"Y"}, "n");
         b.output_with_shape("Y", {1});
       },
       "rank >= 3", 13},
      {"ConvTranspose rank-0 weight",
       [](OnnxBuilder& b) {
         b.input("X", {1, 3, 4, 4});
         b.init("W", random_f32({}, 3));
         b.node("ConvTranspose", {"X", "W"}, {"Y"}, "n");
         b.output_with_shape("Y", {1});
       },
       "weight must have rank >= 3", 13},
      {"STFT rank-0 signal",
       [](OnnxBuilder& b) {
         b.input("S", {});
         b.init("step", Tensor::from_vector(std::vector<int64_t>{1}, {}));
         b.init("len", Tensor::from_vector(std::vector<int64_t>{4}, {}));
         b.node("STFT", {"S", "step", "", "len"}, {"Y"}, "n");
         b.output_with_shape("Y", {1});
       },
       "signal must have rank 3", 17},
      {"MaxUnpool rank-0 indices",
       [](OnnxBuilder& b) {
         b.input("X", {1, 1, 2, 2});
         b.input("I", {}, kI64);
         attr_ints(b.node("MaxUnpool", {"X", "I"}, {"Y"}, "n"), "kernel_shape", {2, 2});
         b.output_with_shape("Y", {1, 1, 4, 4});
       },
       "indices must have rank >= 3", 13},
  };
  for (const Case& c : cases) {
    OnnxBuilder b(c.opset);
    c.build(b);
    auto m = load_model_from_bytes(b.raw_bytes(), "bad.onnx");  // raw: the builder's own inference would crash
    ASSERT_FALSE(m.is_ok()) << c.what;
    EXPECT_NE(m.status().message().find(c.needle), std::string::npos) << c.what << ": " << m.status().message();
    EXPECT_NE(m.status().message().find("node 'n'"), std::string::npos) << m.status().message();
  }
}

TEST(ModelIo, MalformedGraphsAreErrors) {
  {  // output never produced
    OnnxBuilder b(13);
    b.input("X", {2});
    b.node("Relu", {"X"}, {"a"});
    b.output("Y");
    for (bool checker : {true, false}) {
      LoadOptions lo;
      lo.run_checker = checker;
      lo.infer_shapes = checker;
      EXPECT_FALSE(load_model_from_bytes(b.bytes(), "m.onnx", lo).is_ok());
    }
  }
  {  // cycle
    OnnxBuilder b(13);
    b.input("X", {2});
    b.node("Add", {"X", "b"}, {"a"});
    b.node("Relu", {"a"}, {"b"});
    b.output("b");
    LoadOptions lo;
    lo.run_checker = false;
    lo.infer_shapes = false;
    auto m = load_model_from_bytes(b.bytes(), "cycle.onnx", lo);
    ASSERT_FALSE(m.is_ok());
  }
  {  // value produced twice / input overwritten
    OnnxBuilder b(13);
    b.input("X", {2});
    b.node("Relu", {"X"}, {"X"});
    b.output("X");
    LoadOptions lo;
    lo.run_checker = false;
    lo.infer_shapes = false;
    EXPECT_FALSE(load_model_from_bytes(b.bytes(), "dup.onnx", lo).is_ok());
  }
}

}  // namespace
}  // namespace medq
