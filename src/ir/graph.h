// Graph IR: vectors of Node and Value addressed by u32 ids. A Value knows its
// producer node and consumer nodes; constant values carry their Tensor
// (initializers). Passes mark nodes dead and rewire inputs, then call
// finalize() which drops dead nodes, re-links values and re-sorts topologically.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace medq {

constexpr uint32_t kNoValue = UINT32_MAX;
constexpr uint32_t kNoNode = UINT32_MAX;

struct Attribute {
  enum class Type { kUndefined = 0, kFloat = 1, kInt = 2, kString = 3, kTensor = 4, kGraph = 5, kFloats = 6, kInts = 7, kStrings = 8 };
  std::string name;
  Type type = Type::kUndefined;
  float f = 0;
  int64_t i = 0;
  std::string s;                   // also holds a serialized GraphProto for kGraph
  Tensor t;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::string doc_string;

  static Attribute make_int(std::string n, int64_t v);
  static Attribute make_float(std::string n, float v);
  static Attribute make_string(std::string n, std::string v);
  static Attribute make_ints(std::string n, std::vector<int64_t> v);
  static Attribute make_floats(std::string n, std::vector<float> v);
};

struct Value {
  std::string name;
  DataType dtype = DataType::kUndefined;
  bool has_shape = false;
  Shape shape;                          // -1 where the dim is unknown/symbolic
  std::vector<std::string> dim_params;  // symbolic names (parallel to shape, "" if none)
  uint32_t producer = kNoNode;
  std::vector<uint32_t> consumers;      // node ids, one entry per use
  Tensor initializer;                   // defined() for constants
  std::string doc_string;
  bool is_constant() const { return initializer.defined(); }
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" == ai.onnx
  std::vector<uint32_t> inputs;   // kNoValue for an omitted optional input
  std::vector<uint32_t> outputs;  // kNoValue for an omitted optional output
  std::vector<Attribute> attrs;
  std::string doc_string;
  bool dead = false;

  const Attribute* attr(const std::string& n) const;
  Attribute* attr(const std::string& n);
  bool has_attr(const std::string& n) const { return attr(n) != nullptr; }
  int64_t attr_i(const std::string& n, int64_t def) const;
  float attr_f(const std::string& n, float def) const;
  std::string attr_s(const std::string& n, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& n, std::vector<int64_t> def = {}) const;
  std::vector<float> attr_floats(const std::string& n, std::vector<float> def = {}) const;
  void set_attr(Attribute a);
  void remove_attr(const std::string& n);
  // "Conv 'conv1'" for error messages.
  std::string label() const;
  size_t num_inputs() const { return inputs.size(); }
  bool has_input(size_t i) const { return i < inputs.size() && inputs[i] != kNoValue; }
};

class Graph {
 public:
  std::string name;
  std::string doc_string;
  std::vector<Node> nodes;
  std::vector<Value> values;
  std::vector<uint32_t> inputs;   // graph inputs (non-initializer)
  std::vector<uint32_t> outputs;

  uint32_t add_value(const std::string& name);
  uint32_t add_constant(const std::string& name, Tensor t);
  // Finds a value by name, kNoValue if absent.
  uint32_t find_value(const std::string& name) const;
  uint32_t add_node(Node n);
  std::string unique_name(const std::string& base);
  // `base` itself when no value has that name yet, else unique_name(base).
  std::string fresh_name(const std::string& base);

  Value& value(uint32_t id) { return values[id]; }
  const Value& value(uint32_t id) const { return values[id]; }
  bool is_graph_output(uint32_t vid) const;
  bool is_graph_input(uint32_t vid) const;
  // Redirects every use of `from` (node inputs and graph outputs) to `to`.
  void replace_all_uses(uint32_t from, uint32_t to);

  // Drops dead nodes, recomputes producer/consumers and sorts nodes topologically.
  Status finalize();
  // Checks topological order, single producers, dangling references.
  Status verify() const;

 private:
  std::map<std::string, uint32_t> name_to_value_;
  int64_t name_counter_ = 0;
};

struct Model {
  Graph graph;
  int64_t ir_version = 8;
  std::vector<std::pair<std::string, int64_t>> opset_imports;  // (domain, version)
  std::string producer_name, producer_version, domain, doc_string;
  int64_t model_version = 0;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string source_path;

  int64_t opset(const std::string& domain = "") const;
  std::string meta(const std::string& key, const std::string& def = "") const;
  void set_meta(const std::string& key, const std::string& value);
};

}  // namespace medq
