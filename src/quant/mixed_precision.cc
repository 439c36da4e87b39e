#include "quant/mixed_precision.h"

#include "quant/fp16.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "runtime/session.h"

namespace medq {

using nlohmann::json;

namespace {

// Values kept per observed tensor and batch for the SQNR: a fixed stride over the tensor, so
// the reference outputs of all layers take a bounded amount of memory.
constexpr int64_t kMaxObserved = 65536;

std::vector<float> subsample(const Tensor& t) {
  const int64_t n = t.numel();
  const int64_t stride = std::max<int64_t>(1, (n + kMaxObserved - 1) / kMaxObserved);
  const float* d = t.data<float>();
  std::vector<float> r;
  r.reserve(static_cast<size_t>(n / stride + 1));
  for (int64_t i = 0; i < n; i += stride) r.push_back(d[i]);
  return r;
}

int argmax_row(const float* p, int64_t k) { return static_cast<int>(std::max_element(p, p + k) - p); }

json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::string fmt_sqnr(double v) {
  char b[32];
  if (std::isfinite(v))
    std::snprintf(b, sizeof(b), "%.1f dB", v);
  else
    std::snprintf(b, sizeof(b), "inf");
  return b;
}

}  // namespace

std::vector<FallbackUnit> fallback_units(const Model& prepared, const StaticPlan& plan) {
  const Graph& g = prepared.graph;
  std::set<uint32_t> planned(plan.nodes.begin(), plan.nodes.end());
  std::set<uint32_t> grouped;  // activations merged into their producer's unit
  std::vector<FallbackUnit> units;
  for (uint32_t ni : plan.nodes) {
    if (grouped.count(ni)) continue;
    const Node& n = g.nodes[ni];
    FallbackUnit u;
    u.label = n.label();
    u.op_type = n.op_type;
    u.nodes = {ni};
    u.output = g.value(n.outputs[0]).name;
    const bool producer = n.op_type == "Conv" || n.op_type == "Gemm" || n.op_type == "MatMul" || n.op_type == "Add";
    const Value& out = g.value(n.outputs[0]);
    if (producer && out.consumers.size() == 1 && !g.is_graph_output(n.outputs[0])) {
      uint32_t ci = out.consumers[0];
      const Node& c = g.nodes[ci];
      if (planned.count(ci) && (c.op_type == "Relu" || c.op_type == "Clip")) {
        grouped.insert(ci);
        u.nodes.push_back(ci);
        u.label += " + " + c.label();
        u.output = g.value(c.outputs[0]).name;
      }
    }
    units.push_back(std::move(u));
  }
  return units;
}

StaticPlan plan_without(const StaticPlan& plan, const std::vector<const FallbackUnit*>& fp32) {
  std::set<uint32_t> drop;
  for (const FallbackUnit* u : fp32) drop.insert(u->nodes.begin(), u->nodes.end());
  StaticPlan p = plan;
  p.nodes.clear();
  for (uint32_t ni : plan.nodes)
    if (!drop.count(ni)) p.nodes.push_back(ni);
  return p;
}

json LayerSensitivity::to_json() const {
  return json{{"layer", unit},
              {"op_type", op_type},
              {"output", output},
              {"rank", rank},
              {"output_sqnr_db", finite_or_null(output_sqnr_db)},
              {"output_rel_mse", output_rel_mse},
              {"logits_rel_mse", logits_rel_mse},
              {"top1_flips", flips},
              {"samples", samples}};
}

Result<std::vector<LayerSensitivity>> measure_sensitivity(const Model& prepared, const StaticPlan& plan,
                                                          const std::vector<FallbackUnit>& units,
                                                          const std::map<std::string, StreamingHistogram>& stats,
                                                          const QuantizeOptions& o,
                                                          const std::vector<std::vector<Tensor>>& batches,
                                                          const std::function<void(size_t)>& progress) {
  if (batches.empty()) return invalid_argument("sensitivity analysis needs at least one evaluation batch");
  SessionOptions so;
  so.optimize = false;  // keep every tensor under its own name for the observer
  so.num_threads = o.num_threads;
  // fp32 reference: model outputs and a subsample of every unit's output, per batch.
  std::map<std::string, size_t> unit_of_output;
  for (size_t u = 0; u < units.size(); ++u) unit_of_output[units[u].output] = u;
  std::vector<std::vector<std::vector<float>>> ref_out(units.size(), std::vector<std::vector<float>>(batches.size()));
  std::vector<Tensor> ref_logits;
  {
    ASSIGN_OR_RETURN(auto session, Session::create(prepared, so));
    for (size_t b = 0; b < batches.size(); ++b) {
      RunStats rs;
      rs.observer = [&](const Value& v, const Tensor& t, Layout) {
        auto it = unit_of_output.find(v.name);
        if (it != unit_of_output.end() && t.dtype() == DataType::kFloat32) ref_out[it->second][b] = subsample(t);
      };
      auto r = session->run(batches[b], &rs);
      if (!r.is_ok()) return r.status().with_context("sensitivity: fp32 batch " + std::to_string(b + 1));
      Tensor y = r.value()[0];
      ref_logits.push_back(y.dtype() == DataType::kFloat32 ? y.clone() : y.cast(DataType::kFloat32));
    }
  }

  std::vector<LayerSensitivity> out;
  for (size_t u = 0; u < units.size(); ++u) {
    const FallbackUnit& unit = units[u];
    StaticPlan alone = plan;
    alone.nodes = unit.nodes;
    Model m = prepared;
    auto wr = write_qdq(m, alone, stats, o);
    if (!wr.is_ok()) return wr.status().with_context("sensitivity: quantizing " + unit.label + " alone");
    ASSIGN_OR_RETURN(auto session, Session::create(m, so));
    LayerSensitivity s;
    s.unit = unit.label;
    s.op_type = unit.op_type;
    s.output = unit.output;
    double sig = 0, err = 0, lsig = 0, lerr = 0;
    for (size_t b = 0; b < batches.size(); ++b) {
      std::vector<float> got;
      RunStats rs;
      rs.observer = [&](const Value& v, const Tensor& t, Layout) {
        if (v.name == unit.output && t.dtype() == DataType::kFloat32) got = subsample(t);
      };
      auto r = session->run(batches[b], &rs);
      if (!r.is_ok()) return r.status().with_context("sensitivity: " + unit.label + " batch " + std::to_string(b + 1));
      const std::vector<float>& ref = ref_out[u][b];
      if (got.size() == ref.size())
        for (size_t i = 0; i < ref.size(); ++i) {
          double d = static_cast<double>(got[i]) - ref[i];
          sig += static_cast<double>(ref[i]) * ref[i];
          err += d * d;
        }
      Tensor y = r.value()[0];
      if (y.dtype() != DataType::kFloat32) y = y.cast(DataType::kFloat32);
      const Tensor& yr = ref_logits[b];
      if (y.numel() != yr.numel()) return internal_error("sensitivity: output size changed when quantizing " + unit.label);
      const float* q = y.data<float>();
      const float* f = yr.data<float>();
      for (int64_t i = 0; i < y.numel(); ++i) {
        double d = static_cast<double>(q[i]) - f[i];
        lsig += static_cast<double>(f[i]) * f[i];
        lerr += d * d;
      }
      if (yr.rank() >= 2 && yr.dim(0) > 0) {
        const int64_t rows = yr.dim(0), k = yr.numel() / rows;
        for (int64_t i = 0; i < rows; ++i) s.flips += argmax_row(q + i * k, k) != argmax_row(f + i * k, k);
        s.samples += rows;
      } else {
        s.samples += 1;
      }
    }
    s.output_rel_mse = sig > 0 ? err / sig : (err > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    s.output_sqnr_db = err > 0 ? 10 * std::log10(sig / err) : std::numeric_limits<double>::infinity();
    s.logits_rel_mse = lsig > 0 ? lerr / lsig : (lerr > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    out.push_back(std::move(s));
    if (progress) progress(u + 1);
  }
  return out;
}

json MixedPrecisionResult::to_json() const {
  json sens = json::array();
  for (const auto& s : sensitivity) sens.push_back(s.to_json());
  json steps_j = json::array();
  for (const auto& s : steps)
    steps_j.push_back(json{{"step", s.step},
                           {"fallback", s.fallback.empty() ? json(nullptr) : json(s.fallback)},
                           {"quantized_layers", s.quantized_units},
                           {"metric", s.metric},
                           {"drop", s.drop},
                           {"within_budget", s.within_budget},
                           {"details", s.details}});
  return json{{"within_budget", within_budget},
              {"sensitivity_measured", sensitivity_measured},
              {"fp32_layers", fp32_units},
              {"steps", steps_j},
              {"sensitivity", sens}};
}

Result<MixedPrecisionResult> search_mixed_precision(const Model& prepared, const StaticPlan& plan,
                                                    const std::map<std::string, StreamingHistogram>& stats,
                                                    const QuantizeOptions& o, const MixedPrecisionOptions& mo,
                                                    const CandidateEvaluator& evaluate) {
  auto log = [&](const std::string& s) {
    if (mo.log) mo.log(s);
  };
  const std::vector<FallbackUnit> units = fallback_units(prepared, plan);
  MixedPrecisionResult res;
  std::vector<const FallbackUnit*> fp32;

  // Writes and evaluates the candidate with the current fp32 set; true when within budget.
  auto try_candidate = [&](const std::string& fallback) -> Result<bool> {
    Model m = prepared;
    StaticPlan p = plan_without(plan, fp32);
    ASSIGN_OR_RETURN(json rep, write_qdq(m, p, stats, o));
    if (mo.fp16_fallback_weights && !fp32.empty()) {
      std::vector<std::string> names;
      for (const FallbackUnit* u : fp32)
        for (uint32_t ni : u->nodes) names.push_back(prepared.graph.nodes[ni].name);
      ASSIGN_OR_RETURN(int converted, store_weights_fp16(m, names));
      rep["fallback_weights"] = {{"dtype", "float16"}, {"converted", converted}};
      rep["size_after_bytes"] = initializer_bytes(m.graph);
    }
    MixedPrecisionStep st;
    st.step = static_cast<int>(res.steps.size());
    st.fallback = fallback;
    st.quantized_units = static_cast<int>(units.size() - fp32.size());
    std::string what = fallback.empty() ? "int8" : "int8, " + std::to_string(fp32.size()) + " layer(s) fp32";
    ASSIGN_OR_RETURN(EvalOutcome ev, evaluate(m, what));
    st.metric = ev.metric;
    st.drop = mo.reference_metric - ev.metric;
    st.within_budget = mo.within_budget(mo.reference_metric, ev.metric);
    std::string agree;
    if (mo.min_agreement > 0) {
      st.within_budget = st.within_budget && ev.agreement >= mo.min_agreement;
      char b[96];
      std::snprintf(b, sizeof(b), ", agreement %.4f (min %.4f)", ev.agreement, mo.min_agreement);
      agree = b;
    }
    st.details = ev.details;
    char line[640];
    std::snprintf(line, sizeof(line), "step %d: %s%s: metric %.4f (fp32 %.4f, drop %+.4f)%s %s", st.step,
                  fallback.empty() ? "all layers int8" : "fp32 fallback of ", fallback.c_str(), ev.metric,
                  mo.reference_metric, st.drop, agree.c_str(), st.within_budget ? "within budget" : "over budget");
    log(line);
    res.steps.push_back(st);
    if (st.within_budget) {
      res.model = std::move(m);
      res.qdq_report = std::move(rep);
    }
    return st.within_budget;
  };

  ASSIGN_OR_RETURN(bool ok, try_candidate(""));
  if (ok) {
    res.within_budget = true;
    return res;
  }

  log("measuring the sensitivity of " + std::to_string(units.size()) + " quantized layers (each quantized alone, " +
      std::to_string(mo.sensitivity_batches.size()) + " batch(es))");
  ASSIGN_OR_RETURN(std::vector<LayerSensitivity> sens,
                   measure_sensitivity(prepared, plan, units, stats, o, mo.sensitivity_batches, [&](size_t done) {
                     if (mo.progress) mo.progress(done, units.size());
                   }));
  std::vector<size_t> order(units.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const LayerSensitivity &x = sens[a], &y = sens[b];
    if (x.logits_rel_mse != y.logits_rel_mse) return x.logits_rel_mse > y.logits_rel_mse;
    if (x.flips != y.flips) return x.flips > y.flips;
    return x.output_sqnr_db < y.output_sqnr_db;
  });
  res.sensitivity_measured = true;
  for (size_t r = 0; r < order.size(); ++r) {
    sens[order[r]].rank = static_cast<int>(r + 1);
    res.sensitivity.push_back(sens[order[r]]);
  }
  const size_t show = std::min<size_t>(order.size(), 5);
  for (size_t r = 0; r < show; ++r) {
    const LayerSensitivity& s = res.sensitivity[r];
    char line[512];
    std::snprintf(line, sizeof(line), "  #%zu %s: logits rel. MSE %.3g, %lld/%lld top-1 flips, output SQNR %s", r + 1,
                  s.unit.c_str(), s.logits_rel_mse, static_cast<long long>(s.flips),
                  static_cast<long long>(s.samples), fmt_sqnr(s.output_sqnr_db).c_str());
    log(line);
  }

  for (size_t r = 0; r < order.size(); ++r) {
    const FallbackUnit& u = units[order[r]];
    if (fp32.size() + 1 == units.size()) {
      log("the budget is only met with every layer in fp32: no useful int8 model");
      fp32.push_back(&u);
      break;
    }
    fp32.push_back(&u);
    res.fp32_units.push_back(u.label);
    ASSIGN_OR_RETURN(bool within, try_candidate(u.label));
    if (within) {
      res.within_budget = true;
      return res;
    }
  }
  res.within_budget = false;
  return res;
}

}  // namespace medq
