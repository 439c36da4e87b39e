// libFuzzer target: image decoding (PNG via libpng, JPEG via libjpeg-turbo,
// DICOM via DCMTK) through decode_image_bytes, which sniffs the format. The
// first byte of the input may also force one decoder (so that e.g. the DICOM
// parser also sees data that does not start with a DICOM signature):
//   'P' -> decode_png, 'J' -> decode_jpeg, 'D' -> decode_dicom (rest of the input).
// Errors are fine; crashes, hangs, ASan reports and huge allocations are bugs.
#include <cstddef>
#include <cstdint>

#include "data/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medq::DecodeLimits limits;
  limits.max_pixels = 1 << 20;  // keeps runs fast and within the rss limit
  limits.max_file_bytes = 64 << 20;
  auto check = [](const medq::Result<medq::Image>& r) {
    if (!r.is_ok()) return;
    const medq::Image& im = r.value();
    if (!im.well_formed()) __builtin_trap();
  };
  check(medq::decode_image_bytes(data, size, "fuzz", limits));
  if (size >= 1) {
    const uint8_t* rest = data + 1;
    size_t n = size - 1;
    switch (data[0]) {
      case 'P': check(medq::decode_png(rest, n, "fuzz.png", limits)); break;
      case 'J': check(medq::decode_jpeg(rest, n, "fuzz.jpg", limits)); break;
      case 'D': check(medq::decode_dicom(rest, n, "fuzz.dcm", limits)); break;
      default: break;
    }
  }
  return 0;
}
