// Kernel interface and registry.
//
// Lifecycle (after XNNPACK create/reshape/run):
//  * create: a factory parses the node's attributes, validates them, reads
//    constant inputs (weights) from the Graph and pre-packs them. It returns
//    kUnsupported when this backend cannot run this node (the registry then
//    tries the next backend) and kInvalidArgument for a malformed node.
//  * infer: output dtypes and shapes from the actual inputs (their data is
//    available, so Reshape/Slice/... can read shape tensors). Called per run.
//  * run: computes into preallocated outputs; no allocation of outputs.
// A created Kernel is immutable and run() may be called from many threads
// at once; per-call state lives in RunContext.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"

namespace medq {

struct TensorDesc {
  DataType dtype = DataType::kUndefined;
  Shape shape;
};

using TensorList = std::vector<const Tensor*>;  // nullptr for an omitted optional input

struct RunContext {
  int num_threads = 1;
  bool tune = false;  // SessionOptions::tune_kernels: time oneDNN's implementations per shape
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual Status infer(const TensorList& in, std::vector<TensorDesc>& out) const = 0;
  virtual Status run(const TensorList& in, std::vector<Tensor*>& out, RunContext& ctx) const = 0;
  // >= 0 when output 0 is input k's storage with a new shape (Reshape, Flatten,
  // Squeeze, Unsqueeze, Identity): the executor aliases instead of calling run().
  virtual int view_of_input() const { return -1; }
  // >= 0 when output 0 may be computed into input k's storage (same dtype and size): the
  // executor's memory plan then gives both one buffer when input k is dead after this node
  // (a residual Sum read by the convolution's sum post-op). run() must then accept
  // out[0]->raw() == in[k]->raw().
  virtual int inplace_input() const { return -1; }
  // Short name of the implementation for profiles ("ref", "dnnl").
  virtual const char* backend() const { return "ref"; }
};

struct KernelCreateInfo {
  const Node& node;
  const Graph& graph;
  int64_t opset;  // default-domain opset of the model
  // Returns the constant tensor behind input i, or nullptr if not constant/absent.
  const Tensor* constant_input(size_t i) const {
    if (!node.has_input(i)) return nullptr;
    const Value& v = graph.value(node.inputs[i]);
    return v.is_constant() ? &v.initializer : nullptr;
  }
};

using KernelFactory = std::function<Result<std::unique_ptr<Kernel>>(const KernelCreateInfo&)>;

class KernelRegistry {
 public:
  // Backends are tried in registration-priority order: higher priority first.
  void add(const std::string& domain, const std::string& op_type, const std::string& backend, int priority,
           KernelFactory f);
  bool has_op(const std::string& domain, const std::string& op_type) const;
  // Creates the best kernel for the node. `allowed_backends` empty = all.
  Result<std::unique_ptr<Kernel>> create(const KernelCreateInfo& info,
                                         const std::vector<std::string>& allowed_backends = {}) const;
  std::vector<std::string> op_types() const;

  // The process-wide registry with every built-in op (register_all_ops()).
  static const KernelRegistry& global();

 private:
  struct Entry {
    std::string backend;
    int priority;
    KernelFactory factory;
  };
  std::map<std::string, std::vector<Entry>> entries_;  // key: domain + ":" + op_type
};

// One explicit line per op, no static-initialisation tricks (see docs/architecture.md).
void register_all_ops(KernelRegistry& r);

// Helper for simple kernels: a factory from a constructor taking the create info.
template <class K>
KernelFactory make_factory() {
  return [](const KernelCreateInfo& info) -> Result<std::unique_ptr<Kernel>> {
    auto k = std::make_unique<K>();
    Status st = k->init(info);
    if (!st.is_ok()) return st;
    return std::unique_ptr<Kernel>(std::move(k));
  };
}

// Numpy-style multidirectional broadcast of two shapes.
Result<Shape> broadcast_shapes(const Shape& a, const Shape& b);
// Normalises a possibly negative axis against rank; error names the node.
Result<int> normalize_axis(int64_t axis, int rank, const Node& node);

}  // namespace medq
