// ONNX backend conformance: runs the test cases of Debian's libonnx-testdata
// (MEDQ_ONNX_TESTDATA/{node,simple,pytorch-operator,pytorch-converted}/test_*)
// through load_model + Session and compares with the reference outputs.
//
//  * OnnxBackend/Allowed.Case/<name>: one test per line of allowlist.txt; each
//    must pass. The allow-list only grows (tract node.txt style).
//  * OnnxBackendSummary.AllCases: runs every case, prints
//    "ONNX backend conformance: P/T passed (A allow-listed)" with a breakdown
//    of the failures, and fails if an allow-listed case fails.
//    MEDQ_WRITE_ALLOWLIST=<path> writes the passing set there (to regenerate
//    the allow-list), MEDQ_ONNX_VERBOSE=1 prints every failing case.
//
// Case names: "test_abs" for the node suite, "<suite>/test_x" for the others.
// Tolerance as in onnx.backend.test: |got - want| <= atol + rtol * |want| with
// rtol 1e-3 and atol 1e-7; NaN matches NaN; integers and bools are exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq {
namespace {

namespace fs = std::filesystem;

constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

const char* const kSuites[] = {"node", "simple", "pytorch-operator", "pytorch-converted"};

std::string data_root() {
  const char* env = std::getenv("MEDQ_ONNX_TESTDATA");
  return env && *env ? std::string(env) : std::string(MEDQ_ONNX_TESTDATA);
}

std::string allowlist_path() { return std::string(MEDQ_SOURCE_DIR) + "/tests/onnx_backend/allowlist.txt"; }

// Case name -> its directory.
std::string case_dir(const std::string& name) {
  auto slash = name.find('/');
  if (slash == std::string::npos) return data_root() + "/node/" + name;
  return data_root() + "/" + name;
}

std::vector<std::string> all_cases() {
  std::vector<std::string> r;
  for (const char* suite : kSuites) {
    fs::path dir = fs::path(data_root()) / suite;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::string n = e.path().filename().string();
      if (e.is_directory() && n.rfind("test_", 0) == 0 && fs::exists(e.path() / "model.onnx"))
        names.push_back(std::string(suite) == "node" ? n : std::string(suite) + "/" + n);
    }
    std::sort(names.begin(), names.end());
    r.insert(r.end(), names.begin(), names.end());
  }
  return r;
}

std::vector<std::string> read_allowlist() {
  std::vector<std::string> r;
  std::ifstream f(allowlist_path());
  std::string line;
  while (std::getline(f, line)) {
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    auto b = line.find_first_not_of(" \t\r");
    auto e = line.find_last_not_of(" \t\r");
    if (b == std::string::npos) continue;
    r.push_back(line.substr(b, e - b + 1));
  }
  return r;
}

enum class Outcome { kPass, kUnsupportedOpset, kUnsupportedOp, kLoadError, kInputError, kSessionError, kRunError, kWrongResult };

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kPass: return "pass";
    case Outcome::kUnsupportedOpset: return "unsupported opset";
    case Outcome::kUnsupportedOp: return "unsupported op";
    case Outcome::kLoadError: return "load error (model)";
    case Outcome::kInputError: return "load error (test data)";
    case Outcome::kSessionError: return "session create error";
    case Outcome::kRunError: return "run error";
    case Outcome::kWrongResult: return "wrong result";
  }
  return "?";
}

struct CaseResult {
  Outcome outcome = Outcome::kPass;
  std::string message;
  std::string ops;  // op types of the model's nodes ("Conv" or "Shape+Slice+...")
};

// Element i as double (any numeric dtype, half/bfloat16 included).
double elem(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DataType::kFloat32: return t.data<float>()[i];
    case DataType::kFloat64: return t.data<double>()[i];
    case DataType::kFloat16: return half_to_float(t.data<uint16_t>()[i]);
    case DataType::kBFloat16: return bf16_to_float(t.data<uint16_t>()[i]);
    default: return t.get_f64(i);
  }
}

bool is_float_type(DataType dt) {
  return dt == DataType::kFloat32 || dt == DataType::kFloat64 || dt == DataType::kFloat16 ||
         dt == DataType::kBFloat16;
}

// Compares one output; empty string when it matches.
std::string compare(const Tensor& got, const Tensor& want, size_t index, const std::string& name) {
  std::string what = "output " + std::to_string(index) + " '" + name + "'";
  if (got.dtype() != want.dtype())
    return what + ": dtype " + dtype_name(got.dtype()) + ", expected " + dtype_name(want.dtype());
  if (got.shape() != want.shape())
    return what + ": shape " + shape_str(got.shape()) + ", expected " + shape_str(want.shape());
  const int64_t n = want.numel();
  const bool fp = is_float_type(want.dtype());
  int64_t first_bad = -1, num_bad = 0, worst = -1;
  double max_diff = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool ok;
    double diff = 0;
    if (!fp) {
      if (want.dtype() == DataType::kUInt64 || want.dtype() == DataType::kInt64) {
        ok = got.get_i64(i) == want.get_i64(i);
        diff = ok ? 0 : std::fabs(static_cast<double>(got.get_i64(i)) - static_cast<double>(want.get_i64(i)));
      } else {
        double a = elem(got, i), b = elem(want, i);
        ok = a == b;
        diff = std::fabs(a - b);
      }
    } else {
      double a = elem(got, i), b = elem(want, i);
      if (std::isnan(b)) {
        ok = std::isnan(a);
        diff = ok ? 0 : INFINITY;
      } else if (std::isinf(b)) {
        ok = a == b;
        diff = ok ? 0 : INFINITY;
      } else {
        diff = std::fabs(a - b);
        ok = diff <= kAtol + kRtol * std::fabs(b);
        if (std::isnan(a)) diff = INFINITY;
      }
    }
    if (!ok) {
      ++num_bad;
      if (first_bad < 0) first_bad = i;
      if (worst < 0 || diff > max_diff) {
        max_diff = diff;
        worst = i;
      }
    }
  }
  if (num_bad == 0) return "";
  std::ostringstream os;
  os.precision(8);
  os << what << " " << want.desc() << ": " << num_bad << "/" << n << " elements differ; max abs diff " << max_diff
     << " at index " << worst << " (got " << elem(got, worst) << ", expected " << elem(want, worst)
     << "); first mismatch at index " << first_bad << " (got " << elem(got, first_bad) << ", expected "
     << elem(want, first_bad) << ")";
  return os.str();
}

std::vector<std::string> list_pb(const fs::path& dir, const std::string& prefix) {
  std::vector<std::pair<int, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0 && n.size() > prefix.size() + 3 && n.substr(n.size() - 3) == ".pb")
      found.emplace_back(std::atoi(n.c_str() + prefix.size()), e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> r;
  for (auto& f : found) r.push_back(f.second);
  return r;
}

// Guards load_tensor_pb against files that are not tensors (SequenceProto,
// OptionalProto, MapProto test data parse as a TensorProto with junk dims and
// medq's loader would try to allocate them): returns an error for those.
Status precheck_tensor_pb(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  onnx::TensorProto tp;
  if (!tp.ParseFromString(bytes)) return invalid_argument("'" + path + "' is not a TensorProto (sequence/map/optional data?)");
  DataType dt = static_cast<DataType>(tp.data_type());
  if (!dtype_supported(dt))
    return unsupported("'" + path + "': unsupported tensor dtype " + std::to_string(tp.data_type()) +
                       " (or not a TensorProto)");
  int64_t n = 1;
  for (int64_t d : tp.dims()) {
    if (d < 0 || (d > 0 && n > (int64_t{1} << 40) / d)) return invalid_argument("'" + path + "': bad dims (not a TensorProto?)");
    n *= d;
  }
  const int64_t bytes_needed = n * static_cast<int64_t>(dtype_size(dt));
  if (tp.data_location() != onnx::TensorProto_DataLocation_EXTERNAL &&
      bytes_needed > static_cast<int64_t>(bytes.size()) * 8)
    return invalid_argument("'" + path + "': dims need " + std::to_string(bytes_needed) + " bytes, file has " +
                            std::to_string(bytes.size()) + " (not a TensorProto?)");
  return Status::ok();
}

Result<Tensor> load_pb(const std::string& path) {
  RETURN_IF_ERROR(precheck_tensor_pb(path));
  return load_tensor_pb(path);
}

CaseResult run_case(const std::string& name) {
  CaseResult res;
  const fs::path dir = case_dir(name);
  auto model = load_model((dir / "model.onnx").string());
  if (!model.is_ok()) {
    res.outcome = model.status().code() == StatusCode::kUnsupported ? Outcome::kUnsupportedOp : Outcome::kLoadError;
    res.message = model.status().message();
    if (res.message.find("uses opset") != std::string::npos) res.outcome = Outcome::kUnsupportedOpset;
    // Op types straight from the proto, for the breakdown.
    onnx::ModelProto mp;
    auto bytes = read_file((dir / "model.onnx").string());
    if (bytes.is_ok() && mp.ParseFromString(bytes.value())) {
      std::set<std::string> seen;
      for (const auto& n : mp.graph().node())
        if (seen.insert(n.op_type()).second) res.ops += (res.ops.empty() ? "" : "+") + n.op_type();
      for (const auto& o : mp.opset_import())
        if (o.domain().empty() || o.domain() == "ai.onnx") res.ops += " @opset" + std::to_string(o.version());
    }
    return res;
  }
  {
    std::set<std::string> seen;
    for (const auto& n : model->graph.nodes) {
      std::string op = (n.domain.empty() || n.domain == "ai.onnx" ? "" : n.domain + "::") + n.op_type;
      if (seen.insert(op).second) res.ops += (res.ops.empty() ? "" : "+") + op;
    }
  }
  SessionOptions so;
  so.num_threads = 2;
  auto session = Session::create(model.value(), so);
  if (!session.is_ok()) {
    const Status& st = session.status();
    bool unsup = st.code() == StatusCode::kUnsupported;
    res.outcome = unsup ? Outcome::kUnsupportedOp : Outcome::kSessionError;
    res.message = st.message();
    return res;
  }
  const std::vector<std::string> out_names = session.value()->output_names();
  std::vector<fs::path> sets;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) {
    res.outcome = Outcome::kInputError;
    res.message = "no test_data_set_* folder";
    return res;
  }
  for (const auto& set : sets) {
    const std::string set_name = set.filename().string();
    std::vector<Tensor> inputs, expected;
    for (const auto& p : list_pb(set, "input_")) {
      auto t = load_pb(p);
      if (!t.is_ok()) {
        res.outcome = Outcome::kInputError;
        res.message = set_name + "/" + fs::path(p).filename().string() + ": " + t.status().message();
        return res;
      }
      inputs.push_back(std::move(t).value());
    }
    for (const auto& p : list_pb(set, "output_")) {
      auto t = load_pb(p);
      if (!t.is_ok()) {
        res.outcome = Outcome::kInputError;
        res.message = set_name + "/" + fs::path(p).filename().string() + ": " + t.status().message();
        return res;
      }
      expected.push_back(std::move(t).value());
    }
    // The suite stores bfloat16 test data as uint16 bit patterns (numpy has no
    // bfloat16), like onnx.backend.test does: re-tag them.
    for (size_t i = 0; i < inputs.size() && i < session.value()->graph().inputs.size(); ++i)
      if (inputs[i].dtype() == DataType::kUInt16 && session.value()->input_value(i).dtype == DataType::kBFloat16)
        inputs[i] = Tensor::wrap_shared(DataType::kBFloat16, inputs[i].shape(), inputs[i].raw(), inputs[i].storage());
    auto outs = session.value()->run(inputs);
    if (!outs.is_ok()) {
      const Status& st = outs.status();
      res.outcome = st.code() == StatusCode::kUnsupported ? Outcome::kUnsupportedOp : Outcome::kRunError;
      res.message = set_name + ": " + st.message();
      return res;
    }
    if (outs->size() != expected.size()) {
      res.outcome = Outcome::kWrongResult;
      res.message = set_name + ": " + std::to_string(outs->size()) + " outputs, expected " +
                    std::to_string(expected.size());
      return res;
    }
    for (size_t i = 0; i < expected.size(); ++i) {
      if (expected[i].dtype() == DataType::kUInt16 && (*outs)[i].dtype() == DataType::kBFloat16)
        expected[i] =
            Tensor::wrap_shared(DataType::kBFloat16, expected[i].shape(), expected[i].raw(), expected[i].storage());
      std::string diff = compare((*outs)[i], expected[i], i, i < out_names.size() ? out_names[i] : "?");
      if (!diff.empty()) {
        res.outcome = Outcome::kWrongResult;
        res.message = set_name + ": " + diff;
        return res;
      }
    }
  }
  return res;
}

bool have_data() {
  std::error_code ec;
  return fs::is_directory(fs::path(data_root()) / "node", ec);
}

// gtest parameter names allow [A-Za-z0-9_] only.
std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

class Allowed : public ::testing::TestWithParam<std::string> {};

TEST_P(Allowed, Case) {
  if (!have_data()) GTEST_SKIP() << "ONNX backend test data not found at " << data_root()
                                 << " (install Debian's libonnx-testdata or set MEDQ_ONNX_TESTDATA)";
  const std::string& name = GetParam();
  std::error_code ec;
  ASSERT_TRUE(fs::exists(fs::path(case_dir(name)) / "model.onnx", ec))
      << "allow-listed case '" << name << "' not found in " << data_root();
  CaseResult r = run_case(name);
  EXPECT_EQ(r.outcome, Outcome::kPass) << name << " [" << r.ops << "]: " << outcome_name(r.outcome) << ": "
                                       << r.message;
}

INSTANTIATE_TEST_SUITE_P(OnnxBackend, Allowed, ::testing::ValuesIn(read_allowlist()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Allowed);

// Grouping key of a failure: the missing op types for "unsupported op"
// (parsed from "unsupported ops: A (...); B (...)"), else the model's ops.
std::string group_key(const CaseResult& r) {
  const std::string tag = "unsupported ops: ";
  auto p = r.message.find(tag);
  if (r.outcome == Outcome::kUnsupportedOp && p != std::string::npos) {
    std::string key, rest = r.message.substr(p + tag.size());
    size_t i = 0;
    while (i < rest.size()) {
      size_t paren = rest.find(" (", i);
      if (paren == std::string::npos) break;
      key += (key.empty() ? "" : "+") + rest.substr(i, paren - i);
      size_t semi = rest.find("; ", paren);
      if (semi == std::string::npos) break;
      i = semi + 2;
    }
    if (!key.empty()) return key;
  }
  return r.ops.empty() ? "(no nodes)" : r.ops;
}

std::string first_line(const std::string& s, size_t max_len = 300) {
  std::string r = s.substr(0, s.find('\n'));
  if (r.size() > max_len) r = r.substr(0, max_len) + "...";
  return r;
}

TEST(OnnxBackendSummary, AllCases) {
  if (!have_data()) GTEST_SKIP() << "ONNX backend test data not found at " << data_root()
                                 << " (install Debian's libonnx-testdata or set MEDQ_ONNX_TESTDATA)";
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::string> cases = all_cases();
  const std::vector<std::string> allow = read_allowlist();
  const std::set<std::string> allowed(allow.begin(), allow.end());
  const bool verbose = std::getenv("MEDQ_ONNX_VERBOSE") && std::string(std::getenv("MEDQ_ONNX_VERBOSE")) != "0";

  std::vector<std::string> passing;
  std::map<Outcome, std::vector<std::pair<std::string, CaseResult>>> failures;
  std::vector<std::string> allowed_failures;
  for (const auto& name : cases) {
    CaseResult r = run_case(name);
    if (r.outcome == Outcome::kPass) {
      passing.push_back(name);
      continue;
    }
    if (allowed.count(name))
      allowed_failures.push_back(name + ": " + outcome_name(r.outcome) + ": " + first_line(r.message));
    failures[r.outcome].emplace_back(name, std::move(r));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ostringstream os;
  os << "ONNX backend conformance: " << passing.size() << "/" << cases.size() << " passed (" << allowed.size()
     << " allow-listed) in " << static_cast<int>(secs * 10) / 10.0 << " s\n";
  {
    std::map<std::string, std::pair<int, int>> per_suite;  // suite -> (passed, total)
    auto suite_of = [](const std::string& n) { auto p = n.find('/'); return p == std::string::npos ? std::string("node") : n.substr(0, p); };
    for (const auto& n : cases) per_suite[suite_of(n)].second++;
    for (const auto& n : passing) per_suite[suite_of(n)].first++;
    os << "  by suite:";
    for (const auto& [suite, pt] : per_suite) os << " " << suite << " " << pt.first << "/" << pt.second;
    os << "\n";
  }
  for (const auto& [outcome, list] : failures) {
    os << "  " << outcome_name(outcome) << ": " << list.size() << "\n";
    // Per-op counts inside the category (the op list of the model).
    std::map<std::string, int> by_op;
    for (const auto& [name, r] : list) by_op[group_key(r)]++;
    std::vector<std::pair<int, std::string>> sorted;
    for (const auto& [op, c] : by_op) sorted.emplace_back(-c, op);
    std::sort(sorted.begin(), sorted.end());
    os << "    by op:";
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (!verbose && i >= 40) {
        os << " ... (" << sorted.size() - i << " more)";
        break;
      }
      os << " " << sorted[i].second << "(" << -sorted[i].first << ")";
    }
    os << "\n";
    if (verbose)
      for (const auto& [name, r] : list) os << "    " << name << " [" << r.ops << "]: " << first_line(r.message) << "\n";
  }
  std::printf("%s", os.str().c_str());
  std::fflush(stdout);

  if (const char* out = std::getenv("MEDQ_WRITE_ALLOWLIST")) {
    std::ofstream f(out);
    ASSERT_TRUE(f.good()) << "cannot write " << out;
    f << "# ONNX backend test cases (libonnx-testdata) that medq must pass, one per line.\n"
         "# Node-suite cases by name, the other suites as <suite>/<case>. The list only grows.\n"
         "# Regenerate: MEDQ_WRITE_ALLOWLIST=$PWD/tests/onnx_backend/allowlist.txt \\\n"
         "#   build/tests/medq_tests --gtest_filter=OnnxBackendSummary.*\n";
    for (const auto& n : passing) f << n << "\n";
    std::printf("wrote %zu passing cases to %s\n", passing.size(), out);
  }

  std::string msg;
  for (const auto& a : allowed_failures) msg += "\n  " + a;
  EXPECT_TRUE(allowed_failures.empty()) << allowed_failures.size() << " allow-listed case(s) failed:" << msg;
}

}  // namespace
}  // namespace medq
