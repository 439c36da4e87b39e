// Graph passes. Each pass is stand-alone: `Status run(Graph&, PassContext&, bool& changed)`.
// A pass marks nodes dead and rewires values; the manager calls
// Graph::finalize() after each pass and, with ctx.verify, Graph::verify().
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "ir/graph.h"

namespace medq {

struct PassContext {
  int64_t opset = 13;
  bool verify = false;
  std::string dump_after;  // pass name whose result is printed to stderr
  std::vector<std::string> log;  // one line per change, for reports
  std::vector<std::string> backends;  // kernel backends the session may use (empty: all); read by "layouts"
  std::string layout;  // blocked activation layout for "layouts": "" or "auto" (blocked_layout_for), else a layout name
  bool keep_values = false;  // "layouts" only marks layouts: no rewrite that removes or renames a value
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual const char* name() const = 0;
  virtual Status run(Graph& g, PassContext& ctx, bool& changed) = 0;
};

std::unique_ptr<Pass> make_eliminate_identity_pass();
std::unique_ptr<Pass> make_dead_code_pass();
std::unique_ptr<Pass> make_fold_constants_pass();
// Constant folding that leaves QuantizeLinear/DequantizeLinear alone, run before "qdq" so
// computed quantization parameters (a bias scale written as Mul(x_scale, w_scale)) become
// initializers while the int8 weights stay behind their DequantizeLinear.
std::unique_ptr<Pass> make_prefold_constants_pass();
std::unique_ptr<Pass> make_fold_batchnorm_pass();
std::unique_ptr<Pass> make_fuse_layernorm_pass();  // fuse_layernorm.cc: decomposed LayerNorm -> LayerNormalization
std::unique_ptr<Pass> make_fuse_conv_activation_pass();
std::unique_ptr<Pass> make_fuse_qdq_pass();  // fuse_qdq.cc: QDQ patterns -> medq QConv/QMatMul (before fold)
std::unique_ptr<Pass> make_assign_layouts_pass();
std::unique_ptr<Pass> make_fuse_qsum_pass();   // fuse_qsum.cc: QConv -> QAdd => QConv with oneDNN sum post-op
std::unique_ptr<Pass> make_lower_fp16_pass();  // lower_fp16.cc: fp16 models -> fp32 compute (always runs)  // assign_layouts.cc: dnnl activation layouts (run last)

// Runs passes in order, finalizing (and verifying if asked) after each.
Status run_passes(Graph& g, PassContext& ctx, const std::vector<std::unique_ptr<Pass>>& passes);
// The default pipeline used by Session: identity elimination, QDQ -> int8 fusion, constant folding,
// BN folding, conv+activation/sum fusion, dead code elimination, layout assignment.
Status run_default_pipeline(Graph& g, PassContext& ctx);
// Pipeline names for --passes style selection: "identity", "dce", "prefold", "fold", "bn", "fuse", "layouts".
Result<std::vector<std::unique_ptr<Pass>>> make_pipeline(const std::vector<std::string>& names);

// Whether the session may use kernel backend `name` (ctx.backends empty: all).
bool backend_allowed(const PassContext& ctx, const std::string& name);
// Whether the dnnl backend creates its kernel for node n (passes that rewrite or mark nodes
// only for oneDNN kernels probe with this).
bool dnnl_accepts(const Graph& g, const Node& n, int64_t opset);

// Number of live uses of a value (node inputs + graph outputs).
int use_count(const Graph& g, uint32_t vid);
// The single live consumer node of value v (nullptr when v is a graph output, kNoValue, or has
// no or several uses).
Node* single_consumer(Graph& g, uint32_t v);
// Prints the graph (one node per line) for --dump-after.
std::string graph_to_string(const Graph& g);

}  // namespace medq
