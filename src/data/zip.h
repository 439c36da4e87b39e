// Minimal read-only ZIP archive reader (enough for NumPy .npz files): central directory
// (incl. ZIP64 end-of-central-directory records and ZIP64 extra fields), members that are
// stored (method 0) or deflate-compressed (method 8, via zlib), CRC-32 verified.
// Encrypted members, other compression methods and multi-disk archives are kUnsupported.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace medq {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
};

class ZipArchive {
 public:
  // Reads the central directory of `path` (member data is read on demand).
  static Result<ZipArchive> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const ZipEntry* find(const std::string& name) const;
  // Decompressed bytes of a member (CRC-checked). Thread-safe (opens the file per call).
  Result<std::string> read(const ZipEntry& e) const;
  Result<std::string> read(const std::string& name) const;

  // Members larger than this (uncompressed) are refused (guard against zip bombs / bad headers).
  static constexpr uint64_t kMaxMemberBytes = uint64_t(1) << 34;

 private:
  std::string path_;
  uint64_t file_size_ = 0;
  std::vector<ZipEntry> entries_;
};

}  // namespace medq
