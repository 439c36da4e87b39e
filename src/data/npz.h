// NumPy .npz archives (np.savez / np.savez_compressed: a zip of "<key>.npy" members).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "data/zip.h"

namespace medq {

class NpzFile {
 public:
  static Result<NpzFile> open(const std::string& path);
  const std::string& path() const { return zip_.path(); }
  // Array names (member names without the ".npy" suffix), in archive order.
  std::vector<std::string> keys() const;
  bool has(const std::string& key) const;
  // Reads and parses one array; not_found (listing the available keys) when absent.
  Result<Tensor> load(const std::string& key) const;

 private:
  ZipArchive zip_;
};

// Loads every array of an .npz file.
Result<std::map<std::string, Tensor>> load_npz(const std::string& path);

}  // namespace medq
