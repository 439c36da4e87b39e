#include "runtime/session.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "kernels/dnnl/dnnl_layout.h"
#include "onnx/model_io.h"
#include "passes/pass.h"
#include "runtime/planner.h"

namespace medq {

struct Session::Plan {
  std::vector<Shape> shapes;         // per value (intermediates), as recorded
  std::vector<int64_t> offsets;      // per value: arena offset, -1 if not in arena
  size_t arena_bytes = 0;
  MemoryPlanInfo info;
};

Session::~Session() = default;

std::string unsupported_ops_report(const Graph& g) {
  const auto& reg = KernelRegistry::global();
  std::map<std::string, std::vector<std::string>> missing;
  for (const auto& n : g.nodes)
    if (!reg.has_op(n.domain, n.op_type))
      missing[(n.domain.empty() ? "" : n.domain + "::") + n.op_type].push_back(n.name);
  if (missing.empty()) return "";
  std::string r = "unsupported ops: ";
  bool first = true;
  for (const auto& [op, names] : missing) {
    if (!first) r += "; ";
    first = false;
    r += op + " (" + std::to_string(names.size()) + " node" + (names.size() > 1 ? "s" : "") + ": ";
    for (size_t i = 0; i < names.size() && i < 5; ++i) r += (i ? ", '" : "'") + names[i] + "'";
    if (names.size() > 5) r += ", ...";
    r += ")";
  }
  return r;
}

Result<std::unique_ptr<Session>> Session::create(const Model& model, const SessionOptions& opts) {
  std::unique_ptr<Session> s(new Session());
  s->model_ = model;
  Status st = s->compile(opts);
  if (!st.is_ok()) return st;
  return s;
}

Status Session::compile(const SessionOptions& opts) {
  num_threads_ = opts.num_threads > 0 ? opts.num_threads : omp_get_num_procs();
  tune_ = opts.tune_kernels;
  int64_t opset = model_.opset("");
  if (opset != 0 && (opset < kMinOpset || opset > kMaxOpset))
    return unsupported("model '" + model_.source_path + "' uses opset " + std::to_string(opset) +
                       "; medq supports opsets " + std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset));
  if (opset == 0) opset = 1;
  graph_ = model_.graph;
  std::string missing = unsupported_ops_report(graph_);
  if (!missing.empty()) return unsupported(missing);
  {
    // Legalization, not optimization: fp16 weights/activations run on fp32 kernels.
    PassContext lctx;
    lctx.opset = opset;
    ASSIGN_OR_RETURN(auto legal, make_pipeline({"fp16"}));
    RETURN_IF_ERROR(run_passes(graph_, lctx, legal));
  }
  if (opts.optimize) {
    PassContext pctx;
    pctx.opset = opset;
    pctx.verify = opts.verify_passes;
    pctx.backends = opts.backends;
    Layout requested;
    if (!opts.layout.empty() && opts.layout != "auto" && !parse_layout_name(opts.layout, &requested))
      return invalid_argument("unknown activation layout '" + opts.layout +
                              "' (expected auto, nhwc, nChw8c, nChw16c or plain)");
    pctx.layout = opts.layout;
    RETURN_IF_ERROR(run_default_pipeline(graph_, pctx));
  } else if (opts.assign_layouts) {
    PassContext pctx;
    pctx.opset = opset;
    pctx.verify = opts.verify_passes;
    pctx.backends = opts.backends;
    pctx.layout = opts.layout;
    pctx.keep_values = true;
    ASSIGN_OR_RETURN(auto ps, make_pipeline({"layouts"}));
    RETURN_IF_ERROR(run_passes(graph_, pctx, ps));
  }
  for (const auto& n : graph_.nodes)
    for (bool input : {true, false})
      for (size_t i = 0; i < (input ? n.inputs.size() : n.outputs.size()); ++i)
        if (node_layout(n, input, i) != Layout::kPlain) activation_layout_ = layout_name(node_layout(n, input, i));
  kernels_.clear();
  kernels_.reserve(graph_.nodes.size());
  std::vector<std::string> errors;
  for (const auto& n : graph_.nodes) {
    auto k = KernelRegistry::global().create(KernelCreateInfo{n, graph_, opset}, opts.backends);
    if (!k.is_ok()) {
      errors.push_back(k.status().message());
      kernels_.push_back(nullptr);
      continue;
    }
    // Values stored in a dnnl blocked layout (passes/assign_layouts.cc) must not reach another backend.
    if (has_blocked_io(n) && std::string(k.value()->backend()) != "dnnl")
      return internal_error(n.label() + " has blocked-layout inputs/outputs but got a " +
                            std::string(k.value()->backend()) + " kernel");
    kernels_.push_back(std::move(k).value());
  }
  if (!errors.empty()) {
    std::string msg = errors[0];
    for (size_t i = 1; i < errors.size() && i < 8; ++i) msg += "; " + errors[i];
    if (errors.size() > 8) msg += "; and " + std::to_string(errors.size() - 8) + " more";
    return invalid_argument(msg);
  }
  last_use_.assign(graph_.values.size(), -1);
  for (int i = 0; i < static_cast<int>(graph_.nodes.size()); ++i)
    for (uint32_t in : graph_.nodes[i].inputs)
      if (in != kNoValue) last_use_[in] = i;
  for (uint32_t o : graph_.outputs) last_use_[o] = static_cast<int>(graph_.nodes.size());
  return Status::ok();
}

std::vector<std::string> Session::input_names() const {
  std::vector<std::string> r;
  for (uint32_t i : graph_.inputs) r.push_back(graph_.value(i).name);
  return r;
}

std::vector<std::string> Session::output_names() const {
  std::vector<std::string> r;
  for (uint32_t o : graph_.outputs) r.push_back(graph_.value(o).name);
  return r;
}

MemoryPlanInfo Session::last_plan_info() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_plan_ ? last_plan_->info : MemoryPlanInfo{};
}

Status Session::validate_inputs(const std::vector<Tensor>& inputs) const {
  if (inputs.size() != graph_.inputs.size())
    return invalid_argument("model expects " + std::to_string(graph_.inputs.size()) + " input(s), got " +
                            std::to_string(inputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Value& v = graph_.value(graph_.inputs[i]);
    const Tensor& t = inputs[i];
    if (!t.defined()) return invalid_argument("input '" + v.name + "' is missing");
    if (v.dtype != DataType::kUndefined && t.dtype() != v.dtype)
      return invalid_argument("input '" + v.name + "': expected dtype " + dtype_name(v.dtype) + ", got " +
                              dtype_name(t.dtype()));
    if (v.has_shape) {
      bool ok = t.rank() == static_cast<int>(v.shape.size());
      for (size_t d = 0; ok && d < v.shape.size(); ++d)
        if (v.shape[d] >= 0 && v.shape[d] != t.shape()[d]) ok = false;
      if (!ok) {
        std::string want = "[";
        for (size_t d = 0; d < v.shape.size(); ++d) {
          if (d) want += ",";
          if (v.shape[d] >= 0) want += std::to_string(v.shape[d]);
          else want += (d < v.dim_params.size() && !v.dim_params[d].empty()) ? v.dim_params[d] : "?";
        }
        want += "]";
        return invalid_argument("input '" + v.name + "': expected shape " + want + ", got " + shape_str(t.shape()));
      }
    }
  }
  return Status::ok();
}

std::shared_ptr<void> Session::acquire_arena(size_t bytes, size_t* capacity) const {
  {
    std::lock_guard<std::mutex> lk(mu_);
    // The smallest pooled arena that is large enough.
    size_t best = arena_pool_.size();
    for (size_t i = 0; i < arena_pool_.size(); ++i)
      if (arena_pool_[i].first >= bytes && (best == arena_pool_.size() || arena_pool_[i].first < arena_pool_[best].first))
        best = i;
    if (best < arena_pool_.size()) {
      auto a = std::move(arena_pool_[best].second);
      *capacity = arena_pool_[best].first;
      arena_pool_.erase(arena_pool_.begin() + static_cast<long>(best));
      return a;
    }
  }
  *capacity = bytes;
  return aligned_alloc_shared(bytes);
}

size_t Session::pooled_arena_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  size_t total = 0;
  for (const auto& [cap, a] : arena_pool_) total += cap;
  return total;
}

// `capacity` is the arena's allocated size (not the size the last run needed): a large arena
// reused by a small batch goes back into the pool as large.
void Session::release_arena(std::shared_ptr<void> a, size_t capacity) const {
  std::lock_guard<std::mutex> lk(mu_);
  if (arena_pool_.size() < 16) arena_pool_.emplace_back(capacity, std::move(a));
}

static std::string signature_of(const std::vector<Tensor>& inputs) {
  std::string s;
  for (const auto& t : inputs) s += std::to_string(static_cast<int>(t.dtype())) + shape_str(t.shape()) + ";";
  return s;
}

Result<std::vector<Tensor>> Session::run_named(const std::map<std::string, Tensor>& inputs) const {
  std::vector<Tensor> in;
  for (uint32_t id : graph_.inputs) {
    auto it = inputs.find(graph_.value(id).name);
    if (it == inputs.end()) return invalid_argument("input '" + graph_.value(id).name + "' is missing");
    in.push_back(it->second);
  }
  for (const auto& [k, v] : inputs)
    if (graph_.find_value(k) == kNoValue || !graph_.is_graph_input(graph_.find_value(k)))
      return invalid_argument("unknown input '" + k + "'");
  return run(in);
}

Result<std::vector<Tensor>> Session::run(const std::vector<Tensor>& inputs, RunStats* profile) const {
  RETURN_IF_ERROR(validate_inputs(inputs));
  const std::string sig = signature_of(inputs);
  std::shared_ptr<const Plan> plan;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = plans_.find(sig);
    if (it != plans_.end()) plan = it->second;
  }
  omp_set_num_threads(num_threads_);
  RunContext ctx;
  ctx.num_threads = num_threads_;
  ctx.tune = tune_;

  const size_t nv = graph_.values.size();
  std::vector<Tensor> vals(nv);
  for (size_t i = 0; i < graph_.inputs.size(); ++i) vals[graph_.inputs[i]] = inputs[i];
  if (profile && profile->observer)
    for (size_t i = 0; i < graph_.inputs.size(); ++i)
      profile->observer(graph_.value(graph_.inputs[i]), inputs[i], Layout::kPlain);
  std::vector<uint8_t> is_output(nv, 0);
  for (uint32_t o : graph_.outputs) is_output[o] = 1;

  // Buffer roots: a view shares its source's storage.
  std::vector<uint32_t> root(nv);
  for (uint32_t i = 0; i < nv; ++i) root[i] = i;

  std::shared_ptr<void> arena;
  size_t arena_size = 0;
  if (plan) {
    arena = acquire_arena(plan->arena_bytes, &arena_size);
  }
  // Recording for the plan (first run of a signature).
  std::vector<int> def_step(nv, -1);
  std::vector<Shape> rec_shapes(plan ? 0 : nv);
  std::vector<size_t> rec_bytes(plan ? 0 : nv, 0);
  std::vector<uint8_t> in_arena_candidate(plan ? 0 : nv, 0);
  // In-place outputs (Kernel::inplace_input): share_of[o] = the input whose buffer o reuses.
  std::vector<int64_t> share_of(plan ? 0 : nv, -1);
  // The buffer a value finally lives in: through views (root) and in-place outputs (share_of).
  auto buffer_of = [&](uint32_t v) {
    for (;;) {
      v = root[v];
      if (share_of[v] < 0) return v;
      v = static_cast<uint32_t>(share_of[v]);
    }
  };

  std::vector<TensorDesc> descs;
  TensorList kin;
  std::vector<Tensor*> kout;
  const int num_nodes = static_cast<int>(graph_.nodes.size());
  if (profile && profile->nodes.size() != graph_.nodes.size()) {
    profile->nodes.assign(graph_.nodes.size(), NodeProfile{});
    for (int i = 0; i < num_nodes; ++i) {
      profile->nodes[i].name = graph_.nodes[i].name;
      profile->nodes[i].op_type = graph_.nodes[i].op_type;
      profile->nodes[i].backend = kernels_[i]->backend();
    }
  }
  for (int ni = 0; ni < num_nodes; ++ni) {
    const Node& n = graph_.nodes[ni];
    const Kernel& k = *kernels_[ni];
    kin.clear();
    for (uint32_t in : n.inputs) {
      if (in == kNoValue) { kin.push_back(nullptr); continue; }
      const Value& v = graph_.value(in);
      kin.push_back(v.is_constant() ? &v.initializer : &vals[in]);
    }
    descs.clear();
    descs.resize(n.outputs.size());
    Status st = k.infer(kin, descs);
    if (!st.is_ok()) return st;
    if (descs.size() != n.outputs.size()) return internal_error(n.label() + ": kernel reported wrong output count");
    for (size_t oi = 0; oi < descs.size(); ++oi) {
      if (n.outputs[oi] == kNoValue) continue;
      double elems = 1;
      for (int64_t d : descs[oi].shape) {
        if (d < 0) return invalid_argument(n.label() + ": output " + std::to_string(oi) + " would have negative dim " + shape_str(descs[oi].shape));
        elems *= static_cast<double>(d);
      }
      if (elems * dtype_size(descs[oi].dtype) > 1e12)
        return invalid_argument(n.label() + ": output " + std::to_string(oi) + " shape " + shape_str(descs[oi].shape) + " is too large to allocate");
    }
    auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    int view = k.view_of_input();
    if (view >= 0 && n.outputs.size() == 1 && kin[view] != nullptr) {
      uint32_t o = n.outputs[0];
      if (shape_numel(descs[0].shape) != kin[view]->numel())
        return invalid_argument(n.label() + ": cannot view " + shape_str(kin[view]->shape()) + " as " +
                                shape_str(descs[0].shape));
      vals[o] = kin[view]->reshaped(descs[0].shape);
      uint32_t src = n.inputs[view];
      if (!graph_.value(src).is_constant() && !graph_.is_graph_input(src)) root[o] = root[src];
      def_step[o] = ni;
      if (!plan) rec_shapes[o] = descs[0].shape;
    } else {
      kout.clear();
      for (size_t oi = 0; oi < n.outputs.size(); ++oi) {
        uint32_t o = n.outputs[oi];
        if (o == kNoValue) {
          kout.push_back(nullptr);
          continue;
        }
        const TensorDesc& d = descs[oi];
        size_t bytes = static_cast<size_t>(shape_numel(d.shape)) * dtype_size(d.dtype);
        if (plan && plan->offsets[o] >= 0 && plan->shapes[o] == d.shape) {
          vals[o] = Tensor::wrap(d.dtype, d.shape, static_cast<uint8_t*>(arena.get()) + plan->offsets[o]);
        } else {
          vals[o] = Tensor(d.dtype, d.shape);
        }
        if (!plan) {
          rec_shapes[o] = d.shape;
          rec_bytes[o] = bytes;
          in_arena_candidate[o] = 1;
        }
        def_step[o] = ni;
        kout.push_back(&vals[o]);
      }
      if (!plan) {
        const int k_in = k.inplace_input();
        if (k_in >= 0 && static_cast<size_t>(k_in) < n.inputs.size() && n.outputs[0] != kNoValue &&
            !is_output[n.outputs[0]] && kin[k_in] != nullptr) {
          // src must be a buffer of its own (produced by a kernel, not a view or a graph input).
          const uint32_t src = n.inputs[k_in];
          bool ok = in_arena_candidate[src] && rec_bytes[src] == rec_bytes[n.outputs[0]] &&
                    kin[k_in]->dtype() == descs[0].dtype;
          const uint32_t buf = ok ? buffer_of(src) : src;
          // Every value in src's buffer (src, views of it, earlier in-place outputs) is dead after this node.
          for (uint32_t v = 0; ok && v < nv; ++v)
            if (def_step[v] >= 0 && v != n.outputs[0] && buffer_of(v) == buf && (is_output[v] || last_use_[v] > ni))
              ok = false;
          // ... and no other input of this node reads it (Conv(x, W, B, Sum=x)).
          for (size_t j = 0; ok && j < n.inputs.size(); ++j)
            if (static_cast<int>(j) != k_in && n.inputs[j] != kNoValue && buffer_of(n.inputs[j]) == buf)
              ok = false;
          if (ok) share_of[n.outputs[0]] = src;
        }
      }
      try {
        st = k.run(kin, kout, ctx);
      } catch (const std::bad_alloc&) {
        return Status(StatusCode::kInternal, n.label() + ": out of memory");
      } catch (const std::exception& e) {
        return internal_error(n.label() + ": " + e.what());
      }
      if (!st.is_ok()) return st;
    }
    if (profile) {
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      profile->nodes[ni].total_ms += ms;
      profile->nodes[ni].calls += 1;
    }
    if (profile && profile->observer) {
      for (size_t k = 0; k < n.outputs.size(); ++k)
        if (n.outputs[k] != kNoValue && vals[n.outputs[k]].defined())
          profile->observer(graph_.value(n.outputs[k]), vals[n.outputs[k]], node_layout(n, false, k));
    }
    // Free values whose last use was this node (only in recording mode; in
    // planned mode they live in the arena).
    if (!plan) {
      for (uint32_t in : n.inputs)
        if (in != kNoValue && last_use_[in] == ni && !is_output[in] && !graph_.value(in).is_constant() &&
            !graph_.is_graph_input(in) && root[in] == in) {
          // keep the tensor object if a view still refers to it: shared storage keeps it alive
          vals[in] = Tensor();
        }
    }
  }

  std::vector<Tensor> outs;
  outs.reserve(graph_.outputs.size());
  for (uint32_t o : graph_.outputs) {
    const Value& v = graph_.value(o);
    const Tensor& t = v.is_constant() ? v.initializer : vals[o];
    // Outputs never alias the arena or the caller's inputs.
    outs.push_back(t.clone());
  }

  if (plan) {
    release_arena(std::move(arena), arena_size);
  } else {
    // Build the memory plan from this run's lifetimes.
    std::vector<int> last(nv, -1);
    for (uint32_t v = 0; v < nv; ++v) {
      if (def_step[v] < 0) continue;
      int lu = std::max(last_use_[v], def_step[v]);
      uint32_t r = buffer_of(v);
      last[r] = std::max(last[r], lu);
    }
    std::vector<uint8_t> root_is_output(nv, 0);
    for (uint32_t o : graph_.outputs) root_is_output[buffer_of(o)] = 1;
    std::vector<BufferRequest> reqs;
    for (uint32_t v = 0; v < nv; ++v) {
      if (!in_arena_candidate[v] || share_of[v] >= 0 || root_is_output[v] || rec_bytes[v] == 0) continue;
      reqs.push_back({v, rec_bytes[v], def_step[v], last[v]});
    }
    auto p = std::make_shared<Plan>();
    p->shapes = rec_shapes;
    p->offsets.assign(nv, -1);
    MemoryPlan mp = plan_memory(reqs);
    for (const auto& a : mp.assignments) p->offsets[a.id] = static_cast<int64_t>(a.offset);
    for (uint32_t v = 0; v < nv; ++v) {  // in-place outputs take their buffer's offset
      if (share_of[v] < 0 || !in_arena_candidate[v]) continue;
      const int64_t off = p->offsets[buffer_of(v)];
      if (off < 0) continue;
      p->offsets[v] = off;
      p->info.inplace_outputs += 1;
      p->info.naive_bytes += rec_bytes[v];
    }
    p->arena_bytes = mp.total_bytes;
    p->info.arena_bytes = mp.total_bytes;
    p->info.num_buffers = static_cast<int>(reqs.size());
    for (const auto& r : reqs) p->info.naive_bytes += r.bytes;
    std::lock_guard<std::mutex> lk(mu_);
    if (plans_.size() > 64) plans_.clear();  // bound the cache for many distinct shapes
    plans_[sig] = p;
    last_plan_ = p;
  }
  return outs;
}

}  // namespace medq
