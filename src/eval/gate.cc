#include "eval/gate.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/fileio.h"

namespace medq::eval {

using nlohmann::json;

namespace {

std::string fmt(double v) {
  char b[64];
  std::snprintf(b, sizeof(b), "%.6g", v);
  return b;
}

bool compare(double a, const std::string& op, double b) {
  if (op == ">=") return a >= b;
  if (op == ">") return a > b;
  if (op == "<=") return a <= b;
  if (op == "<") return a < b;
  if (op == "==") return a == b;
  return false;
}

bool valid_op(const std::string& op) { return op == ">=" || op == ">" || op == "<=" || op == "<" || op == "=="; }

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

const json* lookup_rec(const json& j, const std::string& path) {
  if (path.empty()) return &j;
  if (j.is_object()) {
    // Keys may contain dots: try every key that is a prefix of the path at a dot boundary.
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& k = it.key();
      if (path == k) return &it.value();
      if (path.size() > k.size() && path.compare(0, k.size(), k) == 0 && path[k.size()] == '.') {
        const json* r = lookup_rec(it.value(), path.substr(k.size() + 1));
        if (r) return r;
      }
    }
    return nullptr;
  }
  if (j.is_array()) {
    size_t dot = path.find('.');
    std::string head = path.substr(0, dot);
    if (head.empty() || head.find_first_not_of("0123456789") != std::string::npos) return nullptr;
    size_t i = std::stoul(head);
    if (i >= j.size()) return nullptr;
    return lookup_rec(j[i], dot == std::string::npos ? "" : path.substr(dot + 1));
  }
  return nullptr;
}

Result<double> as_number(const json& v, const std::string& what) {
  if (v.is_number()) return v.get<double>();
  return invalid_argument(what + ": expected a number, got " + v.dump());
}

const char* const kGapNames[] = {"auroc", "sensitivity", "fpr", "equalized_odds", "accuracy"};

// A subgroup-gap limit: a number (applied to `defaults`) or a map gap name -> number.
Status parse_gap_limits(const json& v, const std::string& what, const std::vector<std::string>& defaults,
                        std::map<std::string, double>* out) {
  out->clear();
  if (v.is_number()) {
    for (const std::string& g : defaults) (*out)[g] = v.get<double>();
    return Status::ok();
  }
  if (!v.is_object())
    return invalid_argument(what + ": expected a number or a map of gap name -> number, got " + v.dump());
  for (auto it = v.begin(); it != v.end(); ++it) {
    bool known = false;
    for (const char* g : kGapNames) known = known || it.key() == g;
    if (!known)
      return invalid_argument(what + "." + it.key() +
                              ": unknown subgroup gap (known: auroc, sensitivity, fpr, equalized_odds, accuracy)");
    ASSIGN_OR_RETURN(double x, as_number(it.value(), what + "." + it.key()));
    (*out)[it.key()] = x;
  }
  return Status::ok();
}

}  // namespace

const json* lookup_metric(const json& report, const std::string& path) { return lookup_rec(report, path); }

GatePolicy default_policy() {
  GatePolicy p;
  p.rules.push_back({"paired.accuracy_drop", "<=", 0.01, "max"});
  p.rules.push_back({"batch_robustness.candidate.prediction_mismatches", "<=", 0, "max"});
  p.auroc_margin = 0.02;
  for (const char* g : {"auroc", "sensitivity", "fpr", "equalized_odds"}) p.max_gap_increase[g] = 0.02;
  p.min_subgroup_size = 30;
  p.source = {{"max", {{"paired.accuracy_drop", 0.01}, {"batch_robustness.candidate.prediction_mismatches", 0}}},
              {"auroc_noninferiority_margin", 0.02},
              {"max_subgroup_gap_increase", 0.02},
              {"min_subgroup_size", 30},
              {"default", true}};
  return p;
}

Result<json> parse_simple_yaml(const std::string& text, const std::string& name) {
  json root = json::object();
  // Stack of (indent, object pointer).
  std::vector<std::pair<int, json*>> stack{{-1, &root}};
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  std::string pending_key;
  int pending_indent = -1;
  json* pending_parent = nullptr;
  while (std::getline(in, line)) {
    ++lineno;
    // Strip comments (a '#' outside quotes).
    bool q1 = false, q2 = false;
    for (size_t i = 0; i < line.size(); ++i) {
      char c = line[i];
      if (c == '\'' && !q2) q1 = !q1;
      if (c == '"' && !q1) q2 = !q2;
      if (c == '#' && !q1 && !q2 && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line = line.substr(0, i);
        break;
      }
    }
    if (trim(line).empty()) continue;
    if (line.find('\t') != std::string::npos && line.find_first_not_of(" \t") > line.find('\t'))
      return invalid_argument(name + ":" + std::to_string(lineno) + ": tabs are not allowed for indentation");
    int indent = static_cast<int>(line.find_first_not_of(' '));
    std::string body = trim(line);
    if (body == "---") continue;
    if (body[0] == '-')
      return invalid_argument(name + ":" + std::to_string(lineno) +
                              ": YAML lists are not supported by the simple YAML reader; use 'min:'/'max:' maps or a JSON policy");
    size_t colon = std::string::npos;
    {
      bool a = false, b = false;
      for (size_t i = 0; i < body.size(); ++i) {
        if (body[i] == '\'' && !b) a = !a;
        if (body[i] == '"' && !a) b = !b;
        if (body[i] == ':' && !a && !b && (i + 1 == body.size() || body[i + 1] == ' ')) {
          colon = i;
          break;
        }
      }
    }
    if (colon == std::string::npos)
      return invalid_argument(name + ":" + std::to_string(lineno) + ": expected 'key: value'");
    std::string key = trim(body.substr(0, colon));
    if (key.size() >= 2 && (key[0] == '"' || key[0] == '\'') && key.back() == key[0]) key = key.substr(1, key.size() - 2);
    std::string val = trim(body.substr(colon + 1));
    if (pending_parent) {
      // The previous key opened a nested map if this line is more indented.
      if (indent > pending_indent) {
        (*pending_parent)[pending_key] = json::object();
        stack.push_back({pending_indent, &(*pending_parent)[pending_key]});
      } else {
        (*pending_parent)[pending_key] = nullptr;
      }
      pending_parent = nullptr;
    }
    while (stack.size() > 1 && indent <= stack.back().first) stack.pop_back();
    json* parent = stack.back().second;
    if (val.empty()) {
      pending_key = key;
      pending_indent = indent;
      pending_parent = parent;
      continue;
    }
    json v;
    if (val.size() >= 2 && (val[0] == '"' || val[0] == '\'') && val.back() == val[0]) {
      v = val.substr(1, val.size() - 2);
    } else if (val == "true" || val == "True" || val == "yes") {
      v = true;
    } else if (val == "false" || val == "False" || val == "no") {
      v = false;
    } else if (val == "null" || val == "~") {
      v = nullptr;
    } else {
      char* end = nullptr;
      double d = std::strtod(val.c_str(), &end);
      if (end && *end == 0 && !val.empty()) {
        if (val.find_first_of(".eE") == std::string::npos && std::fabs(d) < 9e15)
          v = static_cast<int64_t>(d);
        else
          v = d;
      } else {
        v = val;
      }
    }
    (*parent)[key] = v;
  }
  if (pending_parent) (*pending_parent)[pending_key] = nullptr;
  return root;
}

Result<GatePolicy> parse_policy_text(const std::string& text, const std::string& name) {
  json j;
  std::string t = trim(text);
  if (!t.empty() && t[0] == '{') {
    j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return invalid_argument(name + ": malformed JSON policy");
  } else {
    ASSIGN_OR_RETURN(j, parse_simple_yaml(text, name));
  }
  if (!j.is_object()) return invalid_argument(name + ": a policy must be an object");
  GatePolicy p;
  p.source = j;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "min" || k == "max") {
      if (!v.is_object()) return invalid_argument(name + ": '" + k + "' must map metric names to numbers");
      for (auto r = v.begin(); r != v.end(); ++r) {
        ASSIGN_OR_RETURN(double x, as_number(r.value(), name + ": " + k + "." + r.key()));
        p.rules.push_back({r.key(), k == "min" ? ">=" : "<=", x, k});
      }
    } else if (k == "rules") {
      if (!v.is_array()) return invalid_argument(name + ": 'rules' must be a list");
      for (const json& r : v) {
        if (!r.is_object() || !r.contains("metric") || !r["metric"].is_string())
          return invalid_argument(name + ": each rule needs a \"metric\" name: " + r.dump());
        GateRule g;
        g.metric = r["metric"];
        g.source = "rules";
        if (r.contains("op")) {
          if (!r["op"].is_string() || !valid_op(r["op"])) return invalid_argument(name + ": bad op in rule " + r.dump());
          g.op = r["op"];
          if (!r.contains("value")) return invalid_argument(name + ": rule without \"value\": " + r.dump());
          ASSIGN_OR_RETURN(g.value, as_number(r["value"], name + ": rule " + g.metric));
        } else {
          bool found = false;
          for (const char* op : {">=", ">", "<=", "<", "=="})
            if (r.contains(op)) {
              g.op = op;
              ASSIGN_OR_RETURN(g.value, as_number(r[op], name + ": rule " + g.metric));
              found = true;
            }
          if (!found) return invalid_argument(name + ": rule without a comparison (op/value or \">=\": x): " + r.dump());
        }
        p.rules.push_back(g);
      }
    } else if (k == "auroc_noninferiority_margin") {
      ASSIGN_OR_RETURN(p.auroc_margin, as_number(v, name + ": " + k));
      if (p.auroc_margin < 0) return invalid_argument(name + ": " + k + " must be >= 0");
    } else if (k == "max_subgroup_gap_increase") {
      RETURN_IF_ERROR(parse_gap_limits(v, name + ": " + k, {"auroc", "sensitivity", "fpr", "equalized_odds"},
                                       &p.max_gap_increase));
    } else if (k == "max_subgroup_gap") {
      RETURN_IF_ERROR(parse_gap_limits(v, name + ": " + k, {"auroc"}, &p.max_gap));
    } else if (k == "min_subgroup_size") {
      ASSIGN_OR_RETURN(double x, as_number(v, name + ": " + k));
      if (x < 0) return invalid_argument(name + ": min_subgroup_size must be >= 0");
      p.min_subgroup_size = static_cast<int64_t>(x);
    } else if (k == "name" || k == "description" || k == "default") {
      // informational
    } else {
      return invalid_argument(name + ": unknown policy key '" + k +
                              "' (known: min, max, rules, auroc_noninferiority_margin, max_subgroup_gap_increase, "
                              "max_subgroup_gap, min_subgroup_size, name, description)");
    }
  }
  return p;
}

Result<GatePolicy> load_policy(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, read_file(path));
  return parse_policy_text(text, path);
}

json GateResult::to_json() const {
  json r = json::array();
  for (const GateOutcome& o : outcomes) {
    json e = {{"metric", o.rule.metric}, {"op", o.rule.op}, {"threshold", o.rule.value}, {"source", o.rule.source},
              {"passed", o.passed}, {"message", o.message}};
    e["actual"] = o.missing || std::isnan(o.actual) ? json(nullptr) : json(o.actual);
    r.push_back(e);
  }
  return {{"verdict", approved ? "APPROVED" : "REJECTED"}, {"rules", r}};
}

GateResult apply_gate(const GatePolicy& policy, const json& report) {
  GateResult res;
  auto check = [&](const GateRule& rule, bool skip_if_null) {
    GateOutcome o;
    o.rule = rule;
    const json* v = lookup_metric(report, rule.metric);
    if (!v || !v->is_number()) {
      if (skip_if_null && v && v->is_null()) {
        o.passed = true;
        o.missing = true;
        o.message = rule.metric + " is not computable (too few eligible subgroups): not gated";
        res.outcomes.push_back(o);
        return;
      }
      o.passed = false;
      o.missing = true;
      o.message = rule.metric + (v ? " is undefined (null) in this report" : " is not a reported metric");
    } else {
      o.actual = v->get<double>();
      o.passed = compare(o.actual, rule.op, rule.value);
      o.message = rule.metric + " = " + fmt(o.actual) + " (required " + rule.op + " " + fmt(rule.value) + ")";
    }
    res.approved = res.approved && o.passed;
    res.outcomes.push_back(o);
  };
  for (const GateRule& r : policy.rules) check(r, false);
  if (!std::isnan(policy.auroc_margin)) {
    bool binary = lookup_metric(report, "paired.binary_auroc.ci_lo") != nullptr;
    std::string which = binary ? "paired.binary_auroc.ci_lo" : "paired.macro_auroc.ci_lo";
    check({which, ">", -policy.auroc_margin, "auroc_noninferiority_margin"}, false);
  }
  if (report.contains("subgroups") && report["subgroups"].is_object()) {
    for (auto it = report["subgroups"].begin(); it != report["subgroups"].end(); ++it) {
      for (const auto& [m, x] : policy.max_gap_increase)
        check({"subgroups." + it.key() + ".gaps.increase." + m, "<=", x, "max_subgroup_gap_increase"}, true);
      for (const auto& [m, x] : policy.max_gap)
        check({"subgroups." + it.key() + ".gaps.candidate." + m, "<=", x, "max_subgroup_gap"}, true);
    }
  }
  return res;
}

}  // namespace medq::eval
