// Whole-file reading and atomic writing (temp file in the same folder, then
// rename), so a failed write never leaves a partial output file.
#pragma once

#include <string>

#include "core/status.h"

namespace medq {

Status write_file_atomic(const std::string& path, const std::string& bytes);
Result<std::string> read_file(const std::string& path);
// An error when `path` exists but is not a regular file (a device, FIFO or directory: /dev/zero
// was read forever, a FIFO blocked in open()); ok otherwise (a missing file is left to the
// caller's open, which names it). Every reader of user files calls it before opening.
Status check_regular_file(const std::string& path);

}  // namespace medq
