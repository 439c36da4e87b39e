// NumPy .npy (format 1.0/2.0/3.0, little-endian, C order) reading and writing.
#pragma once

#include <string>

#include "core/status.h"
#include "core/tensor.h"

namespace medq {

Result<Tensor> load_npy(const std::string& path);
Result<Tensor> parse_npy(const std::string& bytes, const std::string& name);
std::string serialize_npy(const Tensor& t);
Status save_npy(const Tensor& t, const std::string& path);

}  // namespace medq
