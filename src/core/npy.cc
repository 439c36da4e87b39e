#include "core/npy.h"

#include "core/fileio.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace medq {

static Result<DataType> dtype_from_descr(const std::string& d, const std::string& name) {
  if (d.size() < 3) return invalid_argument("'" + name + "': bad npy descr '" + d + "'");
  char endian = d[0];
  std::string t = d.substr(1);
  if (endian == '>' && t != "u1" && t != "i1" && t != "b1")
    return unsupported("'" + name + "': big-endian npy arrays are not supported");
  if (t == "f4") return DataType::kFloat32;
  if (t == "f8") return DataType::kFloat64;
  if (t == "f2") return DataType::kFloat16;
  if (t == "u1") return DataType::kUInt8;
  if (t == "i1") return DataType::kInt8;
  if (t == "u2") return DataType::kUInt16;
  if (t == "i2") return DataType::kInt16;
  if (t == "i4") return DataType::kInt32;
  if (t == "i8") return DataType::kInt64;
  if (t == "u4") return DataType::kUInt32;
  if (t == "u8") return DataType::kUInt64;
  if (t == "b1") return DataType::kBool;
  return unsupported("'" + name + "': npy dtype '" + d + "' is not supported");
}

static const char* descr_of(DataType dt) {
  switch (dt) {
    case DataType::kFloat32: return "<f4";
    case DataType::kFloat64: return "<f8";
    case DataType::kFloat16: return "<f2";
    case DataType::kUInt8: return "|u1";
    case DataType::kInt8: return "|i1";
    case DataType::kUInt16: return "<u2";
    case DataType::kInt16: return "<i2";
    case DataType::kInt32: return "<i4";
    case DataType::kInt64: return "<i8";
    case DataType::kUInt32: return "<u4";
    case DataType::kUInt64: return "<u8";
    case DataType::kBool: return "|b1";
    default: return "<f4";
  }
}

static std::string dict_value(const std::string& header, const std::string& key) {
  auto k = header.find("'" + key + "'");
  if (k == std::string::npos) return "";
  auto colon = header.find(':', k);
  if (colon == std::string::npos) return "";
  size_t i = colon + 1;
  while (i < header.size() && header[i] == ' ') ++i;
  if (i >= header.size()) return "";
  if (header[i] == '\'') {
    auto e = header.find('\'', i + 1);
    return e == std::string::npos ? "" : header.substr(i + 1, e - i - 1);
  }
  if (header[i] == '(') {
    auto e = header.find(')', i);
    return e == std::string::npos ? "" : header.substr(i, e - i + 1);
  }
  auto e = header.find_first_of(",}", i);
  return header.substr(i, e - i);
}

Result<Tensor> parse_npy(const std::string& b, const std::string& name) {
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0)
    return invalid_argument("'" + name + "' is not a .npy file (bad magic)");
  int major = static_cast<uint8_t>(b[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<uint8_t>(b[8]) | (static_cast<uint8_t>(b[9]) << 8);
    hstart = 10;
  } else {
    if (b.size() < 12) return invalid_argument("'" + name + "': truncated npy header");
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<uint8_t>(b[8 + i])) << (8 * i);
    hstart = 12;
  }
  if (hstart + hlen > b.size()) return invalid_argument("'" + name + "': truncated npy header");
  std::string header = b.substr(hstart, hlen);
  std::string descr = dict_value(header, "descr");
  std::string fortran = dict_value(header, "fortran_order");
  std::string shape_s = dict_value(header, "shape");
  if (descr.empty() || shape_s.empty()) return invalid_argument("'" + name + "': malformed npy header");
  if (fortran.find("True") != std::string::npos)
    return unsupported("'" + name + "': Fortran-ordered npy arrays are not supported");
  ASSIGN_OR_RETURN(DataType dt, dtype_from_descr(descr, name));
  Shape shape;
  std::string inner = shape_s.substr(1, shape_s.size() - 2);
  std::stringstream ss(inner);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    size_t a = tok.find_first_not_of(" L");
    if (a == std::string::npos) continue;
    try {
      long long v = std::stoll(tok.substr(a));
      if (v < 0) return invalid_argument("'" + name + "': negative npy dimension");
      shape.push_back(v);
    } catch (...) {
      return invalid_argument("'" + name + "': malformed npy shape '" + shape_s + "'");
    }
  }
  // Check the declared size against the data before allocating (no huge allocation from a hostile header).
  size_t off = hstart + hlen;
  long double need = dtype_size(dt);
  for (int64_t d : shape) need *= static_cast<long double>(d);
  if (need > static_cast<long double>(b.size() - off))
    return invalid_argument("'" + name + "': npy data truncated (" + std::to_string(b.size() - off) + " bytes for shape " +
                            shape_str(shape) + ")");
  Tensor t(dt, shape);
  if (t.nbytes()) std::memcpy(t.raw(), b.data() + off, t.nbytes());
  return t;
}

Result<Tensor> load_npy(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, read_file(path));  // regular files only (a FIFO blocked)
  return parse_npy(bytes, path);
}

std::string serialize_npy(const Tensor& t) {
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += std::to_string(t.shape()[i]) + (t.rank() == 1 ? "," : (i + 1 < t.shape().size() ? ", " : ""));
  shape += ")";
  std::string header = std::string("{'descr': '") + descr_of(t.dtype()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  header += std::string(pad, ' ') + "\n";
  std::string out = "\x93NUMPY";
  out += static_cast<char>(1);
  out += static_cast<char>(0);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

Status save_npy(const Tensor& t, const std::string& path) { return write_file_atomic(path, serialize_npy(t)); }

}  // namespace medq
