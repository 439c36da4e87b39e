// Session: an immutable compiled plan (optimized graph + created kernels with
// pre-packed weights) that many threads may run() at once. Each run() has its
// own execution state; intermediate values live in one arena whose layout (a
// memory plan computed from value lifetimes) is cached per input-shape
// signature. Arenas are pooled so steady-state runs do not allocate them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"
#include "kernels/dnnl/dnnl_layout.h"
#include "ops/kernel.h"

namespace medq {

struct SessionOptions {
  int num_threads = 0;                // 0: all cores
  bool optimize = true;               // run the default graph pass pipeline
  std::vector<std::string> backends;  // allowed kernel backends; empty: all ("dnnl", "ref")
  bool verify_passes = false;         // re-verify the graph after every pass
  // Choose each convolution's oneDNN implementation by timing the candidates on the first run
  // of a shape (like cudnn.benchmark): slower first run, a few percent faster afterwards.
  bool tune_kernels = false;
  // Activation layout between oneDNN kernels: "" / "auto" (per graph and CPU, see
  // kernels/dnnl/dnnl_layout.h blocked_layout_for), nhwc, nChw8c, nChw16c or plain.
  std::string layout;
  // With optimize = false: still run the activation layout pass (which then keeps every value
  // and name), so that an observed run (calibration) computes in the engine's fast layouts.
  bool assign_layouts = false;
};

struct NodeProfile {
  std::string name, op_type, backend;
  double total_ms = 0;
  int64_t calls = 0;
};

// Called for every graph input and every node output after it is computed
// (calibration observers, debugging). The tensor is only valid during the call; `layout` says
// how its bytes are stored (plain unless SessionOptions::assign_layouts gave it a blocked layout).
using ValueObserver = std::function<void(const Value& value, const Tensor& t, Layout layout)>;

struct RunStats {
  std::vector<NodeProfile> nodes;  // per-node times (filled whenever RunStats is passed)
  ValueObserver observer;          // optional
};

struct MemoryPlanInfo {
  size_t arena_bytes = 0;      // planned arena size
  size_t naive_bytes = 0;      // sum of all intermediate sizes (no reuse)
  int num_buffers = 0;
  int inplace_outputs = 0;     // outputs planned into an input's buffer (Kernel::inplace_input)
};

class Session {
 public:
  static Result<std::unique_ptr<Session>> create(const Model& model, const SessionOptions& opts = {});
  ~Session();

  // Inputs positionally in graph-input order. Thread-safe.
  Result<std::vector<Tensor>> run(const std::vector<Tensor>& inputs, RunStats* profile = nullptr) const;
  Result<std::vector<Tensor>> run_named(const std::map<std::string, Tensor>& inputs) const;

  const Model& model() const { return model_; }  // the model as loaded (unoptimized)
  const Graph& graph() const { return graph_; }  // the compiled graph
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;
  const Value& input_value(size_t i) const { return graph_.value(graph_.inputs[i]); }
  int num_threads() const { return num_threads_; }
  // The blocked layout the compiled graph stores activations in ("plain" when none is).
  const std::string& activation_layout() const { return activation_layout_; }
  // The memory plan for the most recently planned input signature (for reports/tests).
  MemoryPlanInfo last_plan_info() const;
  // Bytes held in the pool of arenas kept between runs (bounded; for tests and diagnostics).
  size_t pooled_arena_bytes() const;

 private:
  struct Plan;
  Session() = default;
  Status compile(const SessionOptions& opts);
  Status validate_inputs(const std::vector<Tensor>& inputs) const;
  // An arena of at least `bytes` from the pool (or newly allocated); *capacity = its real size.
  std::shared_ptr<void> acquire_arena(size_t bytes, size_t* capacity) const;
  void release_arena(std::shared_ptr<void> a, size_t capacity) const;

  Model model_;
  Graph graph_;
  std::vector<std::unique_ptr<Kernel>> kernels_;  // one per node of graph_
  std::vector<int> last_use_;                      // per value: last node index that reads it
  int num_threads_ = 1;
  std::string activation_layout_ = "plain";
  bool tune_ = false;

  mutable std::mutex mu_;
  mutable std::map<std::string, std::shared_ptr<const Plan>> plans_;
  mutable std::shared_ptr<const Plan> last_plan_;
  mutable std::vector<std::pair<size_t, std::shared_ptr<void>>> arena_pool_;
};

// Describes unsupported ops of a model without building a session: empty when all supported.
std::string unsupported_ops_report(const Graph& g);

}  // namespace medq
