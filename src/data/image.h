// Image decoding for medq: PNG (libpng), JPEG (libjpeg-turbo) and DICOM (DCMTK).
//
// Decoded samples are HWC interleaved, on a 0..255 scale. 8-bit sources (PNG, JPEG, colour
// DICOM) are kept as bytes (Image::u8): resizing and normalisation work on them directly, as
// Pillow does on mode "L"/"RGB" images, with no float copy. Monochrome DICOM gives non-integral
// values after windowing (Image::pixels, float on purpose so that resize/preprocess lose nothing).
//
// Channels of a decoded image: 1 (grey) or 3 (RGB). Alpha is always dropped (no compositing),
// which is what Pillow's Image.convert('RGB') does.
//
// Pillow parity (Pillow 9.4 on Debian 12, same system libjpeg-turbo):
//  * JPEG: decoded with libjpeg defaults (JDCT_ISLOW, fancy upsampling, no scaling), out colour
//    space = GRAYSCALE / RGB / CMYK by component count, exactly like Pillow's JpegDecode.c.
//    Result is bit-identical to Image.open(p).convert('RGB') (grey JPEGs give 1 channel here;
//    to_color(…, "RGB") replicates them, as Pillow does). CMYK JPEGs are converted to RGB with
//    Pillow's cmyk2rgb formula, assuming Adobe-inverted CMYK as Pillow does.
//  * PNG: 1/2/4-bit grey expanded to 0..255 (x255/x85/x17, as Pillow's L;1/L;2/L;4 unpackers),
//    palette expanded through the PLTE (tRNS ignored), no gamma correction (Pillow ignores gAMA).
//    16-bit samples are reduced to their high byte (v >> 8). That is exactly what Pillow does
//    for 16-bit RGB, RGBA and grey+alpha PNGs. For 16-bit *grey* PNGs Pillow opens mode "I" and
//    convert('RGB') clips values >255 to 255 (useless for real 16-bit data); medq deliberately
//    uses v >> 8 there instead.
//  * Truncated JPEG/PNG data is an error (Pillow raises "image file is truncated" by default).
//
// DICOM (DCMTK): JPEG baseline/extended/lossless, JPEG-LS and RLE encapsulated syntaxes plus all
// native syntaxes (incl. big endian, implicit VR, files without preamble/meta header). Frame 0
// of multi-frame objects. Monochrome: stored value -> Modality transform (Rescale Slope/
// Intercept) -> VOI window (first WindowCenter/WindowWidth and VOILUTFunction if present,
// otherwise the min..max of the frame's modality values) -> 0..255 float; MONOCHROME1 inverted.
// Colour (RGB, YBR_*, PALETTE COLOR): converted to 8-bit RGB by DCMTK's dcmimage.
// JPEG 2000 (and other syntaxes without a free DCMTK codec) -> kUnsupported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace medq {

struct Image {
  int width = 0, height = 0, channels = 0;
  // The samples, HWC interleaved, 0..255 scale, width*height*channels of them, in exactly one of:
  std::vector<uint8_t> u8;    // 8-bit sources
  std::vector<float> pixels;  // everything else (windowed DICOM, images built as float)

  bool is_u8() const { return !u8.empty(); }
  size_t size() const { return is_u8() ? u8.size() : pixels.size(); }
  float at(size_t i) const { return is_u8() ? float(u8[i]) : pixels[i]; }
  // Positive dimensions and one storage holding exactly width*height*channels samples.
  bool well_formed() const {
    return width > 0 && height > 0 && channels > 0 && (u8.empty() || pixels.empty()) &&
           size() == size_t(width) * size_t(height) * size_t(channels);
  }
};

struct DecodeLimits {
  // Maximum width*height of a decoded image (checked from the header, before any pixel buffer
  // is allocated) - a guard against decompression bombs.
  int64_t max_pixels = 100000000;
  // Maximum size of an input file read by decode_image_file.
  int64_t max_file_bytes = int64_t(1) << 31;
};

enum class ImageFormat { kUnknown, kPng, kJpeg, kDicom };

// Sniffs the format from the first bytes (PNG/JPEG signature, "DICM" at 0 or 128, or a DICOM
// data set without preamble/meta header that starts with a group 0002/0008 tag).
ImageFormat detect_image_format(const uint8_t* data, size_t size);

Result<Image> decode_image_file(const std::string& path, const DecodeLimits& limits = {});
// `name` is only used in error messages.
Result<Image> decode_image_bytes(const uint8_t* data, size_t size, const std::string& name,
                                 const DecodeLimits& limits = {});

// Format-specific entry points (used by decode_image_bytes; exposed for tests/tools).
Result<Image> decode_png(const uint8_t* data, size_t size, const std::string& name,
                         const DecodeLimits& limits = {});
Result<Image> decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                          const DecodeLimits& limits = {});
Result<Image> decode_dicom(const uint8_t* data, size_t size, const std::string& name,
                           const DecodeLimits& limits = {});

}  // namespace medq
