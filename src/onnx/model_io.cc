#include "onnx/model_io.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace medq {

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found("cannot open '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return io_error("error reading '" + path + "'");
  return ss.str();
}

Status write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return io_error("cannot write '" + tmp + "'");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      return io_error("error writing '" + tmp + "' (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return io_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
  return Status::ok();
}

static std::string dir_of(const std::string& path) {
  auto p = path.find_last_of('/');
  return p == std::string::npos ? std::string(".") : path.substr(0, p);
}

template <class T>
static void copy_field(const google::protobuf::RepeatedField<T>& src, void* dst, int64_t n) {
  std::memcpy(dst, src.data(), sizeof(T) * n);
}

Result<Tensor> tensor_from_proto(const onnx::TensorProto& tp, const std::string& base_dir) {
  DataType dt = static_cast<DataType>(tp.data_type());
  const std::string tname = "tensor '" + tp.name() + "'";
  if (!dtype_supported(dt))
    return unsupported(tname + ": data type " + std::to_string(tp.data_type()) + " is not supported");
  Shape shape(tp.dims().begin(), tp.dims().end());
  for (int64_t d : shape)
    if (d < 0) return invalid_argument(tname + ": negative dimension");
  Tensor t(dt, shape);
  const int64_t n = t.numel();
  const size_t nbytes = t.nbytes();
  if (tp.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto& kv : tp.external_data()) {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    }
    if (location.empty()) return invalid_argument(tname + ": external data without 'location'");
    if (location.find("..") != std::string::npos || (!location.empty() && location[0] == '/'))
      return invalid_argument(tname + ": external data location '" + location + "' escapes the model folder");
    std::string file = base_dir + "/" + location;
    std::ifstream f(file, std::ios::binary);
    if (!f) return not_found(tname + ": external data file '" + file + "' is missing");
    if (length >= 0 && static_cast<size_t>(length) != nbytes)
      return invalid_argument(tname + ": external data length " + std::to_string(length) + " != expected " +
                              std::to_string(nbytes));
    f.seekg(offset);
    f.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(nbytes));
    if (static_cast<size_t>(f.gcount()) != nbytes)
      return invalid_argument(tname + ": external data file '" + file + "' is too short");
    return t;
  }
  if (tp.has_raw_data()) {
    if (tp.raw_data().size() != nbytes)
      return invalid_argument(tname + ": raw_data has " + std::to_string(tp.raw_data().size()) + " bytes, expected " +
                              std::to_string(nbytes));
    if (nbytes) std::memcpy(t.raw(), tp.raw_data().data(), nbytes);
    return t;
  }
  auto bad_count = [&](int64_t got) {
    return invalid_argument(tname + ": has " + std::to_string(got) + " values, shape " + shape_str(shape) + " needs " +
                            std::to_string(n));
  };
  switch (dt) {
    case DataType::kFloat32:
      if (tp.float_data_size() != n) return bad_count(tp.float_data_size());
      copy_field(tp.float_data(), t.raw(), n);
      break;
    case DataType::kFloat64:
      if (tp.double_data_size() != n) return bad_count(tp.double_data_size());
      copy_field(tp.double_data(), t.raw(), n);
      break;
    case DataType::kInt64:
      if (tp.int64_data_size() != n) return bad_count(tp.int64_data_size());
      copy_field(tp.int64_data(), t.raw(), n);
      break;
    case DataType::kUInt32:
    case DataType::kUInt64:
      if (tp.uint64_data_size() != n) return bad_count(tp.uint64_data_size());
      for (int64_t i = 0; i < n; ++i) {
        if (dt == DataType::kUInt32) t.data<uint32_t>()[i] = static_cast<uint32_t>(tp.uint64_data(i));
        else t.data<uint64_t>()[i] = tp.uint64_data(i);
      }
      break;
    default:  // int32_data holds int32, int16, int8, uint16, uint8, bool, float16, bfloat16
      if (tp.int32_data_size() != n) return bad_count(tp.int32_data_size());
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

Result<Model> model_from_proto(onnx::ModelProto& mp, const std::string& base_dir, const std::string& name,
                               const LoadOptions& opts) {
  if (!mp.has_graph()) return invalid_argument("'" + name + "': model has no graph");
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
      std::string msg = e.what();
      auto nl = msg.find('\n');
      if (nl != std::string::npos) msg = msg.substr(0, nl);
      return invalid_argument("'" + name + "': ONNX checker: " + msg);
    }
  }
  if (opts.infer_shapes) {
    try {
      onnx::shape_inference::InferShapes(mp);
    } catch (const std::exception& e) {
      std::string msg = e.what();
      auto nl = msg.find('\n');
      if (nl != std::string::npos) msg = msg.substr(0, nl);
      return invalid_argument("'" + name + "': shape inference: " + msg);
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

}  // namespace medq
