// Window geometry shared by the reference Conv and pooling kernels: parses
// kernel_shape / strides / dilations / pads / auto_pad / ceil_mode and computes
// output sizes and begin pads. Everything is lifted to 3 spatial dims (1-D and
// 2-D problems get leading dims of size 1) so one loop nest serves all ranks.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "core/status.h"
#include "ir/graph.h"

namespace medq {
namespace ref {

constexpr int kMaxSpatial = 3;

struct WindowAttrs {
  std::string auto_pad = "NOTSET";
  std::vector<int64_t> kernel;  // empty: from W (Conv)
  std::vector<int64_t> strides, dilations, pads;
  bool ceil_mode = false;

  // Reads the attributes of a Conv/pool node; validates the names only.
  Status parse(const Node& n) {
    auto_pad = n.attr_s("auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" && auto_pad != "VALID")
      return invalid_argument(n.label() + ": unknown auto_pad '" + auto_pad + "'");
    kernel = n.attr_ints("kernel_shape");
    strides = n.attr_ints("strides");
    dilations = n.attr_ints("dilations");
    pads = n.attr_ints("pads");
    ceil_mode = n.attr_i("ceil_mode", 0) != 0;
    return Status::ok();
  }
};

// Geometry of one problem lifted to 3 spatial dims.
struct Window3 {
  int spatial = 0;  // original number of spatial dims
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1};
  int64_t s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pb[3] = {0, 0, 0}, pe[3] = {0, 0, 0};
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
};

// Fills `w` for the spatial dims `in_spatial` and kernel `kernel`. `label`
// names the node in errors; `allow_ceil` enables ceil_mode (pooling).
inline Status compute_window(const std::string& label, const WindowAttrs& a, const std::vector<int64_t>& in_spatial,
                             const std::vector<int64_t>& kernel, bool allow_ceil, Window3& w) {
  const int n = static_cast<int>(in_spatial.size());
  if (n < 1 || n > kMaxSpatial)
    return unsupported(label + ": " + std::to_string(n) + " spatial dims are not supported (1 to 3)");
  if (static_cast<int>(kernel.size()) != n)
    return invalid_argument(label + ": kernel_shape has " + std::to_string(kernel.size()) + " dims, input has " +
                            std::to_string(n) + " spatial dims");
  if (!a.strides.empty() && static_cast<int>(a.strides.size()) != n)
    return invalid_argument(label + ": strides has " + std::to_string(a.strides.size()) + " entries, expected " +
                            std::to_string(n));
  if (!a.dilations.empty() && static_cast<int>(a.dilations.size()) != n)
    return invalid_argument(label + ": dilations has " + std::to_string(a.dilations.size()) + " entries, expected " +
                            std::to_string(n));
  if (a.auto_pad == "NOTSET" && !a.pads.empty() && static_cast<int>(a.pads.size()) != 2 * n)
    return invalid_argument(label + ": pads has " + std::to_string(a.pads.size()) + " entries, expected " +
                            std::to_string(2 * n));
  w = Window3();
  w.spatial = n;
  const int off = kMaxSpatial - n;
  for (int i = 0; i < n; ++i) {
    const int j = off + i;
    const int64_t in = in_spatial[i], k = kernel[i];
    const int64_t s = a.strides.empty() ? 1 : a.strides[i];
    const int64_t d = a.dilations.empty() ? 1 : a.dilations[i];
    if (k < 1 || s < 1 || d < 1)
      return invalid_argument(label + ": kernel_shape, strides and dilations must be positive");
    const int64_t dk = (k - 1) * d + 1;
    int64_t pb = 0, pe = 0, out = 0;
    if (a.auto_pad == "NOTSET") {
      if (!a.pads.empty()) {
        pb = a.pads[i];
        pe = a.pads[i + n];
        if (pb < 0 || pe < 0) return invalid_argument(label + ": negative pads are not supported");
      }
      const int64_t span = in + pb + pe - dk;
      if (span < 0)
        return invalid_argument(label + ": window " + std::to_string(dk) + " is larger than the padded input " +
                                std::to_string(in + pb + pe));
      if (allow_ceil && a.ceil_mode) {
        out = (span + s - 1) / s + 1;
        if ((out - 1) * s >= in + pb) --out;  // the last window must start inside the input or left pad
      } else {
        out = span / s + 1;
      }
    } else if (a.auto_pad == "VALID") {
      if (in < dk)
        return invalid_argument(label + ": window " + std::to_string(dk) + " is larger than the input " + std::to_string(in));
      out = (in - dk) / s + 1;
    } else {
      out = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + dk - in);
      if (a.auto_pad == "SAME_UPPER") {
        pb = total / 2;
        pe = total - pb;
      } else {
        pe = total / 2;
        pb = total - pe;
      }
    }
    w.in[j] = in;
    w.out[j] = out;
    w.k[j] = k;
    w.s[j] = s;
    w.d[j] = d;
    w.pb[j] = pb;
    w.pe[j] = pe;
  }
  return Status::ok();
}

}  // namespace ref
}  // namespace medq
