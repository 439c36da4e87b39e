// Test helper: runs one node through a kernel of the global registry (by
// default the "ref" backend) without a Session: builds a one-node Graph,
// creates the kernel, calls infer(), allocates the outputs and calls run().
#pragma once

#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/kernel.h"

namespace medq {
namespace testing_ref {

struct OpInput {
  Tensor t;               // undefined: omitted optional input
  bool constant = false;  // becomes an initializer (visible to create())
};

inline OpInput in(Tensor t) { return {std::move(t), false}; }
inline OpInput cst(Tensor t) { return {std::move(t), true}; }
inline OpInput none() { return {Tensor(), false}; }

struct OpSpec {
  std::string op_type;
  std::string domain;
  std::vector<Attribute> attrs;
  int64_t opset = 17;
  int num_outputs = 1;
  std::vector<std::string> backends = {"ref"};
};

inline Result<std::vector<Tensor>> run_op(const OpSpec& spec, const std::vector<OpInput>& inputs,
                                          int num_threads = 2) {
  Graph g;
  Node n;
  n.name = "node0";
  n.op_type = spec.op_type;
  n.domain = spec.domain;
  n.attrs = spec.attrs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const OpInput& oi = inputs[i];
    if (!oi.t.defined()) {
      n.inputs.push_back(kNoValue);
      continue;
    }
    uint32_t id;
    if (oi.constant) {
      id = g.add_constant("in" + std::to_string(i), oi.t);
    } else {
      id = g.add_value("in" + std::to_string(i));
      g.value(id).dtype = oi.t.dtype();
      g.value(id).shape = oi.t.shape();
      g.value(id).has_shape = true;
      g.inputs.push_back(id);
    }
    n.inputs.push_back(id);
  }
  for (int o = 0; o < spec.num_outputs; ++o) {
    uint32_t id = g.add_value("out" + std::to_string(o));
    n.outputs.push_back(id);
    g.outputs.push_back(id);
  }
  g.add_node(n);
  RETURN_IF_ERROR(g.finalize());
  const Node& node = g.nodes[0];
  auto k = KernelRegistry::global().create(KernelCreateInfo{node, g, spec.opset}, spec.backends);
  if (!k.is_ok()) return k.status();
  TensorList kin;
  for (const auto& oi : inputs) kin.push_back(oi.t.defined() ? &oi.t : nullptr);
  std::vector<TensorDesc> descs(spec.num_outputs);
  RETURN_IF_ERROR(k.value()->infer(kin, descs));
  std::vector<Tensor> outs;
  for (const auto& d : descs) outs.emplace_back(d.dtype, d.shape);
  std::vector<Tensor*> kout;
  for (auto& t : outs) kout.push_back(&t);
  RunContext ctx;
  ctx.num_threads = num_threads;
  RETURN_IF_ERROR(k.value()->run(kin, kout, ctx));
  return outs;
}

inline Tensor random_tensor(Shape s, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  Tensor t(DataType::kFloat32, std::move(s));
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

inline Tensor i64(std::vector<int64_t> v) {
  Shape s = {static_cast<int64_t>(v.size())};
  return Tensor::from_vector<int64_t>(v, s);
}

inline Tensor f32(std::vector<float> v, Shape s) { return Tensor::from_vector<float>(v, std::move(s)); }

inline Tensor iota_f32(Shape s) {
  Tensor t(DataType::kFloat32, std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

}  // namespace testing_ref
}  // namespace medq
