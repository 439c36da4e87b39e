#include "data/npz.h"

#include "core/npy.h"

namespace medq {

Result<NpzFile> NpzFile::open(const std::string& path) {
  NpzFile f;
  ASSIGN_OR_RETURN(f.zip_, ZipArchive::open(path));
  return f;
}

std::vector<std::string> NpzFile::keys() const {
  std::vector<std::string> out;
  for (const auto& e : zip_.entries()) {
    const std::string& n = e.name;
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".npy") == 0) out.push_back(n.substr(0, n.size() - 4));
  }
  return out;
}

bool NpzFile::has(const std::string& key) const { return zip_.find(key + ".npy") != nullptr; }

Result<Tensor> NpzFile::load(const std::string& key) const {
  const ZipEntry* e = zip_.find(key + ".npy");
  if (!e) {
    std::string avail;
    for (const auto& k : keys()) avail += (avail.empty() ? "" : ", ") + k;
    return not_found("'" + path() + "' has no array '" + key + "' (arrays: " + (avail.empty() ? "none" : avail) + ")");
  }
  ASSIGN_OR_RETURN(std::string bytes, zip_.read(*e));
  return parse_npy(bytes, path() + ":" + key);
}

Result<std::map<std::string, Tensor>> load_npz(const std::string& path) {
  ASSIGN_OR_RETURN(NpzFile f, NpzFile::open(path));
  std::map<std::string, Tensor> out;
  for (const auto& k : f.keys()) {
    ASSIGN_OR_RETURN(Tensor t, f.load(k));
    out[k] = t;
  }
  return out;
}

}  // namespace medq
