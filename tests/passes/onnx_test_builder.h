// Test helper: builds small ONNX models with the onnx protobuf API and loads
// them through the real loader (checker + shape inference), plus helpers to run
// a model with or without the graph passes and to compare float outputs.
#pragma once

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq::testing_onnx {

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr int kI64 = onnx::TensorProto::INT64;

class OnnxBuilder {
 public:
  explicit OnnxBuilder(int64_t opset = 13, int64_t ir_version = 8) {
    mp_.set_ir_version(ir_version);
    auto* o = mp_.add_opset_import();
    o->set_domain("");
    o->set_version(opset);
    mp_.set_producer_name("medq-tests");
    g_ = mp_.mutable_graph();
    g_->set_name("test_graph");
  }

  // dims: -1 means a symbolic dim named by `params` (default "N").
  OnnxBuilder& input(const std::string& name, std::vector<int64_t> dims, int elem = kF32,
                     const std::string& param = "N") {
    fill_vi(g_->add_input(), name, dims, elem, param, true);
    return *this;
  }
  // Outputs carry only the element type; bytes() fills in the inferred shape.
  OnnxBuilder& output(const std::string& name, int elem = kF32) {
    fill_vi(g_->add_output(), name, {}, elem, "", false);
    return *this;
  }
  OnnxBuilder& output_with_shape(const std::string& name, std::vector<int64_t> dims, int elem = kF32) {
    fill_vi(g_->add_output(), name, dims, elem, "N", true);
    return *this;
  }
  // Serialized as built (no shape inference).
  std::string raw_bytes() const { return mp_.SerializeAsString(); }
  OnnxBuilder& init(const std::string& name, const Tensor& t) {
    tensor_to_proto(t, name, g_->add_initializer());
    return *this;
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> ins, std::vector<std::string> outs,
                        const std::string& name = "") {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name.empty() ? op + "_" + std::to_string(g_->node_size()) : name);
    for (auto& i : ins) n->add_input(i);
    for (auto& o : outs) n->add_output(o);
    return n;
  }
  onnx::ModelProto& proto() { return mp_; }
  // Serialized model; graph outputs get their shapes from ONNX shape inference (the
  // checker requires a shape on graph outputs).
  std::string bytes() const {
    onnx::ModelProto mp = mp_;
    try {
      onnx::shape_inference::InferShapes(mp);
    } catch (const std::exception&) {
      return mp_.SerializeAsString();  // let the loader report the problem
    }
    for (auto& o : *mp.mutable_graph()->mutable_output()) {
      auto* tt = o.mutable_type()->mutable_tensor_type();
      if (!tt->has_shape()) tt->mutable_shape();  // unknown rank: still no dims given
    }
    return mp.SerializeAsString();
  }
  Result<Model> build(const std::string& name = "test.onnx") const {
    return load_model_from_bytes(bytes(), name);
  }

 private:
  static void fill_vi(onnx::ValueInfoProto* vi, const std::string& name, const std::vector<int64_t>& dims, int elem,
                      const std::string& param, bool with_shape) {
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    if (!with_shape) return;
    auto* sh = tt->mutable_shape();
    for (int64_t d : dims) {
      auto* dp = sh->add_dim();
      if (d >= 0) dp->set_dim_value(d);
      else dp->set_dim_param(param);
    }
  }
  onnx::ModelProto mp_;
  onnx::GraphProto* g_;
};

inline void attr_i(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
inline void attr_f(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
inline void attr_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

inline Tensor random_f32(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t(DataType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

// A copy of `m` whose graph is `g` (e.g. a graph rewritten by passes).
inline Model with_graph(const Model& m, const Graph& g) {
  Model r = m;
  r.graph = g;
  return r;
}

// Runs the model twice with session options `o` and returns the second run's outputs: the first
// run of a shape records the memory plan, the second runs in the planned arena (shared and
// in-place buffers). Returns the status of create/run.
inline Status run_session_twice(const Model& m, const std::vector<Tensor>& inputs, const SessionOptions& o,
                                std::vector<Tensor>* out) {
  auto s = Session::create(m, o);
  if (!s.is_ok()) return s.status();
  auto recorded = s.value()->run(inputs);
  if (!recorded.is_ok()) return recorded.status();
  auto r = s.value()->run(inputs);
  if (!r.is_ok()) return r.status();
  *out = std::move(r).value();
  return Status::ok();
}

// run_session_twice with the pass verifier on; optimize=false: the graph as given.
inline Status run_model(const Model& m, const std::vector<Tensor>& inputs, bool optimize, std::vector<Tensor>* out,
                        int threads = 2) {
  SessionOptions o;
  o.optimize = optimize;
  o.num_threads = threads;
  o.verify_passes = true;
  return run_session_twice(m, inputs, o, out);
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != DataType::kFloat32 || b.dtype() != DataType::kFloat32) return INFINITY;
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    d = std::max(d, static_cast<double>(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  return d;
}

inline int count_op(const Graph& g, const std::string& op) {
  int c = 0;
  for (const auto& n : g.nodes) c += !n.dead && n.op_type == op;
  return c;
}

}  // namespace medq::testing_onnx
