#include "ops/kernel.h"

#include <algorithm>
#include <mutex>

namespace medq {

void KernelRegistry::add(const std::string& domain, const std::string& op_type, const std::string& backend,
                         int priority, KernelFactory f) {
  auto& v = entries_[domain + ":" + op_type];
  v.push_back({backend, priority, std::move(f)});
  std::stable_sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.priority > b.priority; });
}

bool KernelRegistry::has_op(const std::string& domain, const std::string& op_type) const {
  return entries_.count(domain + ":" + op_type) > 0;
}

Result<std::unique_ptr<Kernel>> KernelRegistry::create(const KernelCreateInfo& info,
                                                       const std::vector<std::string>& allowed) const {
  const Node& n = info.node;
  auto it = entries_.find(n.domain + ":" + n.op_type);
  if (it == entries_.end())
    return unsupported("op " + n.op_type + (n.domain.empty() ? "" : " (domain " + n.domain + ")") +
                       " is not supported (node '" + n.name + "')");
  Status last = unsupported(n.label() + ": no kernel supports this configuration");
  for (const auto& e : it->second) {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), e.backend) == allowed.end()) continue;
    auto r = e.factory(info);
    if (r.is_ok()) return r;
    last = r.status();
    if (last.code() != StatusCode::kUnsupported) return last;
  }
  return last;
}

std::vector<std::string> KernelRegistry::op_types() const {
  std::vector<std::string> r;
  for (const auto& [k, v] : entries_) r.push_back(k);
  return r;
}

const KernelRegistry& KernelRegistry::global() {
  static KernelRegistry* reg = [] {
    auto* r = new KernelRegistry();
    register_all_ops(*r);
    return r;
  }();
  return *reg;
}

Result<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1) out[i] = da;
    else if (da == 1) out[i] = db;
    else return invalid_argument("shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast");
  }
  return out;
}

Result<int> normalize_axis(int64_t axis, int rank, const Node& node) {
  if (axis < -rank || axis >= std::max(rank, 1))
    return invalid_argument(node.label() + ": axis " + std::to_string(axis) + " out of range for rank " +
                            std::to_string(rank));
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

}  // namespace medq
