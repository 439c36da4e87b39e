// Whole-file reading and atomic writing (temp file in the same folder, then
// rename), so a failed write never leaves a partial output file.
#pragma once

#include <string>

#include "core/status.h"

namespace medq {

Status write_file_atomic(const std::string& path, const std::string& bytes);
Result<std::string> read_file(const std::string& path);

}  // namespace medq
