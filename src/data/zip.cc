#include "data/zip.h"

#include "core/fileio.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace medq {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) { return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

Status read_at(std::FILE* f, uint64_t off, size_t n, std::string* out, const std::string& path) {
  out->resize(n);
  if (n == 0) return Status::ok();
  if (fseeko(f, static_cast<off_t>(off), SEEK_SET) != 0 || std::fread(&(*out)[0], 1, n, f) != n)
    return io_error("'" + path + "': cannot read " + std::to_string(n) + " bytes at offset " + std::to_string(off) +
                    " (truncated zip?)");
  return Status::ok();
}

constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50;
constexpr uint32_t kEocd64LocSig = 0x07064b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kLocalSig = 0x04034b50;

}  // namespace

Result<ZipArchive> ZipArchive::open(const std::string& path) {
  RETURN_IF_ERROR(check_regular_file(path));  // a FIFO would block in fopen
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) return not_found("cannot open '" + path + "': " + std::strerror(errno));
  if (fseeko(f.get(), 0, SEEK_END) != 0) return io_error("'" + path + "': cannot seek");
  uint64_t size = static_cast<uint64_t>(ftello(f.get()));
  if (size < 22) return invalid_argument("'" + path + "' is not a zip archive (too small)");

  // End of central directory: 22 bytes + up to 65535 bytes of comment, at the end of the file.
  uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535);
  std::string tail;
  RETURN_IF_ERROR(read_at(f.get(), size - tail_len, tail_len, &tail, path));
  const uint8_t* t = reinterpret_cast<const uint8_t*>(tail.data());
  int64_t eocd = -1;
  for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
    if (rd32(t + i) == kEocdSig && i + 22 + rd16(t + i + 20) <= static_cast<int64_t>(tail_len)) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) return invalid_argument("'" + path + "' is not a zip archive (no end of central directory)");
  const uint8_t* e = t + eocd;
  uint64_t eocd_off = size - tail_len + static_cast<uint64_t>(eocd);
  uint16_t disk = rd16(e + 4), cd_disk = rd16(e + 6);
  uint64_t n_entries = rd16(e + 10);
  uint64_t cd_size = rd32(e + 12);
  uint64_t cd_off = rd32(e + 16);
  if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu || disk == 0xFFFF) {
    // ZIP64: the locator is the 20 bytes just before the EOCD.
    if (eocd_off < 20) return invalid_argument("'" + path + "': bad ZIP64 end of central directory");
    std::string loc;
    RETURN_IF_ERROR(read_at(f.get(), eocd_off - 20, 20, &loc, path));
    const uint8_t* l = reinterpret_cast<const uint8_t*>(loc.data());
    if (rd32(l) != kEocd64LocSig) return invalid_argument("'" + path + "': missing ZIP64 end of central directory locator");
    uint64_t e64_off = rd64(l + 8);
    if (e64_off + 56 > size) return invalid_argument("'" + path + "': bad ZIP64 end of central directory offset");
    std::string e64;
    RETURN_IF_ERROR(read_at(f.get(), e64_off, 56, &e64, path));
    const uint8_t* z = reinterpret_cast<const uint8_t*>(e64.data());
    if (rd32(z) != kEocd64Sig) return invalid_argument("'" + path + "': bad ZIP64 end of central directory record");
    disk = static_cast<uint16_t>(rd32(z + 16));
    cd_disk = static_cast<uint16_t>(rd32(z + 20));
    n_entries = rd64(z + 32);
    cd_size = rd64(z + 40);
    cd_off = rd64(z + 48);
  }
  if (disk != 0 || cd_disk != 0) return unsupported("'" + path + "': multi-disk zip archives are not supported");
  if (cd_off > size || cd_size > size - cd_off)
    return invalid_argument("'" + path + "': central directory lies outside the file (truncated zip?)");
  std::string cd;
  RETURN_IF_ERROR(read_at(f.get(), cd_off, cd_size, &cd, path));
  const uint8_t* c = reinterpret_cast<const uint8_t*>(cd.data());

  ZipArchive ar;
  ar.path_ = path;
  ar.file_size_ = size;
  size_t pos = 0;
  for (uint64_t i = 0; i < n_entries; ++i) {
    if (pos + 46 > cd.size() || rd32(c + pos) != kCentralSig)
      return invalid_argument("'" + path + "': corrupt central directory (entry " + std::to_string(i) + ")");
    const uint8_t* h = c + pos;
    ZipEntry en;
    en.flags = rd16(h + 8);
    en.method = rd16(h + 10);
    en.crc32 = rd32(h + 16);
    en.compressed_size = rd32(h + 20);
    en.uncompressed_size = rd32(h + 24);
    size_t name_len = rd16(h + 28), extra_len = rd16(h + 30), comment_len = rd16(h + 32);
    uint16_t start_disk = rd16(h + 34);
    en.local_header_offset = rd32(h + 42);
    if (pos + 46 + name_len + extra_len + comment_len > cd.size())
      return invalid_argument("'" + path + "': corrupt central directory (entry " + std::to_string(i) + ")");
    en.name.assign(reinterpret_cast<const char*>(h + 46), name_len);
    // ZIP64 extended information: only the fields whose 32-bit value is 0xFFFFFFFF, in order.
    const uint8_t* x = h + 46 + name_len;
    size_t xp = 0;
    while (xp + 4 <= extra_len) {
      uint16_t id = rd16(x + xp), len = rd16(x + xp + 2);
      if (xp + 4 + len > extra_len) break;
      if (id == 0x0001) {
        const uint8_t* d = x + xp + 4;
        size_t dp = 0;
        auto take = [&](uint64_t* v) {
          if (*v == 0xFFFFFFFFu && dp + 8 <= len) {
            *v = rd64(d + dp);
            dp += 8;
          }
        };
        take(&en.uncompressed_size);
        take(&en.compressed_size);
        take(&en.local_header_offset);
      }
      xp += 4 + len;
    }
    if (start_disk != 0 && start_disk != 0xFFFF)
      return unsupported("'" + path + "': multi-disk zip archives are not supported");
    ar.entries_.push_back(std::move(en));
    pos += 46 + name_len + extra_len + comment_len;
  }
  return ar;
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

Result<std::string> ZipArchive::read(const std::string& name) const {
  const ZipEntry* e = find(name);
  if (!e) return not_found("'" + path_ + "' has no member '" + name + "'");
  return read(*e);
}

Result<std::string> ZipArchive::read(const ZipEntry& e) const {
  const std::string what = "'" + path_ + "' member '" + e.name + "'";
  if (e.flags & 1) return unsupported(what + " is encrypted");
  if (e.method != 0 && e.method != 8)
    return unsupported(what + " uses compression method " + std::to_string(e.method) +
                       " (only stored and deflate are supported)");
  if (e.uncompressed_size > kMaxMemberBytes)
    return invalid_argument(what + " is too large (" + std::to_string(e.uncompressed_size) + " bytes)");
  // Deflate expands at most ~1032:1: a member declaring more than its data can hold is refused
  // before anything is allocated (a 574-byte .npz declaring 3 GiB allocated 3.26 GB).
  if (e.method == 8 && e.uncompressed_size > e.compressed_size * 1032 + 1024)
    return invalid_argument(what + " declares " + std::to_string(e.uncompressed_size) + " bytes from " +
                            std::to_string(e.compressed_size) + " compressed bytes (more than deflate can produce)");
  if (e.method == 0 && e.compressed_size != e.uncompressed_size)
    return invalid_argument(what + ": stored member with different compressed/uncompressed sizes");
  if (e.local_header_offset > file_size_ || file_size_ - e.local_header_offset < 30)
    return invalid_argument(what + ": local header lies outside the file");
  FilePtr f(std::fopen(path_.c_str(), "rb"));
  if (!f) return not_found("cannot open '" + path_ + "': " + std::strerror(errno));
  std::string lh;
  RETURN_IF_ERROR(read_at(f.get(), e.local_header_offset, 30, &lh, path_));
  const uint8_t* l = reinterpret_cast<const uint8_t*>(lh.data());
  if (rd32(l) != kLocalSig) return invalid_argument(what + ": bad local header signature");
  uint64_t data_off = e.local_header_offset + 30 + rd16(l + 26) + rd16(l + 28);
  if (data_off > file_size_ || e.compressed_size > file_size_ - data_off)
    return invalid_argument(what + ": data lies outside the file (truncated zip?)");
  std::string comp;
  RETURN_IF_ERROR(read_at(f.get(), data_off, e.compressed_size, &comp, path_));

  std::string out;
  if (e.method == 0) {
    out = std::move(comp);
  } else {
    out.resize(e.uncompressed_size);
    z_stream zs;
    std::memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return internal_error(what + ": inflateInit2 failed");
    size_t in_pos = 0, out_pos = 0;
    const size_t kChunk = size_t(1) << 30;
    char overflow = 0;
    bool probing = false;  // output full: a 1-byte probe buffer detects data beyond the declared size
    int rc = Z_OK;
    while (true) {
      if (zs.avail_in == 0 && in_pos < comp.size()) {
        size_t n = std::min(kChunk, comp.size() - in_pos);
        zs.next_in = reinterpret_cast<Bytef*>(&comp[in_pos]);
        zs.avail_in = static_cast<uInt>(n);
        in_pos += n;
      }
      if (zs.avail_out == 0) {
        if (probing) break;
        if (out_pos < out.size()) {
          size_t n = std::min(kChunk, out.size() - out_pos);
          zs.next_out = reinterpret_cast<Bytef*>(&out[out_pos]);
          zs.avail_out = static_cast<uInt>(n);
          out_pos += n;
        } else {
          probing = true;
          zs.next_out = reinterpret_cast<Bytef*>(&overflow);
          zs.avail_out = 1;
        }
      }
      rc = inflate(&zs, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) break;
      if (rc != Z_OK) break;
    }
    std::string zmsg = zs.msg ? zs.msg : "";
    uint64_t produced = zs.total_out;
    inflateEnd(&zs);
    if (probing && zs.avail_out == 0)
      return invalid_argument(what + ": inflates to more than the declared " + std::to_string(e.uncompressed_size) +
                              " bytes");
    if (rc == Z_BUF_ERROR) return invalid_argument(what + ": deflate data is truncated");
    if (rc != Z_STREAM_END)
      return invalid_argument(what + ": corrupt deflate data" + (zmsg.empty() ? "" : " (" + zmsg + ")"));
    if (produced != e.uncompressed_size)
      return invalid_argument(what + ": inflated " + std::to_string(produced) + " bytes, expected " +
                              std::to_string(e.uncompressed_size));
  }
  // CRC-32 over possibly > 4 GiB of data.
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t p = 0; p < out.size();) {
    size_t n = std::min<size_t>(out.size() - p, size_t(1) << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(out.data() + p), static_cast<uInt>(n));
    p += n;
  }
  if (static_cast<uint32_t>(crc) != e.crc32) return invalid_argument(what + ": CRC-32 mismatch (corrupt archive)");
  return out;
}

}  // namespace medq
