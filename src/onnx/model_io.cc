#include "onnx/model_io.h"

#include "core/fileio.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <climits>
#include <map>
#include <set>
#include <unistd.h>

namespace medq {

static std::string dir_of(const std::string& path) {
  auto p = path.find_last_of('/');
  return p == std::string::npos ? std::string(".") : path.substr(0, p);
}

template <class T>
static void copy_field(const google::protobuf::RepeatedField<T>& src, void* dst, int64_t n) {
  std::memcpy(dst, src.data(), sizeof(T) * n);
}

// Parses a non-negative decimal integer (external data offset/length).
static bool parse_size(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// Resolves an external data location against the model folder. The location must be a
// relative path that stays inside the folder, also after resolving symbolic links.
static Result<std::string> resolve_external_location(const std::string& tname, const std::string& base_dir,
                                                     const std::string& location) {
  auto escapes = [&] {
    return invalid_argument(tname + ": external data location '" + location + "' escapes the model folder");
  };
  if (location.empty()) return invalid_argument(tname + ": external data without 'location'");
  if (location[0] == '/' || location[0] == '\\' || location.find('\0') != std::string::npos) return escapes();
  // Reject any ".." path component ("a/../../b", "..\\x").
  size_t start = 0;
  while (start <= location.size()) {
    size_t end = location.find_first_of("/\\", start);
    if (end == std::string::npos) end = location.size();
    if (location.compare(start, end - start, "..") == 0 && end - start == 2) return escapes();
    start = end + 1;
  }
  std::string file = base_dir + "/" + location;
  char* real_file = ::realpath(file.c_str(), nullptr);
  if (!real_file) return not_found(tname + ": external data file '" + file + "' is missing");
  std::string rf(real_file);
  std::free(real_file);
  char* real_dir = ::realpath(base_dir.c_str(), nullptr);
  if (!real_dir) return not_found(tname + ": model folder '" + base_dir + "' is missing");
  std::string rd(real_dir);
  std::free(real_dir);
  if (rd != "/") rd += "/";
  if (rf.compare(0, rd.size(), rd) != 0) return escapes();  // a symbolic link out of the folder
  return file;
}

Result<Tensor> tensor_from_proto(const onnx::TensorProto& tp, const std::string& base_dir) {
  DataType dt = static_cast<DataType>(tp.data_type());
  const std::string tname = "tensor '" + tp.name() + "'";
  if (!dtype_supported(dt))
    return unsupported(tname + ": data type " + std::to_string(tp.data_type()) + " is not supported");
  Shape shape(tp.dims().begin(), tp.dims().end());
  // Element count with an overflow guard, checked against the stored data before allocating.
  constexpr int64_t kMaxElems = int64_t(1) << 40;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return invalid_argument(tname + ": negative dimension");
    if (d > 0 && n > kMaxElems / d) return invalid_argument(tname + ": shape " + shape_str(shape) + " is too large");
    n *= d;
  }
  const size_t nbytes = static_cast<size_t>(n) * dtype_size(dt);
  if (tp.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto& kv : tp.external_data()) {
      bool ok = true;
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") ok = parse_size(kv.value(), &offset);
      else if (kv.key() == "length") ok = parse_size(kv.value(), &length);
      if (!ok)
        return invalid_argument(tname + ": external data '" + kv.key() + "' = '" + kv.value() +
                                "' is not a non-negative integer");
    }
    ASSIGN_OR_RETURN(std::string file, resolve_external_location(tname, base_dir, location));
    RETURN_IF_ERROR(check_regular_file(file).with_context(tname + ": external data"));
    std::ifstream f(file, std::ios::binary);
    if (!f) return not_found(tname + ": external data file '" + file + "' cannot be opened");
    if (length >= 0 && static_cast<size_t>(length) != nbytes)
      return invalid_argument(tname + ": external data length " + std::to_string(length) + " != expected " +
                              std::to_string(nbytes));
    f.seekg(0, std::ios::end);
    const int64_t fsize = static_cast<int64_t>(f.tellg());
    if (fsize < 0 || offset > fsize || static_cast<size_t>(fsize - offset) < nbytes)
      return invalid_argument(tname + ": external data file '" + file + "' is too short (" + std::to_string(fsize) +
                              " bytes, need " + std::to_string(nbytes) + " at offset " + std::to_string(offset) + ")");
    Tensor t(dt, shape);
    f.seekg(offset);
    f.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(nbytes));
    if (static_cast<size_t>(f.gcount()) != nbytes)
      return io_error(tname + ": error reading external data file '" + file + "'");
    return t;
  }
  if (tp.has_raw_data()) {
    if (tp.raw_data().size() != nbytes)
      return invalid_argument(tname + ": raw_data has " + std::to_string(tp.raw_data().size()) + " bytes, expected " +
                              std::to_string(nbytes));
    Tensor t(dt, shape);
    if (nbytes) std::memcpy(t.raw(), tp.raw_data().data(), nbytes);
    return t;
  }
  auto bad_count = [&](int64_t got) {
    return invalid_argument(tname + ": has " + std::to_string(got) + " values, shape " + shape_str(shape) + " needs " +
                            std::to_string(n));
  };
  int64_t stored = 0;
  switch (dt) {
    case DataType::kFloat32: stored = tp.float_data_size(); break;
    case DataType::kFloat64: stored = tp.double_data_size(); break;
    case DataType::kInt64: stored = tp.int64_data_size(); break;
    case DataType::kUInt32:
    case DataType::kUInt64: stored = tp.uint64_data_size(); break;
    default: stored = tp.int32_data_size(); break;
  }
  if (stored != n) return bad_count(stored);
  Tensor t(dt, shape);
  switch (dt) {
    case DataType::kFloat32:
      copy_field(tp.float_data(), t.raw(), n);
      break;
    case DataType::kFloat64:
      copy_field(tp.double_data(), t.raw(), n);
      break;
    case DataType::kInt64:
      copy_field(tp.int64_data(), t.raw(), n);
      break;
    case DataType::kUInt32:
    case DataType::kUInt64:
      for (int64_t i = 0; i < n; ++i) {
        if (dt == DataType::kUInt32) t.data<uint32_t>()[i] = static_cast<uint32_t>(tp.uint64_data(i));
        else t.data<uint64_t>()[i] = tp.uint64_data(i);
      }
      break;
    default:  // int32_data holds int32, int16, int8, uint16, uint8, bool, float16, bfloat16
      for (int64_t i = 0; i < n; ++i) {
        int32_t v = tp.int32_data(i);
        switch (dt) {
          case DataType::kInt32: t.data<int32_t>()[i] = v; break;
          case DataType::kInt16: t.data<int16_t>()[i] = static_cast<int16_t>(v); break;
          case DataType::kUInt16:
          case DataType::kFloat16:
          case DataType::kBFloat16: t.data<uint16_t>()[i] = static_cast<uint16_t>(v); break;
          case DataType::kInt8: t.data<int8_t>()[i] = static_cast<int8_t>(v); break;
          case DataType::kUInt8:
          case DataType::kBool: t.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
          default: return unsupported(tname + ": unsupported dtype");
        }
      }
  }
  return t;
}

void tensor_to_proto(const Tensor& t, const std::string& name, onnx::TensorProto* tp) {
  tp->Clear();
  tp->set_name(name);
  tp->set_data_type(static_cast<int32_t>(t.dtype()));
  for (int64_t d : t.shape()) tp->add_dims(d);
  tp->set_raw_data(std::string(static_cast<const char*>(t.raw()), t.nbytes()));
}

static Result<std::string> read_whole(const std::string& path) { return read_file(path); }

static bool parse_proto(google::protobuf::MessageLite* msg, const std::string& bytes) {
  google::protobuf::io::ArrayInputStream ais(bytes.data(), static_cast<int>(bytes.size()));
  google::protobuf::io::CodedInputStream cis(&ais);
  cis.SetTotalBytesLimit(INT32_MAX);
  return msg->ParseFromCodedStream(&cis) && cis.ConsumedEntireMessage();
}

Result<Tensor> load_tensor_pb(const std::string& path, std::string* name) {
  ASSIGN_OR_RETURN(std::string bytes, read_whole(path));
  onnx::TensorProto tp;
  if (!parse_proto(&tp, bytes)) return invalid_argument("'" + path + "' is not a valid ONNX TensorProto");
  if (name) *name = tp.name();
  auto r = tensor_from_proto(tp, dir_of(path));
  if (!r.is_ok()) return r.status().with_context("'" + path + "'");
  return r;
}

Status save_tensor_pb(const Tensor& t, const std::string& name, const std::string& path) {
  onnx::TensorProto tp;
  tensor_to_proto(t, name, &tp);
  return write_file_atomic(path, tp.SerializeAsString());
}

static Status attr_from_proto(const onnx::AttributeProto& ap, const std::string& base_dir, Attribute* a) {
  a->name = ap.name();
  a->doc_string = ap.doc_string();
  a->type = static_cast<Attribute::Type>(ap.type());
  switch (ap.type()) {
    case onnx::AttributeProto::FLOAT: a->f = ap.f(); break;
    case onnx::AttributeProto::INT: a->i = ap.i(); break;
    case onnx::AttributeProto::STRING: a->s = ap.s(); break;
    case onnx::AttributeProto::TENSOR: {
      ASSIGN_OR_RETURN(a->t, tensor_from_proto(ap.t(), base_dir));
      break;
    }
    case onnx::AttributeProto::GRAPH: a->s = ap.g().SerializeAsString(); break;
    case onnx::AttributeProto::FLOATS: a->floats.assign(ap.floats().begin(), ap.floats().end()); break;
    case onnx::AttributeProto::INTS: a->ints.assign(ap.ints().begin(), ap.ints().end()); break;
    case onnx::AttributeProto::STRINGS: a->strings.assign(ap.strings().begin(), ap.strings().end()); break;
    default:
      return unsupported("attribute '" + ap.name() + "' has unsupported type " + std::to_string(ap.type()));
  }
  return Status::ok();
}

static void attr_to_proto(const Attribute& a, onnx::AttributeProto* ap) {
  ap->set_name(a.name);
  if (!a.doc_string.empty()) ap->set_doc_string(a.doc_string);
  ap->set_type(static_cast<onnx::AttributeProto_AttributeType>(a.type));
  switch (a.type) {
    case Attribute::Type::kFloat: ap->set_f(a.f); break;
    case Attribute::Type::kInt: ap->set_i(a.i); break;
    case Attribute::Type::kString: ap->set_s(a.s); break;
    case Attribute::Type::kTensor: tensor_to_proto(a.t, "", ap->mutable_t()); break;
    case Attribute::Type::kGraph: ap->mutable_g()->ParseFromString(a.s); break;
    case Attribute::Type::kFloats: for (float f : a.floats) ap->add_floats(f); break;
    case Attribute::Type::kInts: for (int64_t i : a.ints) ap->add_ints(i); break;
    case Attribute::Type::kStrings: for (const auto& s : a.strings) ap->add_strings(s); break;
    default: break;
  }
}

static void value_info_to_ir(const onnx::ValueInfoProto& vi, Value* v) {
  if (!vi.has_type() || !vi.type().has_tensor_type()) return;
  const auto& tt = vi.type().tensor_type();
  if (tt.elem_type()) v->dtype = static_cast<DataType>(tt.elem_type());
  if (!tt.has_shape()) return;
  v->has_shape = true;
  v->shape.clear();
  v->dim_params.clear();
  for (const auto& d : tt.shape().dim()) {
    v->shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    v->dim_params.push_back(d.has_dim_param() ? d.dim_param() : "");
  }
  if (!vi.doc_string().empty()) v->doc_string = vi.doc_string();
}

static void value_info_from_ir(const Value& v, onnx::ValueInfoProto* vi) {
  vi->set_name(v.name);
  if (!v.doc_string.empty()) vi->set_doc_string(v.doc_string);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(static_cast<int32_t>(v.dtype));
  if (!v.has_shape) return;
  auto* sh = tt->mutable_shape();
  for (size_t i = 0; i < v.shape.size(); ++i) {
    auto* d = sh->add_dim();
    if (i < v.dim_params.size() && !v.dim_params[i].empty()) d->set_dim_param(v.dim_params[i]);
    else if (v.shape[i] >= 0) d->set_dim_value(v.shape[i]);
  }
}

// The ONNX schema registry minus ops whose shape inference in libonnx 1.12 crashes
// on malformed attributes (found by tests/fuzz/fuzz_model_loader). Shape inference
// skips them (their outputs get no inferred shape); the kernels validate at run time.
//   LayerNormalization: axis < -rank -> mutable_dim(negative) -> SEGV.
class ShapeInferenceRegistry : public onnx::ISchemaRegistry {
 public:
  const onnx::OpSchema* GetSchema(const std::string& key, const int max_inclusive_version,
                                  const std::string& domain) const override {
    if ((domain.empty() || domain == "ai.onnx") && key == "LayerNormalization") return nullptr;
    return onnx::OpSchemaRegistry::Schema(key, max_inclusive_version, domain);
  }
};

// Opset range and unknown standard ops, checked before the ONNX checker so that the
// error is specific (the checker stops at the first unknown op).
// Opset 6 semantics that medq's kernels (written for opset >= 7) do not implement are
// refused with a clear error instead of running with different semantics:
//  * binary ops with the legacy `broadcast`=1 and an explicit `axis` (numpy suffix
//    broadcasting, which medq does, equals the legacy rule only without `axis`);
//  * BatchNormalization with spatial=0 or training mode (is_test=0 with extra outputs).
static Status check_legacy_attributes(const onnx::ModelProto& mp, const std::string& name) {
  const auto& gp = mp.graph();
  for (int i = 0; i < gp.node_size(); ++i) {
    const auto& np = gp.node(i);
    if (!np.domain().empty() && np.domain() != "ai.onnx") continue;
    std::string label = np.op_type() + " '" + (np.name().empty() ? np.op_type() + "_" + std::to_string(i) : np.name()) + "'";
    int64_t broadcast = 0, spatial = 1;
    bool has_axis = false;
    for (const auto& a : np.attribute()) {
      if (a.name() == "broadcast") broadcast = a.i();
      if (a.name() == "axis") has_axis = true;
      if (a.name() == "spatial") spatial = a.i();
    }
    static const std::set<std::string> kBinary = {"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor",
                                                  "Equal", "Greater", "Less", "PRelu"};
    if (kBinary.count(np.op_type()) && broadcast == 1 && has_axis)
      return unsupported("'" + name + "': " + label + ": legacy (opset < 7) broadcast with an explicit axis is not supported");
    if (np.op_type() == "BatchNormalization" && (spatial != 1 || np.output_size() > 1))
      return unsupported("'" + name + "': " + label + ": legacy BatchNormalization (spatial=0 or training outputs) is not supported");
  }
  return Status::ok();
}

static Status check_opsets_and_ops(const onnx::ModelProto& mp, const std::string& name) {
  if (mp.opset_import_size() == 0)
    return invalid_argument("'" + name + "': model has no opset_import (not an ONNX model, or truncated)");
  int64_t opset = -1;
  for (const auto& o : mp.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  if (opset >= 0 && (opset < kMinOpset || opset > kMaxOpset))
    return unsupported("'" + name + "': model uses opset " + std::to_string(opset) + "; medq supports opsets " +
                       std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset));
  if (opset < 0) return Status::ok();
  if (opset < 7) RETURN_IF_ERROR(check_legacy_attributes(mp, name));
  // Unknown op types of the default domain, all at once: "FooOp (2 nodes: 'a', 'b'); BarOp (...)".
  std::map<std::string, std::vector<std::string>> unknown;
  const auto& gp = mp.graph();
  for (int i = 0; i < gp.node_size(); ++i) {
    const auto& np = gp.node(i);
    if (!np.domain().empty() && np.domain() != "ai.onnx") continue;
    if (onnx::OpSchemaRegistry::Schema(np.op_type(), static_cast<int>(opset), "")) continue;
    unknown[np.op_type()].push_back(np.name().empty() ? np.op_type() + "_" + std::to_string(i) : np.name());
  }
  if (unknown.empty()) return Status::ok();
  std::string r = "'" + name + "': unknown ONNX ops at opset " + std::to_string(opset) + ": ";
  bool first = true;
  for (const auto& [op, names] : unknown) {
    if (!first) r += "; ";
    first = false;
    r += op + " (" + std::to_string(names.size()) + " node" + (names.size() > 1 ? "s" : "") + ": ";
    for (size_t i = 0; i < names.size() && i < 5; ++i) r += (i ? ", '" : "'") + names[i] + "'";
    if (names.size() > 5) r += ", ...";
    r += ")";
  }
  return unsupported(r);
}

// libonnx's messages span lines ("... of node:\ninput: \"x\" ... op_type: \"Conv\""): the first
// line alone named no node. Joined into one line, capped at 400 characters.
static std::string one_line(const std::string& m) {
  std::string r;
  bool space = false;
  for (char c : m) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !r.empty();
      continue;
    }
    if (space) r += ' ';
    space = false;
    r += c;
  }
  if (r.size() > 400) r = r.substr(0, 397) + "...";
  return r;
}

// libonnx 1.12's shape inference trusts some attributes and ranks it never checks: strides of 0
// divide by zero (SIGFPE) in Conv/MaxPool/AveragePool; pads of the wrong length, a ConvTranspose
// with a rank-2 input or a rank-0 weight, an STFT of a rank-0 signal and a MaxUnpool with rank-0
// indices index out of bounds (SIGSEGV; found by tests/fuzz/fuzz_model_loader.cc). Those are
// checked here first, with the ranks known before inference (graph inputs, initializers,
// value_info), so that a malformed file is a clear error instead of a crash.
static Status validate_for_shape_inference(const onnx::GraphProto& g, const std::string& name) {
  std::map<std::string, int> rank;
  auto add_vi = [&](const onnx::ValueInfoProto& vi) {
    if (vi.type().has_tensor_type() && vi.type().tensor_type().has_shape())
      rank[vi.name()] = vi.type().tensor_type().shape().dim_size();
  };
  for (const auto& vi : g.input()) add_vi(vi);
  for (const auto& vi : g.value_info()) add_vi(vi);
  for (const auto& t : g.initializer()) rank[t.name()] = t.dims_size();
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    const std::string& op = n.op_type();
    const std::string where = "'" + name + "': node '" + (n.name().empty() ? op + "_" + std::to_string(i) : n.name()) +
                              "' (" + op + ")";
    auto in_rank = [&](int k) -> int {
      if (k >= n.input_size() || n.input(k).empty()) return -1;
      auto it = rank.find(n.input(k));
      return it == rank.end() ? -1 : it->second;
    };
    auto ints = [&](const char* a, std::vector<int64_t>* v) {
      for (const auto& at : n.attribute())
        if (at.name() == a) {
          v->assign(at.ints().begin(), at.ints().end());
          return true;
        }
      return false;
    };
    auto list = [](const std::vector<int64_t>& v) {
      std::string s = "[";
      for (size_t k = 0; k < v.size(); ++k) s += (k ? ", " : "") + std::to_string(v[k]);
      return s + "]";
    };
    static const std::set<std::string> windowed = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool",
                                                   "AveragePool", "LpPool", "MaxUnpool"};
    if (windowed.count(op)) {
      const int x = in_rank(0);
      const int w_index = op == "QLinearConv" ? 3 : 1;
      const bool has_weight = op == "Conv" || op == "ConvInteger" || op == "QLinearConv" || op == "ConvTranspose";
      const int w = has_weight ? in_rank(w_index) : -1;
      if (x >= 0 && x < 3)
        return invalid_argument(where + ": input 0 must have rank >= 3 (N, C, spatial...), has rank " + std::to_string(x));
      if (w >= 0 && w < 3)
        return invalid_argument(where + ": the weight must have rank >= 3, has rank " + std::to_string(w));
      if (x >= 0 && w >= 0 && x != w)
        return invalid_argument(where + ": input rank " + std::to_string(x) + " and weight rank " + std::to_string(w) +
                                " differ");
      const int spatial = x >= 0 ? x - 2 : (w >= 0 ? w - 2 : -1);
      std::vector<int64_t> k, v;
      const bool has_kernel = ints("kernel_shape", &k);
      for (int64_t d : k)
        if (d <= 0) return invalid_argument(where + ": 'kernel_shape' must be positive, got " + list(k));
      const int dims = spatial >= 0 ? spatial : (has_kernel ? static_cast<int>(k.size()) : -1);
      if (has_kernel && dims >= 0 && static_cast<int>(k.size()) != dims)
        return invalid_argument(where + ": 'kernel_shape' " + list(k) + " must have " + std::to_string(dims) + " values");
      for (const char* a : {"strides", "dilations"})
        if (ints(a, &v)) {
          for (int64_t d : v)
            if (d <= 0) return invalid_argument(where + ": '" + a + "' must be positive, got " + list(v));
          if (dims >= 0 && static_cast<int>(v.size()) != dims)
            return invalid_argument(where + ": '" + a + "' " + list(v) + " must have " + std::to_string(dims) + " values");
        }
      if (ints("pads", &v)) {
        for (int64_t d : v)
          if (d < 0) return invalid_argument(where + ": 'pads' must be >= 0, got " + list(v));
        if (v.size() % 2 != 0 || (dims >= 0 && static_cast<int>(v.size()) != 2 * dims))
          return invalid_argument(where + ": 'pads' " + list(v) + " must have " +
                                  (dims >= 0 ? std::to_string(2 * dims) : std::string("an even number of")) + " values");
      }
      for (const char* a : {"output_padding", "output_shape"})
        if (ints(a, &v) && dims >= 0 && static_cast<int>(v.size()) != dims)
          return invalid_argument(where + ": '" + a + "' " + list(v) + " must have " + std::to_string(dims) + " values");
      if (op == "MaxUnpool") {
        const int ix = in_rank(1);
        if (ix >= 0 && ix < 3) return invalid_argument(where + ": the indices must have rank >= 3, has rank " + std::to_string(ix));
      }
    }
    if (op == "STFT") {
      const int s = in_rank(0);
      if (s >= 0 && s != 3)
        return invalid_argument(where + ": the signal must have rank 3 [batch, length, 1|2], has rank " + std::to_string(s));
    }
  }
  return Status::ok();
}

Result<Model> model_from_proto(onnx::ModelProto& mp, const std::string& base_dir, const std::string& name,
                               const LoadOptions& opts) {
  if (!mp.has_graph()) return invalid_argument("'" + name + "': model has no graph");
  if (mp.graph().output_size() == 0) return invalid_argument("'" + name + "': the graph has no outputs");
  RETURN_IF_ERROR(check_opsets_and_ops(mp, name));
  if (opts.run_checker) {
    try {
      onnx::checker::CheckerContext ctx;
      ctx.set_ir_version(static_cast<int>(mp.ir_version()));
      std::unordered_map<std::string, int> opsets;
      for (const auto& o : mp.opset_import()) opsets[o.domain()] = static_cast<int>(o.version());
      ctx.set_opset_imports(opsets);
      ctx.set_model_dir(base_dir);
      onnx::checker::LexicalScopeContext lex;
      onnx::checker::check_graph(mp.graph(), ctx, lex);
    } catch (const std::exception& e) {
      return invalid_argument("'" + name + "': ONNX checker: " + one_line(e.what()));
    }
  }
  if (opts.infer_shapes) {
    RETURN_IF_ERROR(validate_for_shape_inference(mp.graph(), name));
    try {
      static const ShapeInferenceRegistry registry;
      onnx::shape_inference::InferShapes(mp, &registry);
    } catch (const std::exception& e) {
      return invalid_argument("'" + name + "': shape inference: " + one_line(e.what()));
    }
  }
  Model m;
  m.source_path = name;
  m.ir_version = mp.ir_version();
  for (const auto& o : mp.opset_import()) m.opset_imports.emplace_back(o.domain(), o.version());
  m.producer_name = mp.producer_name();
  m.producer_version = mp.producer_version();
  m.domain = mp.domain();
  m.doc_string = mp.doc_string();
  m.model_version = mp.model_version();
  for (const auto& kv : mp.metadata_props()) m.metadata.emplace_back(kv.key(), kv.value());

  const auto& gp = mp.graph();
  Graph& g = m.graph;
  g.name = gp.name();
  g.doc_string = gp.doc_string();
  for (const auto& init : gp.initializer()) {
    auto t = tensor_from_proto(init, base_dir);
    if (!t.is_ok()) return t.status().with_context("'" + name + "': initializer");
    if (g.find_value(init.name()) != kNoValue)
      return invalid_argument("'" + name + "': duplicate initializer '" + init.name() + "'");
    g.add_constant(init.name(), std::move(t).value());
  }
  for (const auto& in : gp.input()) {
    uint32_t id = g.find_value(in.name());
    if (id == kNoValue) {
      id = g.add_value(in.name());
      g.inputs.push_back(id);
    }
    // Inputs that are also initializers are treated as constants (ir < 4 style).
    value_info_to_ir(in, &g.value(id));
  }
  for (const auto& vi : gp.value_info()) {
    uint32_t id = g.find_value(vi.name());
    if (id == kNoValue) id = g.add_value(vi.name());
    value_info_to_ir(vi, &g.value(id));
  }
  for (const auto& np : gp.node()) {
    Node n;
    n.name = np.name();
    n.op_type = np.op_type();
    n.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    n.doc_string = np.doc_string();
    for (const auto& in : np.input()) {
      if (in.empty()) { n.inputs.push_back(kNoValue); continue; }
      uint32_t id = g.find_value(in);
      if (id == kNoValue) id = g.add_value(in);  // checked by verify() below
      n.inputs.push_back(id);
    }
    for (const auto& out : np.output()) {
      if (out.empty()) { n.outputs.push_back(kNoValue); continue; }
      uint32_t id = g.find_value(out);
      if (id == kNoValue) id = g.add_value(out);
      n.outputs.push_back(id);
    }
    for (const auto& ap : np.attribute()) {
      Attribute a;
      Status st = attr_from_proto(ap, base_dir, &a);
      if (!st.is_ok()) return st.with_context("'" + name + "': node " + n.label());
      n.attrs.push_back(std::move(a));
    }
    g.add_node(std::move(n));
  }
  for (const auto& out : gp.output()) {
    uint32_t id = g.find_value(out.name());
    if (id == kNoValue) return invalid_argument("'" + name + "': graph output '" + out.name() + "' is never produced");
    value_info_to_ir(out, &g.value(id));
    g.outputs.push_back(id);
  }
  // Unnamed nodes get stable names so that errors can point at them.
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].name.empty()) g.nodes[i].name = g.nodes[i].op_type + "_" + std::to_string(i);
  RETURN_IF_ERROR(g.finalize().with_context("'" + name + "'"));
  RETURN_IF_ERROR(g.verify().with_context("'" + name + "'"));
  return m;
}

void model_to_proto(const Model& m, onnx::ModelProto* mp) {
  mp->Clear();
  mp->set_ir_version(m.ir_version);
  for (const auto& [d, v] : m.opset_imports) {
    auto* o = mp->add_opset_import();
    o->set_domain(d);
    o->set_version(v);
  }
  if (!m.producer_name.empty()) mp->set_producer_name(m.producer_name);
  if (!m.producer_version.empty()) mp->set_producer_version(m.producer_version);
  if (!m.domain.empty()) mp->set_domain(m.domain);
  if (!m.doc_string.empty()) mp->set_doc_string(m.doc_string);
  if (m.model_version) mp->set_model_version(m.model_version);
  for (const auto& [k, v] : m.metadata) {
    auto* p = mp->add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  const Graph& g = m.graph;
  auto* gp = mp->mutable_graph();
  gp->set_name(g.name);
  if (!g.doc_string.empty()) gp->set_doc_string(g.doc_string);
  std::vector<bool> used(g.values.size(), false);
  for (const auto& n : g.nodes) {
    if (n.dead) continue;
    auto* np = gp->add_node();
    np->set_name(n.name);
    np->set_op_type(n.op_type);
    if (!n.domain.empty()) np->set_domain(n.domain);
    if (!n.doc_string.empty()) np->set_doc_string(n.doc_string);
    for (uint32_t in : n.inputs) {
      np->add_input(in == kNoValue ? "" : g.value(in).name);
      if (in != kNoValue) used[in] = true;
    }
    for (uint32_t o : n.outputs) np->add_output(o == kNoValue ? "" : g.value(o).name);
    for (const auto& a : n.attrs) attr_to_proto(a, np->add_attribute());
  }
  for (uint32_t o : g.outputs) used[o] = true;
  for (uint32_t i : g.inputs) value_info_from_ir(g.value(i), gp->add_input());
  for (uint32_t o : g.outputs) value_info_from_ir(g.value(o), gp->add_output());
  for (uint32_t i = 0; i < g.values.size(); ++i) {
    const Value& v = g.values[i];
    if (v.is_constant() && used[i]) tensor_to_proto(v.initializer, v.name, gp->add_initializer());
  }
  for (uint32_t i = 0; i < g.values.size(); ++i) {
    const Value& v = g.values[i];
    if (v.is_constant() || g.is_graph_input(i) || g.is_graph_output(i) || v.producer == kNoNode) continue;
    if (v.has_shape || v.dtype != DataType::kUndefined) value_info_from_ir(v, gp->add_value_info());
  }
}

Result<Model> load_model_from_bytes(const std::string& bytes, const std::string& name, const LoadOptions& opts) {
  onnx::ModelProto mp;
  if (bytes.empty()) return invalid_argument("'" + name + "' is empty");
  if (!parse_proto(&mp, bytes))
    return invalid_argument("'" + name + "' is not a valid ONNX model (protobuf parse failed: truncated or corrupt)");
  return model_from_proto(mp, dir_of(name), name, opts);
}

Result<Model> load_model(const std::string& path, const LoadOptions& opts) {
  auto bytes = read_file(path);
  if (!bytes.is_ok()) return bytes.status();
  return load_model_from_bytes(bytes.value(), path, opts);
}

Status save_model(const Model& model, const std::string& path) {
  onnx::ModelProto mp;
  model_to_proto(model, &mp);
  std::string bytes;
  if (!mp.SerializeToString(&bytes))
    return unsupported("'" + path + "': model is larger than 2 GB; external data saving is not implemented");
  return write_file_atomic(path, bytes);
}

Status save_with_metadata(const std::string& in, const std::vector<std::pair<std::string, std::string>>& meta,
                          const std::string& out) {
  ASSIGN_OR_RETURN(std::string bytes, read_file(in));
  onnx::ModelProto mp;
  if (!mp.ParseFromString(bytes)) return invalid_argument("'" + in + "': not an ONNX model (protobuf parse failed)");
  auto folder = [](const std::string& p) {
    char buf[PATH_MAX];
    std::string d = p.find('/') == std::string::npos ? "." : p.substr(0, p.find_last_of('/') + 1);
    return ::realpath(d.c_str(), buf) ? std::string(buf) : d;
  };
  bool external = false;
  for (const auto& t : mp.graph().initializer()) external |= t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL;
  if (external && folder(in) != folder(out))
    return invalid_argument("'" + in + "' keeps its weights in external data files; write -o into the same folder (" +
                            folder(in) + ")");
  for (const auto& [k, v] : meta) {
    onnx::StringStringEntryProto* e = nullptr;
    for (auto& x : *mp.mutable_metadata_props())
      if (x.key() == k) e = &x;
    if (!e) {
      e = mp.add_metadata_props();
      e->set_key(k);
    }
    e->set_value(v);
  }
  std::string outb;
  if (!mp.SerializeToString(&outb)) return unsupported("'" + out + "': model is larger than 2 GB");
  return write_file_atomic(out, outb);
}

}  // namespace medq
