#include "ir/graph.h"

#include <algorithm>
#include <queue>
#include <set>

namespace medq {

Attribute Attribute::make_int(std::string n, int64_t v) {
  Attribute a; a.name = std::move(n); a.type = Type::kInt; a.i = v; return a;
}
Attribute Attribute::make_float(std::string n, float v) {
  Attribute a; a.name = std::move(n); a.type = Type::kFloat; a.f = v; return a;
}
Attribute Attribute::make_string(std::string n, std::string v) {
  Attribute a; a.name = std::move(n); a.type = Type::kString; a.s = std::move(v); return a;
}
Attribute Attribute::make_ints(std::string n, std::vector<int64_t> v) {
  Attribute a; a.name = std::move(n); a.type = Type::kInts; a.ints = std::move(v); return a;
}
Attribute Attribute::make_floats(std::string n, std::vector<float> v) {
  Attribute a; a.name = std::move(n); a.type = Type::kFloats; a.floats = std::move(v); return a;
}

const Attribute* Node::attr(const std::string& n) const {
  for (const auto& a : attrs) if (a.name == n) return &a;
  return nullptr;
}
Attribute* Node::attr(const std::string& n) {
  for (auto& a : attrs) if (a.name == n) return &a;
  return nullptr;
}
int64_t Node::attr_i(const std::string& n, int64_t def) const {
  const Attribute* a = attr(n);
  return a ? a->i : def;
}
float Node::attr_f(const std::string& n, float def) const {
  const Attribute* a = attr(n);
  return a ? a->f : def;
}
std::string Node::attr_s(const std::string& n, const std::string& def) const {
  const Attribute* a = attr(n);
  return a ? a->s : def;
}
std::vector<int64_t> Node::attr_ints(const std::string& n, std::vector<int64_t> def) const {
  const Attribute* a = attr(n);
  return a ? a->ints : def;
}
std::vector<float> Node::attr_floats(const std::string& n, std::vector<float> def) const {
  const Attribute* a = attr(n);
  return a ? a->floats : def;
}
void Node::set_attr(Attribute a) {
  for (auto& x : attrs) if (x.name == a.name) { x = std::move(a); return; }
  attrs.push_back(std::move(a));
}
void Node::remove_attr(const std::string& n) {
  attrs.erase(std::remove_if(attrs.begin(), attrs.end(), [&](const Attribute& a) { return a.name == n; }), attrs.end());
}
std::string Node::label() const {
  return op_type + " '" + name + "'";
}

uint32_t Graph::add_value(const std::string& n) {
  uint32_t id = static_cast<uint32_t>(values.size());
  Value v;
  v.name = n.empty() ? unique_name("v") : n;
  name_to_value_[v.name] = id;
  values.push_back(std::move(v));
  return id;
}

uint32_t Graph::add_constant(const std::string& n, Tensor t) {
  uint32_t id = add_value(n);
  values[id].dtype = t.dtype();
  values[id].has_shape = true;
  values[id].shape = t.shape();
  values[id].initializer = std::move(t);
  return id;
}

uint32_t Graph::find_value(const std::string& n) const {
  auto it = name_to_value_.find(n);
  return it == name_to_value_.end() ? kNoValue : it->second;
}

uint32_t Graph::add_node(Node n) {
  uint32_t id = static_cast<uint32_t>(nodes.size());
  nodes.push_back(std::move(n));
  return id;
}

std::string Graph::unique_name(const std::string& base) {
  for (;;) {
    std::string n = base + "__" + std::to_string(name_counter_++);
    if (!name_to_value_.count(n)) return n;
  }
}

std::string Graph::fresh_name(const std::string& base) {
  return find_value(base) == kNoValue ? base : unique_name(base);
}

bool Graph::is_graph_output(uint32_t vid) const {
  return std::find(outputs.begin(), outputs.end(), vid) != outputs.end();
}
bool Graph::is_graph_input(uint32_t vid) const {
  return std::find(inputs.begin(), inputs.end(), vid) != inputs.end();
}

void Graph::replace_all_uses(uint32_t from, uint32_t to) {
  for (auto& n : nodes) {
    if (n.dead) continue;
    for (auto& i : n.inputs) if (i == from) i = to;
  }
  for (auto& o : outputs) if (o == from) o = to;
}

Status Graph::finalize() {
  // Drop dead nodes.
  std::vector<Node> live;
  live.reserve(nodes.size());
  for (auto& n : nodes) if (!n.dead) live.push_back(std::move(n));
  // Producers by value.
  std::vector<int64_t> prod(values.size(), -1);
  for (size_t i = 0; i < live.size(); ++i)
    for (uint32_t o : live[i].outputs)
      if (o != kNoValue) {
        if (prod[o] != -1) return internal_error("value '" + values[o].name + "' has two producers");
        prod[o] = static_cast<int64_t>(i);
      }
  // Kahn topological sort, stable w.r.t. the current order.
  std::vector<int> indeg(live.size(), 0);
  std::vector<std::vector<size_t>> succ(live.size());
  for (size_t i = 0; i < live.size(); ++i)
    for (uint32_t in : live[i].inputs)
      if (in != kNoValue && prod[in] >= 0) {
        succ[prod[in]].push_back(i);
        ++indeg[i];
      }
  std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
  for (size_t i = 0; i < live.size(); ++i) if (indeg[i] == 0) ready.push(i);
  std::vector<size_t> order;
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t s : succ[i]) if (--indeg[s] == 0) ready.push(s);
  }
  if (order.size() != live.size()) return invalid_argument("graph '" + name + "' has a cycle");
  nodes.clear();
  for (size_t i : order) nodes.push_back(std::move(live[i]));
  for (auto& v : values) { v.producer = kNoNode; v.consumers.clear(); }
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    for (uint32_t in : nodes[i].inputs) if (in != kNoValue) values[in].consumers.push_back(i);
    for (uint32_t o : nodes[i].outputs) if (o != kNoValue) values[o].producer = i;
  }
  name_to_value_.clear();
  for (uint32_t i = 0; i < values.size(); ++i) name_to_value_[values[i].name] = i;
  return Status::ok();
}

Status Graph::verify() const {
  std::vector<bool> available(values.size(), false);
  for (uint32_t i : inputs) available[i] = true;
  for (uint32_t i = 0; i < values.size(); ++i) if (values[i].is_constant()) available[i] = true;
  for (const auto& n : nodes) {
    if (n.dead) return internal_error("dead node " + n.label() + " left in graph");
    for (uint32_t in : n.inputs) {
      if (in == kNoValue) continue;
      if (in >= values.size()) return internal_error(n.label() + ": input id out of range");
      if (!available[in])
        return invalid_argument(n.label() + ": input '" + values[in].name + "' is not produced before use");
    }
    for (uint32_t o : n.outputs) {
      if (o == kNoValue) continue;
      if (available[o]) return invalid_argument(n.label() + ": output '" + values[o].name + "' is defined twice");
      available[o] = true;
    }
  }
  for (uint32_t o : outputs)
    if (!available[o]) return invalid_argument("graph output '" + values[o].name + "' is never produced");
  return Status::ok();
}

int64_t Model::opset(const std::string& d) const {
  for (const auto& [dom, v] : opset_imports)
    if (dom == d || (d.empty() && dom == "ai.onnx")) return v;
  return 0;
}

std::string Model::meta(const std::string& key, const std::string& def) const {
  for (const auto& [k, v] : metadata) if (k == key) return v;
  return def;
}

void Model::set_meta(const std::string& key, const std::string& value) {
  for (auto& [k, v] : metadata) if (k == key) { v = value; return; }
  metadata.emplace_back(key, value);
}

}  // namespace medq
