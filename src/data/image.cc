// Image decoding: PNG (libpng), JPEG (libjpeg-turbo), DICOM (DCMTK). See image.h for the
// exact semantics and the Pillow-parity notes.
#include "data/image.h"

#include "core/fileio.h"

#include <csetjmp>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>

#include <png.h>
// jpeglib.h needs FILE/size_t declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmimage/diregist.h"  // registers colour image support for DicomImage
#include "dcmtk/dcmimgle/dcmimage.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

namespace medq {
namespace {

std::string quoted(const std::string& name) { return "'" + name + "'"; }

Status too_many_pixels(const std::string& name, const char* fmt, int64_t w, int64_t h,
                       const DecodeLimits& limits) {
  return invalid_argument(quoted(name) + ": " + fmt + " image is " + std::to_string(w) + "x" +
                          std::to_string(h) + " = " + std::to_string(w * h) +
                          " pixels, more than the decode limit of " +
                          std::to_string(limits.max_pixels) +
                          " pixels (possible decompression bomb)");
}

// ------------------------------------------------------------------------------------------
// PNG
// ------------------------------------------------------------------------------------------

struct PngCtx {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  int64_t max_pixels = 0;
  std::string err;
  bool too_big = false;
  png_uint_32 width = 0, height = 0;
  int channels = 0;
  std::vector<uint8_t> buf;
  std::vector<png_bytep> rows;
};

void png_error_cb(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngCtx*>(png_get_error_ptr(png));
  if (ctx != nullptr && ctx->err.empty()) ctx->err = msg ? msg : "unknown libpng error";
  png_longjmp(png, 1);
}

void png_warning_cb(png_structp, png_const_charp) {}  // libpng warnings are not fatal; stay quiet

void png_read_cb(png_structp png, png_bytep out, png_size_t n) {
  auto* ctx = static_cast<PngCtx*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) png_error(png, "unexpected end of data (truncated PNG)");
  std::memcpy(out, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

// All libpng calls that may longjmp live here; only `ctx` (owned by the caller) holds C++ state.
bool png_decode_inner(png_structp png, png_infop info, PngCtx* ctx) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, ctx, png_read_cb);
  png_read_info(png, info);
  ctx->width = png_get_image_width(png, info);
  ctx->height = png_get_image_height(png, info);
  if (int64_t(ctx->width) * int64_t(ctx->height) > ctx->max_pixels) {
    ctx->too_big = true;
    return false;
  }
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_strip_16(png);  // high byte, as Pillow's ";16B" unpackers
  // Alpha is dropped; png_set_palette_to_rgb also expands a palette tRNS to alpha, so strip
  // that too (Pillow's convert('RGB') ignores transparency).
  if ((color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
    png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  ctx->channels = png_get_channels(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  if (png_get_bit_depth(png, info) != 8 || (ctx->channels != 1 && ctx->channels != 3) ||
      rowbytes != size_t(ctx->width) * ctx->channels) {
    ctx->err = "unexpected PNG layout after transformations";
    return false;
  }
  ctx->buf.resize(rowbytes * ctx->height);
  ctx->rows.resize(ctx->height);
  for (png_uint_32 y = 0; y < ctx->height; ++y) ctx->rows[y] = ctx->buf.data() + rowbytes * y;
  png_read_image(png, ctx->rows.data());
  // No png_read_end(): like Pillow, trailing chunks after the image data (or a missing IEND)
  // do not matter once every row has been decoded.
  return true;
}

}  // namespace

Result<Image> decode_png(const uint8_t* data, size_t size, const std::string& name,
                         const DecodeLimits& limits) {
  if (size < 8 || png_sig_cmp(const_cast<png_bytep>(data), 0, 8) != 0)
    return invalid_argument(quoted(name) + ": not a PNG file (bad signature)");
  auto ctx = std::make_unique<PngCtx>();
  ctx->data = data;
  ctx->size = size;
  ctx->max_pixels = limits.max_pixels;
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx.get(), png_error_cb, png_warning_cb);
  if (png == nullptr) return internal_error(quoted(name) + ": png_create_read_struct failed");
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return internal_error(quoted(name) + ": png_create_info_struct failed");
  }
  bool ok = false;
  try {
    ok = png_decode_inner(png, info, ctx.get());
  } catch (const std::bad_alloc&) {
    ctx->err = "out of memory";
  }
  png_destroy_read_struct(&png, &info, nullptr);
  if (ctx->too_big) return too_many_pixels(name, "PNG", ctx->width, ctx->height, limits);
  if (!ok) return invalid_argument(quoted(name) + ": corrupt or truncated PNG: " + ctx->err);
  Image img;
  img.width = int(ctx->width);
  img.height = int(ctx->height);
  img.channels = ctx->channels;
  img.u8 = std::move(ctx->buf);
  return img;
}

// ------------------------------------------------------------------------------------------
// JPEG
// ------------------------------------------------------------------------------------------
namespace {

struct JpegErr {
  jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  bool eof_is_fatal;
};

void jpeg_error_exit_cb(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

void jpeg_emit_message_cb(j_common_ptr cinfo, int msg_level) {
  auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
  if (msg_level < 0) {
    e->pub.num_warnings++;
    // libjpeg pads a truncated stream with a fake EOI and only warns; Pillow reports "image
    // file is truncated" unless all rows were decoded, so do the same.
    if (e->pub.msg_code == JWRN_JPEG_EOF && e->eof_is_fatal) {
      std::snprintf(e->msg, sizeof(e->msg), "premature end of JPEG data (truncated file)");
      longjmp(e->jb, 1);
    }
  }
  // Other warnings (e.g. "Corrupt JPEG data: N extraneous bytes") are ignored, as in Pillow.
}

void jpeg_output_message_cb(j_common_ptr) {}

struct JpegCtx {
  const uint8_t* data = nullptr;
  size_t size = 0;
  int64_t max_pixels = 0;
  bool too_big = false;
  JDIMENSION width = 0, height = 0;
  int components = 0;
  std::vector<uint8_t> buf;
};

bool jpeg_decode_inner(jpeg_decompress_struct* cinfo, JpegErr* err, JpegCtx* ctx) {
  if (setjmp(err->jb)) return false;
  jpeg_mem_src(cinfo, ctx->data, static_cast<unsigned long>(ctx->size));
  jpeg_read_header(cinfo, TRUE);
  ctx->width = cinfo->image_width;
  ctx->height = cinfo->image_height;
  if (int64_t(ctx->width) * int64_t(ctx->height) > ctx->max_pixels) {
    ctx->too_big = true;
    return false;
  }
  // Pillow's JpegDecode.c: rawmode "L" / "RGB" / "CMYK;I" chosen by component count; everything
  // else at libjpeg defaults (JDCT_ISLOW, do_fancy_upsampling = TRUE, scale 1/1).
  switch (cinfo->num_components) {
    case 1: cinfo->out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo->out_color_space = JCS_RGB; break;
    case 4: cinfo->out_color_space = JCS_CMYK; break;
    default:
      std::snprintf(err->msg, sizeof(err->msg), "unsupported number of JPEG components: %d",
                    cinfo->num_components);
      return false;
  }
  jpeg_start_decompress(cinfo);
  ctx->components = cinfo->output_components;
  const size_t stride = size_t(cinfo->output_width) * size_t(ctx->components);
  ctx->buf.resize(stride * cinfo->output_height);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = ctx->buf.data() + stride * cinfo->output_scanline;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  err->eof_is_fatal = false;  // all rows decoded: a missing EOI is harmless (as in Pillow)
  jpeg_finish_decompress(cinfo);
  return true;
}

bool jpeg_create_inner(jpeg_decompress_struct* cinfo, JpegErr* err) {
  if (setjmp(err->jb)) return false;
  jpeg_create_decompress(cinfo);
  return true;
}

inline uint8_t clip8i(int v) { return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v)); }

}  // namespace

Result<Image> decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                          const DecodeLimits& limits) {
  if (size < 3 || data[0] != 0xFF || data[1] != 0xD8)
    return invalid_argument(quoted(name) + ": not a JPEG file (bad signature)");
  auto ctx = std::make_unique<JpegCtx>();
  ctx->data = data;
  ctx->size = size;
  ctx->max_pixels = limits.max_pixels;
  auto cinfo = std::make_unique<jpeg_decompress_struct>();
  auto err = std::make_unique<JpegErr>();
  std::memset(cinfo.get(), 0, sizeof(jpeg_decompress_struct));
  cinfo->err = jpeg_std_error(&err->pub);
  err->pub.error_exit = jpeg_error_exit_cb;
  err->pub.emit_message = jpeg_emit_message_cb;
  err->pub.output_message = jpeg_output_message_cb;
  err->msg[0] = '\0';
  err->eof_is_fatal = true;
  if (!jpeg_create_inner(cinfo.get(), err.get())) {
    jpeg_destroy_decompress(cinfo.get());
    return internal_error(quoted(name) + ": libjpeg initialisation failed: " + err->msg);
  }
  bool ok = false;
  try {
    ok = jpeg_decode_inner(cinfo.get(), err.get(), ctx.get());
  } catch (const std::bad_alloc&) {
    std::snprintf(err->msg, sizeof(err->msg), "out of memory");
  }
  jpeg_destroy_decompress(cinfo.get());
  if (ctx->too_big) return too_many_pixels(name, "JPEG", ctx->width, ctx->height, limits);
  if (!ok)
    return invalid_argument(quoted(name) + ": corrupt or truncated JPEG: " + std::string(err->msg));

  Image img;
  img.width = int(ctx->width);
  img.height = int(ctx->height);
  const size_t npix = size_t(img.width) * size_t(img.height);
  if (ctx->components == 4) {
    // Pillow: rawmode "CMYK;I" (Adobe inverted CMYK), then Convert.c cmyk2rgb.
    img.channels = 3;
    img.u8.resize(npix * 3);
    for (size_t i = 0; i < npix; ++i) {
      const uint8_t* p = &ctx->buf[i * 4];
      const int k = 255 - p[3];  // "CMYK;I": stored values are inverted
      const int nk = 255 - k;
      for (int c = 0; c < 3; ++c) {
        const int v = 255 - p[c];
        int tmp = v * nk + 128;
        tmp = ((tmp >> 8) + tmp) >> 8;  // MULDIV255
        img.u8[i * 3 + c] = uint8_t(clip8i(nk - tmp));
      }
    }
  } else {
    img.channels = ctx->components;
    img.u8 = std::move(ctx->buf);
  }
  return img;
}

// ------------------------------------------------------------------------------------------
// DICOM
// ------------------------------------------------------------------------------------------
namespace {

void dicom_global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    // DCMTK logs warnings/errors to stderr by default; medq reports through Status instead.
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();    // JPEG baseline/extended/lossless
    DJLSDecoderRegistration::registerCodecs();  // JPEG-LS
    DcmRLEDecoderRegistration::registerCodecs();  // RLE
  });
}

// DICOM RLE (PS3.5 Annex G): every frame is one fragment that starts with a 64-byte header, the
// segment count (1..15) and 15 segment offsets. DCMTK 3.6.7's DcmRLEDecoder trusts the offsets:
// a 7.8 KB file whose second offset was set to 0x07000000 made it read far out of bounds (SIGSEGV
// in medq run, the whole server gone). Each fragment's header is checked before decoding: count
// = samples x bytes per sample, offsets ascending from 64 and inside the fragment.
Status check_rle_fragments(DcmDataset* ds, DcmElement* pix, const std::string& name) {
  auto* pd = OFdynamic_cast(DcmPixelData*, pix);
  if (!pd) return invalid_argument(quoted(name) + ": DICOM RLE pixel data is not encapsulated");
  DcmPixelSequence* seq = nullptr;
  if (pd->getEncapsulatedRepresentation(EXS_RLELossless, nullptr, seq).bad() || !seq || seq->card() < 2)
    return invalid_argument(quoted(name) + ": DICOM RLE pixel data has no fragments");
  Uint16 spp = 1, bits = 8;
  if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad()) spp = 1;
  ds->findAndGetUint16(DCM_BitsAllocated, bits);
  const Uint32 want = Uint32(spp) * ((Uint32(bits) + 7) / 8);
  for (unsigned long i = 1; i < seq->card(); ++i) {  // item 0 is the basic offset table
    DcmPixelItem* item = nullptr;
    Uint8* p = nullptr;
    if (seq->getItem(item, i).bad() || !item || item->getUint8Array(p).bad())
      return invalid_argument(quoted(name) + ": DICOM RLE fragment " + std::to_string(i) + " is unreadable");
    const Uint32 len = item->getLength();
    auto u32 = [&](Uint32 off) {
      return Uint32(p[off]) | (Uint32(p[off + 1]) << 8) | (Uint32(p[off + 2]) << 16) | (Uint32(p[off + 3]) << 24);
    };
    const std::string frag = quoted(name) + ": DICOM RLE fragment " + std::to_string(i);
    if (!p || len < 64) return invalid_argument(frag + " is shorter than its 64-byte header");
    const Uint32 nseg = u32(0);
    if (nseg < 1 || nseg > 15 || nseg != want)
      return invalid_argument(frag + " declares " + std::to_string(nseg) + " segments, expected " +
                              std::to_string(want) + " (samples x bytes per sample)");
    Uint32 prev = 0;
    for (Uint32 s = 0; s < nseg; ++s) {
      const Uint32 off = u32(4 + 4 * s);
      if ((s == 0 && off != 64) || (s > 0 && off <= prev) || off >= len)
        return invalid_argument(frag + ": segment " + std::to_string(s + 1) + " offset " + std::to_string(off) +
                                " is outside the fragment (" + std::to_string(len) + " bytes) or out of order");
      prev = off;
    }
  }
  return Status::ok();
}

bool is_jpeg2000_uid(const std::string& uid) {
  // 1.2.840.10008.1.2.4.90-.93: JPEG 2000 (Part 1/2); .201-.203: High-Throughput JPEG 2000.
  static const char* kUids[] = {"1.2.840.10008.1.2.4.90",  "1.2.840.10008.1.2.4.91",
                                "1.2.840.10008.1.2.4.92",  "1.2.840.10008.1.2.4.93",
                                "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                                "1.2.840.10008.1.2.4.203"};
  for (const char* u : kUids)
    if (uid == u) return true;
  return false;
}

std::string hex_prefix(const uint8_t* d, size_t n) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < n && i < 8; ++i) {
    std::snprintf(b, sizeof b, i ? " %02x" : "%02x", d[i]);
    s += b;
  }
  return s;
}

bool has_dicom_extension(const std::string& name) {
  std::string lower;
  for (char c : name) lower += char(std::tolower(static_cast<unsigned char>(c)));
  auto ends = [&](const char* suf) {
    const size_t n = std::strlen(suf);
    return lower.size() >= n && lower.compare(lower.size() - n, n, suf) == 0;
  };
  return ends(".dcm") || ends(".dicom") || ends(".dic");
}

bool xfer_has_codec(E_TransferSyntax xs) {
  switch (xs) {
    case EXS_JPEGProcess1:
    case EXS_JPEGProcess2_4:
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1:
    case EXS_JPEGLSLossless:
    case EXS_JPEGLSLossy:
    case EXS_RLELossless:
      return true;
    default:
      return false;
  }
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

// VOI LUT functions of PS3.3 C.11.2.1.2/3, output range [0, 255].
double apply_window(double x, double c, double w, int fn) {
  const double ymax = 255.0;
  if (fn == 1) {  // LINEAR_EXACT
    if (x <= c - w / 2) return 0.0;
    if (x > c + w / 2) return ymax;
    return (x - c) / w * ymax + ymax / 2;
  }
  if (fn == 2) {  // SIGMOID
    return ymax / (1.0 + std::exp(-4.0 * (x - c) / w));
  }
  // LINEAR
  if (x <= c - 0.5 - (w - 1) / 2) return 0.0;
  if (x > c - 0.5 + (w - 1) / 2) return ymax;
  return ((x - (c - 0.5)) / (w - 1) + 0.5) * ymax;
}

Result<Image> dicom_monochrome(DcmDataset* ds, DcmElement* pix, const std::string& name,
                               int rows, int cols, bool mono1) {
  Uint16 bits_alloc = 0, bits_stored = 0, high_bit = 0, pixel_rep = 0;
  if (ds->findAndGetUint16(DCM_BitsAllocated, bits_alloc).bad())
    return invalid_argument(quoted(name) + ": DICOM image lacks BitsAllocated (0028,0100)");
  if (ds->findAndGetUint16(DCM_BitsStored, bits_stored).bad()) bits_stored = bits_alloc;
  if (ds->findAndGetUint16(DCM_HighBit, high_bit).bad()) high_bit = Uint16(bits_stored - 1);
  ds->findAndGetUint16(DCM_PixelRepresentation, pixel_rep);
  if (bits_alloc != 1 && bits_alloc != 8 && bits_alloc != 16 && bits_alloc != 32)
    return unsupported(quoted(name) + ": DICOM BitsAllocated=" + std::to_string(bits_alloc) +
                       " is not supported (1, 8, 16 or 32 only)");
  if (bits_alloc == 1) {  // bit-packed (e.g. binary segmentation), LSB first
    bits_stored = 1;
    high_bit = 0;
    pixel_rep = 0;
  }
  if (bits_stored == 0 || bits_stored > bits_alloc || high_bit >= bits_alloc ||
      high_bit + 1 < bits_stored)
    return invalid_argument(quoted(name) + ": inconsistent DICOM BitsStored/HighBit (" +
                            std::to_string(bits_stored) + "/" + std::to_string(high_bit) + ")");

  Uint32 frame_size = 0;
  OFCondition cond = pix->getUncompressedFrameSize(ds, frame_size);
  if (cond.bad())
    return invalid_argument(quoted(name) + ": cannot size DICOM frame: " + cond.text());
  const size_t npix = size_t(rows) * size_t(cols);
  const size_t need = bits_alloc == 1 ? (npix + 7) / 8 : npix * (bits_alloc / 8);
  if (frame_size < need)
    return invalid_argument(quoted(name) + ": DICOM frame size inconsistent with Rows/Columns");
  std::vector<uint8_t> frame(size_t(frame_size) + (frame_size & 1u));
  Uint32 start_fragment = 0;
  OFString color_model;
  cond = pix->getUncompressedFrame(ds, 0, start_fragment, frame.data(), Uint32(frame.size()),
                                   color_model);
  if (cond.bad())
    return invalid_argument(quoted(name) + ": cannot decode DICOM pixel data of frame 0 "
                            "(truncated or corrupt?): " + cond.text());

  double slope = 1.0, intercept = 0.0;
  if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).bad() || !std::isfinite(slope) ||
      slope == 0.0)
    slope = 1.0;
  if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad() || !std::isfinite(intercept))
    intercept = 0.0;

  // Stored value -> modality value.
  const unsigned shift = unsigned(high_bit + 1 - bits_stored);
  const uint64_t mask = (bits_stored >= 32) ? 0xFFFFFFFFull : ((uint64_t(1) << bits_stored) - 1);
  const uint64_t sign_bit = uint64_t(1) << (bits_stored - 1);
  std::vector<double> mod(npix);
  double vmin = std::numeric_limits<double>::infinity(), vmax = -vmin;
  for (size_t i = 0; i < npix; ++i) {
    uint64_t raw;
    if (bits_alloc == 1) {
      raw = (frame[i >> 3] >> (i & 7)) & 1u;
    } else if (bits_alloc == 8) {
      raw = frame[i];
    } else if (bits_alloc == 16) {
      uint16_t v;
      std::memcpy(&v, &frame[i * 2], 2);
      raw = v;
    } else {
      uint32_t v;
      std::memcpy(&v, &frame[i * 4], 4);
      raw = v;
    }
    raw = (raw >> shift) & mask;
    int64_t sv = int64_t(raw);
    if (pixel_rep == 1 && (raw & sign_bit)) sv -= int64_t(uint64_t(1) << bits_stored);
    const double m = double(sv) * slope + intercept;
    mod[i] = m;
    if (m < vmin) vmin = m;
    if (m > vmax) vmax = m;
  }

  // VOI: first window of the file, else min..max.
  double center = 0, width = 0;
  bool have_window = ds->findAndGetFloat64(DCM_WindowCenter, center, 0).good() &&
                     ds->findAndGetFloat64(DCM_WindowWidth, width, 0).good() &&
                     std::isfinite(center) && std::isfinite(width);
  int fn = 0;
  OFString voi_fn;
  if (ds->findAndGetOFString(DCM_VOILUTFunction, voi_fn).good()) {
    const std::string f = trim(voi_fn.c_str());
    if (f == "LINEAR_EXACT") fn = 1;
    else if (f == "SIGMOID") fn = 2;
  }
  if (have_window && (fn == 0 ? width < 1.0 : width <= 0.0)) have_window = false;

  Image img;
  img.width = cols;
  img.height = rows;
  img.channels = 1;
  img.pixels.resize(npix);
  const double range = vmax - vmin;
  for (size_t i = 0; i < npix; ++i) {
    double y;
    if (have_window) {
      y = apply_window(mod[i], center, width, fn);
    } else {
      y = range > 0 ? (mod[i] - vmin) / range * 255.0 : 0.0;
    }
    if (mono1) y = 255.0 - y;
    img.pixels[i] = float(y);
  }
  return img;
}

Result<Image> dicom_color(DcmFileFormat* ff, E_TransferSyntax xfer, const std::string& name,
                          int rows, int cols) {
  DicomImage di(ff, xfer, CIF_UsePartialAccessToPixelData, 0, 1);
  if (di.getStatus() != EIS_Normal)
    return invalid_argument(quoted(name) + ": cannot decode DICOM colour image: " +
                            DicomImage::getString(di.getStatus()));
  if (di.isMonochrome())
    return internal_error(quoted(name) + ": DICOM colour image decoded as monochrome");
  if (int(di.getWidth()) != cols || int(di.getHeight()) != rows)
    return internal_error(quoted(name) + ": DICOM image size mismatch");
  const void* out = di.getOutputData(8, 0, 0);
  if (out == nullptr)
    return invalid_argument(quoted(name) + ": cannot render DICOM colour image: " +
                            DicomImage::getString(di.getStatus()));
  const size_t n = size_t(rows) * size_t(cols) * 3;
  const uint8_t* p = static_cast<const uint8_t*>(out);
  Image img;
  img.width = cols;
  img.height = rows;
  img.channels = 3;
  img.u8.assign(p, p + n);
  return img;
}

}  // namespace

Result<Image> decode_dicom(const uint8_t* data, size_t size, const std::string& name,
                           const DecodeLimits& limits) {
  dicom_global_init();
  if (size == 0) return invalid_argument(quoted(name) + ": empty DICOM file");
  const bool looks_like_dicom = detect_image_format(data, size) == ImageFormat::kDicom;
  try {
    DcmInputBufferStream stream;
    stream.setBuffer(data, offile_off_t(size));
    stream.setEos();
    DcmFileFormat ff;
    ff.setReadMode(ERM_autoDetect);  // with or without meta header / preamble
    ff.transferInit();
    OFCondition cond = ff.read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    ff.transferEnd();
    const offile_off_t consumed = stream.tell();
    stream.releaseBuffer();
    if (cond.bad()) {
      std::string why = "corrupt DICOM file";
      if (cond == EC_InvalidStream || cond == EC_StreamNotifyClient)
        why = "truncated or corrupt DICOM file (an element extends past the end of the data)";
      if (!looks_like_dicom)
        why = "not a DICOM file: no 'DICM' marker at offset 128 and the data does not start "
              "with a DICOM element (first bytes " + hex_prefix(data, size) + ")";
      return invalid_argument(quoted(name) + ": " + why + "; DCMTK: " + cond.text());
    }

    // Transfer syntax: refuse what free DCMTK cannot decode before touching the pixels.
    DcmDataset* ds = ff.getDataset();
    const E_TransferSyntax xfer = ds->getOriginalXfer();
    const DcmXfer xf(xfer);
    OFString meta_uid;
    ff.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, meta_uid);
    const std::string uid = trim(meta_uid.c_str()).empty() ? xf.getXferID()
                                                           : trim(meta_uid.c_str());
    const bool j2k = xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000 ||
                     xfer == EXS_JPEG2000MulticomponentLosslessOnly ||
                     xfer == EXS_JPEG2000Multicomponent || is_jpeg2000_uid(uid);
    if (j2k)
      return unsupported(quoted(name) + ": JPEG 2000 transfer syntax (" + uid +
                         ") is not supported: the free DCMTK has no JPEG 2000 decoder; "
                         "transcode the file first (e.g. gdcmconv --raw)");
    if (xf.isEncapsulated() && !xfer_has_codec(xfer))
      return unsupported(quoted(name) + ": DICOM transfer syntax '" + xf.getXferName() + "' (" +
                         uid + ") is not supported");

    DcmElement* pix = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, pix).bad() || pix == nullptr) {
      if (ds->tagExists(DCM_FloatPixelData) || ds->tagExists(DCM_DoubleFloatPixelData))
        return unsupported(quoted(name) + ": DICOM float/double pixel data is not supported");
      OFString sop;
      ds->findAndGetOFString(DCM_SOPClassUID, sop);
      std::string msg = quoted(name) + ": DICOM file has no Pixel Data (7FE0,0010) - not an image, or truncated";
      if (!sop.empty()) msg += " (SOP class " + std::string(sop.c_str()) + ")";
      if (consumed < offile_off_t(size))
        msg += "; parsing stopped at byte " + std::to_string(consumed) + " of " +
               std::to_string(size) + " - the file is probably truncated";
      return invalid_argument(msg);
    }
    if (xfer == EXS_RLELossless) RETURN_IF_ERROR(check_rle_fragments(ds, pix, name));
    Uint16 rows = 0, cols = 0, spp = 1;
    ds->findAndGetUint16(DCM_Rows, rows);
    ds->findAndGetUint16(DCM_Columns, cols);
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad()) spp = 1;
    if (rows == 0 || cols == 0)
      return invalid_argument(quoted(name) + ": DICOM Rows/Columns missing or zero");
    if (int64_t(rows) * int64_t(cols) > limits.max_pixels)
      return too_many_pixels(name, "DICOM", cols, rows, limits);
    OFString pi_str;
    ds->findAndGetOFString(DCM_PhotometricInterpretation, pi_str);
    const std::string pi = trim(pi_str.c_str());
    if (spp == 1 && (pi == "MONOCHROME1" || pi == "MONOCHROME2" || pi.empty()))
      return dicom_monochrome(ds, pix, name, rows, cols, pi == "MONOCHROME1");
    if (spp == 3 || pi == "PALETTE COLOR")
      return dicom_color(&ff, xfer, name, rows, cols);
    return unsupported(quoted(name) + ": DICOM PhotometricInterpretation '" + pi +
                       "' with SamplesPerPixel=" + std::to_string(spp) + " is not supported");
  } catch (const std::bad_alloc&) {
    return invalid_argument(quoted(name) + ": out of memory while decoding DICOM");
  }
}

// ------------------------------------------------------------------------------------------
// Dispatch
// ------------------------------------------------------------------------------------------

ImageFormat detect_image_format(const uint8_t* d, size_t n) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= 8 && std::memcmp(d, kPng, 8) == 0) return ImageFormat::kPng;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat::kJpeg;
  if (n >= 132 && std::memcmp(d + 128, "DICM", 4) == 0) return ImageFormat::kDicom;
  if (n >= 4 && std::memcmp(d, "DICM", 4) == 0) return ImageFormat::kDicom;
  // Raw data set without preamble/meta: first element normally in group 0002 or 0008
  // (little endian, or big endian), with an even element number, followed by a plausible
  // explicit VR or an implicit 4-byte length.
  if (n >= 8) {
    const uint16_t g_le = uint16_t(d[0] | (d[1] << 8));
    const uint16_t g_be = uint16_t((d[0] << 8) | d[1]);
    const bool group_ok = g_le == 0x0002 || g_le == 0x0008 || g_be == 0x0002 || g_be == 0x0008;
    if (group_ok) {
      const bool vr_alpha = d[4] >= 'A' && d[4] <= 'Z' && d[5] >= 'A' && d[5] <= 'Z';
      const uint32_t len_le = uint32_t(d[4]) | (uint32_t(d[5]) << 8) | (uint32_t(d[6]) << 16) |
                              (uint32_t(d[7]) << 24);
      if (vr_alpha || len_le < n) return ImageFormat::kDicom;
    }
  }
  return ImageFormat::kUnknown;
}

Result<Image> decode_image_bytes(const uint8_t* data, size_t size, const std::string& name,
                                 const DecodeLimits& limits) {
  if (data == nullptr || size == 0) return invalid_argument(quoted(name) + ": empty image file");
  switch (detect_image_format(data, size)) {
    case ImageFormat::kPng: return decode_png(data, size, name, limits);
    case ImageFormat::kJpeg: return decode_jpeg(data, size, name, limits);
    case ImageFormat::kDicom: return decode_dicom(data, size, name, limits);
    default: break;
  }
  // Unrecognised signature but a DICOM file name: let DCMTK try (and explain the failure).
  if (has_dicom_extension(name)) return decode_dicom(data, size, name, limits);
  return unsupported(quoted(name) + ": unrecognised image format (expected PNG, JPEG or DICOM)");
}

Result<Image> decode_image_file(const std::string& path, const DecodeLimits& limits) {
  RETURN_IF_ERROR(check_regular_file(path));  // /dev/zero read 2 GiB of zeros first, a FIFO blocked
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int e = errno;
    if (e == ENOENT) return not_found(quoted(path) + ": no such file");
    return io_error(quoted(path) + ": cannot open: " + std::strerror(e));
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, std::fclose);
  std::vector<uint8_t> buf;
  if (std::fseek(f, 0, SEEK_END) == 0) {
    const long sz = std::ftell(f);
    if (sz > limits.max_file_bytes)
      return invalid_argument(quoted(path) + ": file is larger than the " +
                              std::to_string(limits.max_file_bytes) + " byte limit");
    if (sz > 0) buf.reserve(size_t(sz));
    std::fseek(f, 0, SEEK_SET);
  }
  uint8_t chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0) {
    buf.insert(buf.end(), chunk, chunk + got);
    if (int64_t(buf.size()) > limits.max_file_bytes)
      return invalid_argument(quoted(path) + ": file is larger than the " +
                              std::to_string(limits.max_file_bytes) + " byte limit");
  }
  if (std::ferror(f)) return io_error(quoted(path) + ": read error: " + std::strerror(errno));
  return decode_image_bytes(buf.data(), buf.size(), path, limits);
}

}  // namespace medq
