// Tests for src/data/image.{h,cc} and src/data/preprocess.{h,cc}.
//
// Fixtures in tests/data/image/ come from tests/unit/gen_pillow_ref.py (Pillow 9.4 + numpy).
// Tests that need the shared real data (MEDQ_SHARED_DATA) skip when it is absent.
#include <gtest/gtest.h>

#include <algorithm>

#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/image.h"
#include "data/preprocess.h"

namespace medq {
namespace {

const std::string kFixtures = std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/";
const std::string kShared = MEDQ_SHARED_DATA;
const char* kModelPreprocess =
    R"({"color": "RGB", "resize": [128, 128], "interpolation": "bilinear", )"
    R"("scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], )"
    R"("std": [0.229, 0.224, 0.225], "layout": "NCHW"})";

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::vector<uint8_t> read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

template <class T>
std::vector<T> read_raw(const std::string& p) {
  std::vector<uint8_t> b = read_bytes(p);
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
  return v;
}

nlohmann::json manifest() {
  std::ifstream f(kFixtures + "manifest.json");
  return nlohmann::json::parse(f);
}

#define SKIP_WITHOUT_SHARED_DATA()                                                          \
  do {                                                                                      \
    if (!exists(kShared + "/README.md"))                                                    \
      GTEST_SKIP() << "shared data not found at " << kShared                                \
                   << " (expected ../shared/data next to the project); skipping real-data test"; \
  } while (0)

std::string dicom(const std::string& f) { return kShared + "/dicom/" + f; }

// Exact comparison of an Image with uint8 HWC reference (RGB).
void expect_equals_u8(const Image& img, const std::vector<uint8_t>& ref, const std::string& what) {
  ASSERT_TRUE(img.well_formed()) << what;
  ASSERT_EQ(img.size(), ref.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (img.at(i) != float(ref[i])) ++bad;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size() << " values differ";
}

// ---------------------------------------------------------------------------------------------
// PNG / JPEG decoding
// ---------------------------------------------------------------------------------------------

TEST(ImageDecode, PillowParityOnFixtures) {
  const auto m = manifest();
  ASSERT_GE(m["decode"].size(), 15u);
  for (const auto& e : m["decode"]) {
    const std::string file = e["file"];
    auto r = decode_image_file(kFixtures + file);
    ASSERT_TRUE(r.is_ok()) << file << ": " << r.status().message();
    EXPECT_EQ(r->width, e["width"].get<int>()) << file;
    EXPECT_EQ(r->height, e["height"].get<int>()) << file;
    EXPECT_TRUE(r->channels == 1 || r->channels == 3) << file;
    Image rgb = to_color(r.value(), "RGB");
    expect_equals_u8(rgb, read_raw<uint8_t>(kFixtures + file + ".rgb.bin"), file);
  }
}

TEST(ImageDecode, ChannelsOfDecodedImages) {
  auto gray = decode_image_file(kFixtures + "synth_gray.jpg");
  ASSERT_TRUE(gray.is_ok());
  EXPECT_EQ(gray->channels, 1);
  auto la = decode_image_file(kFixtures + "la8.png");
  ASSERT_TRUE(la.is_ok());
  EXPECT_EQ(la->channels, 1);  // alpha dropped
  auto rgba = decode_image_file(kFixtures + "rgba16.png");
  ASSERT_TRUE(rgba.is_ok());
  EXPECT_EQ(rgba->channels, 3);
}

TEST(ImageDecode, DetectFormat) {
  auto png = read_bytes(kFixtures + "rgb8.png");
  auto jpg = read_bytes(kFixtures + "synth_420.jpg");
  EXPECT_EQ(detect_image_format(png.data(), png.size()), ImageFormat::kPng);
  EXPECT_EQ(detect_image_format(jpg.data(), jpg.size()), ImageFormat::kJpeg);
  std::vector<uint8_t> dcm(132, 0);
  std::memcpy(&dcm[128], "DICM", 4);
  EXPECT_EQ(detect_image_format(dcm.data(), dcm.size()), ImageFormat::kDicom);
  const uint8_t text[] = "hello world, not an image";
  EXPECT_EQ(detect_image_format(text, sizeof text), ImageFormat::kUnknown);
  auto r = decode_image_bytes(text, sizeof text, "note.txt");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("note.txt"), std::string::npos);
}

TEST(ImageDecode, MissingAndEmptyFiles) {
  auto r = decode_image_file(kFixtures + "does_not_exist.png");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("does_not_exist.png"), std::string::npos);
  auto e = decode_image_bytes(nullptr, 0, "empty.png");
  EXPECT_FALSE(e.is_ok());
}

// Every strict prefix that cuts into the image data must fail cleanly (never crash/exit).
void check_truncations(const std::string& file, size_t must_fail_below) {
  const auto bytes = read_bytes(kFixtures + file);
  ASSERT_FALSE(bytes.empty());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = decode_image_bytes(bytes.data(), n, file);
    if (n < must_fail_below) {
      ASSERT_FALSE(r.is_ok()) << file << " truncated to " << n << " bytes decoded";
      EXPECT_NE(r.status().message().find(file), std::string::npos) << r.status().message();
    }
  }
}

TEST(ImageDecode, TruncatedPngFails) {
  for (const char* f : {"rgb8.png", "rgb16.png", "palette4.png", "rgb8_interlaced.png"}) {
    const size_t size = read_bytes(kFixtures + f).size();
    check_truncations(f, size - 12);  // the last 12 bytes are IEND (optional, as in Pillow)
  }
}

TEST(ImageDecode, TruncatedJpegFails) {
  for (const char* f : {"synth_420.jpg", "synth_progressive.jpg", "synth_gray.jpg"}) {
    const size_t size = read_bytes(kFixtures + f).size();
    check_truncations(f, size - size / 20);
    auto r = decode_image_file(kFixtures + f);
    ASSERT_TRUE(r.is_ok());
  }
  // Truncated at half: error text says so.
  auto bytes = read_bytes(kFixtures + "synth_420.jpg");
  auto r = decode_image_bytes(bytes.data(), bytes.size() / 2, "half.jpg");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
}

TEST(ImageDecode, CorruptBytesNeverCrash) {
  uint32_t seed = 12345;
  auto rnd = [&seed]() { return seed = seed * 1664525u + 1013904223u; };
  for (const char* f : {"synth_420.jpg", "synth_progressive.jpg", "rgb8.png", "gray4.png",
                        "palette8_trns.png", "rgb8_interlaced.png"}) {
    const auto orig = read_bytes(kFixtures + f);
    for (int trial = 0; trial < 300; ++trial) {
      auto b = orig;
      const int flips = 1 + int(rnd() % 8);
      for (int k = 0; k < flips; ++k) b[(rnd() >> 8) % b.size()] ^= uint8_t(1u << (rnd() % 8));
      auto r = decode_image_bytes(b.data(), b.size(), f);
      if (r.is_ok()) {
        EXPECT_GT(r->width, 0);
        EXPECT_TRUE(r->well_formed());
      }
    }
  }
}

// Minimal CRC-32 (PNG chunk CRC) so the test can forge headers.
uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

TEST(ImageDecode, DecompressionBombRejectedBeforeAllocation) {
  // PNG claiming 60000 x 60000 RGB (10.8 GB decoded) in a few bytes.
  auto png = read_bytes(kFixtures + "rgb8.png");
  auto put32 = [&](size_t off, uint32_t v) {
    png[off] = uint8_t(v >> 24); png[off + 1] = uint8_t(v >> 16);
    png[off + 2] = uint8_t(v >> 8); png[off + 3] = uint8_t(v);
  };
  put32(16, 60000);  // IHDR width
  put32(20, 60000);  // IHDR height
  put32(29, crc32(&png[12], 17));
  auto r = decode_image_bytes(png.data(), png.size(), "bomb.png");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("decode limit"), std::string::npos) << r.status().message();

  // JPEG with SOF0 patched to 65000 x 65000.
  auto jpg = read_bytes(kFixtures + "synth_420.jpg");
  bool patched = false;
  for (size_t i = 2; i + 9 < jpg.size(); ++i) {
    if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
      jpg[i + 5] = 0xFD; jpg[i + 6] = 0xE8;  // height 65000
      jpg[i + 7] = 0xFD; jpg[i + 8] = 0xE8;  // width 65000
      patched = true;
      break;
    }
  }
  ASSERT_TRUE(patched);
  r = decode_image_bytes(jpg.data(), jpg.size(), "bomb.jpg");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("decode limit"), std::string::npos) << r.status().message();

  // Configurable limit.
  DecodeLimits tiny;
  tiny.max_pixels = 100;
  r = decode_image_file(kFixtures + "synth_420.jpg", tiny);
  EXPECT_FALSE(r.is_ok());
  r = decode_image_file(kFixtures + "rgb8.png", tiny);  // 63 pixels: fine
  EXPECT_TRUE(r.is_ok());
}

// ---------------------------------------------------------------------------------------------
// DICOM
// ---------------------------------------------------------------------------------------------

TEST(DicomDecode, AllSharedFiles) {
  SKIP_WITHOUT_SHARED_DATA();
  struct Case {
    const char* file;
    bool ok;
    int w, h, c;
    StatusCode code;
    const char* msg;
  };
  const Case cases[] = {
      {"CT_small.dcm", true, 128, 128, 1, StatusCode::kOk, ""},
      {"MR_small.dcm", true, 64, 64, 1, StatusCode::kOk, ""},
      {"MR_small_RLE.dcm", true, 64, 64, 1, StatusCode::kOk, ""},
      {"MR_small_bigendian.dcm", true, 64, 64, 1, StatusCode::kOk, ""},
      {"MR_small_jpeg_ls_lossless.dcm", true, 64, 64, 1, StatusCode::kOk, ""},
      {"SC_rgb_jpeg_dcmtk.dcm", true, 100, 100, 3, StatusCode::kOk, ""},
      {"badVR.dcm", true, 10, 10, 1, StatusCode::kOk, ""},
      {"rtdose.dcm", true, 10, 10, 1, StatusCode::kOk, ""},
      {"liver_1frame.dcm", true, 512, 512, 1, StatusCode::kOk, ""},
      {"JPEG2000.dcm", false, 0, 0, 0, StatusCode::kUnsupported, "JPEG 2000"},
      {"MR_truncated.dcm", false, 0, 0, 0, StatusCode::kInvalidArgument, "truncated"},
      {"no_meta.dcm", false, 0, 0, 0, StatusCode::kInvalidArgument, "not a DICOM file"},
  };
  for (const Case& c : cases) {
    auto r = decode_image_file(dicom(c.file));
    if (c.ok) {
      ASSERT_TRUE(r.is_ok()) << c.file << ": " << r.status().message();
      EXPECT_EQ(r->width, c.w) << c.file;
      EXPECT_EQ(r->height, c.h) << c.file;
      EXPECT_EQ(r->channels, c.c) << c.file;
      ASSERT_TRUE(r->well_formed()) << c.file;
      for (size_t i = 0; i < r->size(); ++i) ASSERT_TRUE(r->at(i) >= 0.f && r->at(i) <= 255.f) << c.file;
    } else {
      ASSERT_FALSE(r.is_ok()) << c.file;
      EXPECT_EQ(r.status().code(), c.code) << c.file << ": " << r.status().message();
      EXPECT_NE(r.status().message().find(c.msg), std::string::npos) << r.status().message();
      EXPECT_NE(r.status().message().find(c.file), std::string::npos) << r.status().message();
    }
  }
}

TEST(DicomDecode, TransferSyntaxesAgree) {
  SKIP_WITHOUT_SHARED_DATA();
  auto ref = decode_image_file(dicom("MR_small.dcm"));
  ASSERT_TRUE(ref.is_ok());
  for (const char* f : {"MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                        "MR_small_jpeg_ls_lossless.dcm"}) {
    auto r = decode_image_file(dicom(f));
    ASSERT_TRUE(r.is_ok()) << f << ": " << r.status().message();
    EXPECT_EQ(r->pixels, ref->pixels) << f;
  }
}

TEST(DicomDecode, ModalityAndWindowValues) {
  SKIP_WITHOUT_SHARED_DATA();
  // Expected values from an independent numpy parse of the files (stored value -> rescale ->
  // first WindowCenter/Width (linear VOI function of PS3.3 C.11.2.1.2) or min..max).
  auto mr = decode_image_file(dicom("MR_small.dcm"));  // window c=600 w=1600
  ASSERT_TRUE(mr.is_ok());
  EXPECT_FLOAT_EQ(mr->pixels[0], 176.21951293945312f);
  EXPECT_FLOAT_EQ(mr->pixels[32 * 64 + 32], 60.9193229675293f);
  EXPECT_FLOAT_EQ(mr->pixels[16 * 64 + 21], 72.56097412109375f);
  auto ct = decode_image_file(dicom("CT_small.dcm"));  // intercept -1024, no window: min..max
  ASSERT_TRUE(ct.is_ok());
  EXPECT_FLOAT_EQ(ct->pixels[0], 5.809500694274902f);
  EXPECT_FLOAT_EQ(ct->pixels[64 * 128 + 64], 222.49151611328125f);
  float mn = 255, mx = 0;
  for (float v : ct->pixels) { mn = std::min(mn, v); mx = std::max(mx, v); }
  EXPECT_EQ(mn, 0.f);
  EXPECT_EQ(mx, 255.f);
  auto rgb = decode_image_file(dicom("SC_rgb_jpeg_dcmtk.dcm"));  // = Pillow decode of its JPEG
  ASSERT_TRUE(rgb.is_ok());
  EXPECT_TRUE(rgb->is_u8());  // colour DICOM is rendered to 8 bits
  EXPECT_EQ(rgb->at(0), 254.f);
  EXPECT_EQ(rgb->at(1), 0.f);
  EXPECT_EQ(rgb->at(2), 0.f);
  const size_t mid = (50 * 100 + 50) * 3;
  EXPECT_EQ(rgb->at(mid), 125.f);
  EXPECT_EQ(rgb->at(mid + 1), 130.f);
  EXPECT_EQ(rgb->at(mid + 2), 255.f);
  auto seg = decode_image_file(dicom("liver_1frame.dcm"));  // 1-bit segmentation
  ASSERT_TRUE(seg.is_ok());
  std::set<float> values(seg->pixels.begin(), seg->pixels.end());
  EXPECT_EQ(values, (std::set<float>{0.f, 255.f}));
}

TEST(DicomDecode, DatasetWithoutPreambleOrMeta) {
  SKIP_WITHOUT_SHARED_DATA();
  // MR_small with the 128-byte preamble, "DICM" and the (0002,xxxx) meta group removed.
  auto bytes = read_bytes(dicom("MR_small.dcm"));
  ASSERT_GT(bytes.size(), 200u);
  ASSERT_EQ(std::memcmp(&bytes[128], "DICM", 4), 0);
  ASSERT_EQ(bytes[132], 0x02);  // (0002,0000) UL group length
  uint32_t group_len;
  std::memcpy(&group_len, &bytes[140], 4);
  const size_t start = 144 + group_len;
  std::vector<uint8_t> raw(bytes.begin() + long(start), bytes.end());
  EXPECT_EQ(detect_image_format(raw.data(), raw.size()), ImageFormat::kDicom);
  auto r = decode_image_bytes(raw.data(), raw.size(), "MR_small_nometa");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  auto ref = decode_image_file(dicom("MR_small.dcm"));
  ASSERT_TRUE(ref.is_ok());
  EXPECT_EQ(r->pixels, ref->pixels);

  // no_meta.dcm has one stray byte (0x20) before its first element; the data set after it
  // decodes fine through the no-meta path.
  auto nm = read_bytes(dicom("no_meta.dcm"));
  ASSERT_EQ(nm[0], 0x20);
  auto r2 = decode_image_bytes(nm.data() + 1, nm.size() - 1, "no_meta+1");
  ASSERT_TRUE(r2.is_ok()) << r2.status().message();
  EXPECT_EQ(r2->width, 128);
  EXPECT_EQ(r2->height, 128);
}

TEST(DicomDecode, TruncationsFailCleanly) {
  SKIP_WITHOUT_SHARED_DATA();
  for (const char* f : {"MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                        "SC_rgb_jpeg_dcmtk.dcm"}) {
    const auto bytes = read_bytes(dicom(f));
    // Some of these files end with a 138-byte trailing-padding element (FFFC,FFFC) that is
    // not needed for the image; any cut before it must fail.
    const size_t must_fail_below = bytes.size() - 138;
    for (size_t n = 0; n < bytes.size(); n += 13) {
      auto r = decode_image_bytes(bytes.data(), n, f);
      if (n < must_fail_below) {
        ASSERT_FALSE(r.is_ok()) << f << " truncated to " << n;
      }
    }
  }
}

TEST(DicomDecode, CorruptRleHeadersAreErrorsNotCrashes) {
  // MR_small_RLE.dcm with its RLE header edited: DCMTK 3.6.7's decoder trusted the segment
  // offsets and read out of bounds (SIGSEGV at 0x07000000; smaller ones silently).
  SKIP_WITHOUT_SHARED_DATA();
  const auto good = read_bytes(dicom("MR_small_RLE.dcm"));
  ASSERT_TRUE(decode_image_bytes(good.data(), good.size(), "rle.dcm").is_ok());
  const std::string hdr("\x02\x00\x00\x00\x40\x00\x00\x00", 8);  // 2 segments, the first at 64
  const auto at = std::search(good.begin(), good.end(), hdr.begin(), hdr.end());
  ASSERT_NE(at, good.end());
  const size_t h = static_cast<size_t>(at - good.begin());
  auto patched = [&](size_t off, uint32_t v) {
    auto b = good;
    for (int i = 0; i < 4; ++i) b[h + off + i] = static_cast<uint8_t>(v >> (8 * i));
    return b;
  };
  for (const auto& [off, v] : std::vector<std::pair<size_t, uint32_t>>{
           {8, 0x07000000u}, {8, 0x00002000u}, {8, 40u}, {4, 128u}, {0, 0u}, {0, 16u}, {0, 1u}}) {
    const auto b = patched(off, v);
    auto r = decode_image_bytes(b.data(), b.size(), "rle.dcm");
    ASSERT_FALSE(r.is_ok()) << "header word " << off << " = " << v;
    EXPECT_NE(r.status().message().find("RLE fragment"), std::string::npos) << r.status().message();
  }
}

TEST(DicomDecode, PixelLimit) {
  SKIP_WITHOUT_SHARED_DATA();
  DecodeLimits lim;
  lim.max_pixels = 1000;
  auto r = decode_image_file(dicom("MR_small.dcm"), lim);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("decode limit"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Preprocessing
// ---------------------------------------------------------------------------------------------

TEST(Preprocess, ParseModelJson) {
  auto r = parse_preprocess_json(kModelPreprocess);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->color, "RGB");
  EXPECT_EQ(r->resize_w, 128);
  EXPECT_EQ(r->resize_h, 128);
  EXPECT_EQ(r->interpolation, "bilinear");
  EXPECT_FLOAT_EQ(r->scale, 1.f / 255);
  EXPECT_EQ(r->mean, (std::vector<float>{0.485f, 0.456f, 0.406f}));
  EXPECT_EQ(r->std, (std::vector<float>{0.229f, 0.224f, 0.225f}));
  EXPECT_EQ(r->layout, "NCHW");

  auto wh = parse_preprocess_json(R"({"resize": [64, 32]})");  // [width, height]
  ASSERT_TRUE(wh.is_ok());
  EXPECT_EQ(wh->resize_w, 64);
  EXPECT_EQ(wh->resize_h, 32);
}

TEST(Preprocess, ParseErrorsNameTheField) {
  struct Bad {
    const char* json;
    const char* needle;
  };
  const Bad bad[] = {
      {R"({"colour": "RGB"})", "colour"},
      {R"({"resize": "128"})", "resize"},
      {R"({"resize": [128]})", "resize"},
      {R"({"resize": [128.5, 3]})", "resize"},
      {R"({"scale": "x"})", "scale"},
      {R"({"mean": [0.1, "a", 0.3]})", "mean"},
      {R"({"std": [0.1, 0.0, 0.3]})", "std"},
      {R"({"mean": [0.1, 0.2]})", "mean"},
      {R"({"layout": 5})", "layout"},
      {R"({"layout": "CHW"})", "layout"},
      {R"({"interpolation": "area"})", "interpolation"},
      {R"({"color": "CMYK"})", "color"},
      {R"([1, 2])", "object"},
      {R"({"color": )", "JSON"},
  };
  for (const Bad& b : bad) {
    auto r = parse_preprocess_json(b.json);
    ASSERT_FALSE(r.is_ok()) << b.json;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(b.needle), std::string::npos)
        << b.json << " -> " << r.status().message();
  }
}

TEST(Preprocess, ToColorMatchesPillow) {
  // gray8.png was written by Pillow as Image.fromarray(rgb8).convert('L').
  auto rgb = decode_image_file(kFixtures + "rgb8.png");
  auto gray = decode_image_file(kFixtures + "gray8.png");
  ASSERT_TRUE(rgb.is_ok() && gray.is_ok());
  Image l = to_color(rgb.value(), "L");
  EXPECT_EQ(l.channels, 1);
  ASSERT_TRUE(l.is_u8() && gray->is_u8());  // 8-bit sources stay 8-bit
  EXPECT_EQ(l.u8, gray->u8);
  Image back = to_color(gray.value(), "RGB");
  ASSERT_EQ(back.channels, 3);
  ASSERT_TRUE(back.well_formed());
  for (size_t i = 0; i < gray->size(); ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(back.u8[i * 3 + c], gray->u8[i]);
  // The same conversions on the float representation of the same samples give the same values.
  Image rgbf = rgb.value(), grayf = gray.value();
  rgbf.pixels.assign(rgbf.u8.begin(), rgbf.u8.end());
  rgbf.u8.clear();
  grayf.pixels.assign(grayf.u8.begin(), grayf.u8.end());
  grayf.u8.clear();
  Image lf = to_color(rgbf, "L"), backf = to_color(grayf, "RGB");
  ASSERT_TRUE(lf.well_formed() && backf.well_formed() && !lf.is_u8() && !backf.is_u8());
  for (size_t i = 0; i < l.size(); ++i) ASSERT_EQ(lf.at(i), l.at(i)) << i;
  for (size_t i = 0; i < back.size(); ++i) ASSERT_EQ(backf.at(i), back.at(i)) << i;
}

TEST(Preprocess, ResizeUint8MatchesPillow) {
  const auto m = manifest();
  ASSERT_FALSE(m["resize"].empty());
  for (const auto& e : m["resize"]) {
    auto src = decode_image_file(kFixtures + e["source"].get<std::string>());
    ASSERT_TRUE(src.is_ok());
    const std::string filter = e["filter"];
    auto r = resize(src.value(), e["width"].get<int>(), e["height"].get<int>(), filter);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    expect_equals_u8(r.value(), read_raw<uint8_t>(kFixtures + e["ref"].get<std::string>()),
                     e["ref"].get<std::string>());
  }
}

TEST(Preprocess, ResizeFloatMatchesPillowModeF) {
  Image img;
  img.width = 20;
  img.height = 15;
  img.channels = 1;
  for (int y = 0; y < 15; ++y)
    for (int x = 0; x < 20; ++x) img.pixels.push_back(float(((7 * x + 13 * y) % 256) * 0.5 + 0.25));
  ASSERT_FALSE(is_uint8_image(img));
  const auto m = manifest();
  ASSERT_FALSE(m["resize_float"].empty());
  for (const auto& e : m["resize_float"]) {
    auto r = resize(img, e["width"].get<int>(), e["height"].get<int>(), e["filter"]);
    ASSERT_TRUE(r.is_ok());
    const auto ref = read_raw<float>(kFixtures + e["ref"].get<std::string>());
    ASSERT_FALSE(r->is_u8());
    ASSERT_EQ(r->pixels.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i)
      ASSERT_EQ(r->pixels[i], ref[i]) << e["ref"].get<std::string>() << " at " << i;
  }
}

TEST(Preprocess, ResizeEdgeCases) {
  auto src = decode_image_file(kFixtures + "rgb8.png");
  ASSERT_TRUE(src.is_ok());
  EXPECT_FALSE(resize(src.value(), 0, 5, "bilinear").is_ok());
  EXPECT_FALSE(resize(src.value(), 5, 5, "area").is_ok());
  auto same = resize(src.value(), src->width, src->height, "bicubic");
  ASSERT_TRUE(same.is_ok());
  EXPECT_EQ(same->u8, src->u8);
  auto one = resize(src.value(), 1, 1, "lanczos");
  ASSERT_TRUE(one.is_ok());
  EXPECT_EQ(one->size(), 3u);
  auto big = resize(src.value(), 100, 3, "bicubic");
  ASSERT_TRUE(big.is_ok());
  EXPECT_EQ(big->size(), 900u);
  Image bad = src.value();
  bad.pixels.assign(bad.u8.begin(), bad.u8.end());  // both storages filled: malformed
  EXPECT_FALSE(resize(bad, 5, 5, "bilinear").is_ok());
}

// Random 8-bit image, HWC.
Image random_u8_image(int w, int h, int c, uint32_t seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = c;
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size_t(w) * h * c; ++i) {
    x = x * 1664525u + 1013904223u;
    img.u8.push_back(uint8_t(x >> 24));
  }
  return img;
}

Image transposed(const Image& img) {
  Image t;
  t.width = img.height;
  t.height = img.width;
  t.channels = img.channels;
  t.u8.resize(img.u8.size());
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int b = 0; b < img.channels; ++b)
        t.u8[(size_t(x) * img.height + y) * img.channels + b] = img.u8[(size_t(y) * img.width + x) * img.channels + b];
  return t;
}

// The 8-bit horizontal pass (computed on transposed columns) against the vertical pass, which
// runs along rows like Pillow's and is checked against Pillow above: resizing only the width of
// an image equals transposing, resizing only the height, and transposing back. Every filter, up-
// and downscaling, 1 to 5 channels, sizes that are not multiples of the transpose block.
TEST(Preprocess, HorizontalResizeMatchesVerticalOnTheTranspose) {
  const char* filters[] = {"bilinear", "bicubic", "lanczos", "box", "hamming", "nearest"};
  const int sizes[][3] = {{224, 37, 128}, {33, 70, 150}, {300, 5, 7}, {64, 65, 1}, {1, 9, 40}, {97, 3, 96}};
  int checked = 0;
  for (int c = 1; c <= 5; ++c)
    for (const auto& sz : sizes)
      for (const char* f : filters) {
        const Image img = random_u8_image(sz[0], sz[1], c, uint32_t(c * 1000 + sz[0] + sz[2]));
        auto h = resize(img, sz[2], sz[1], f);
        auto v = resize(transposed(img), sz[1], sz[2], f);
        ASSERT_TRUE(h.is_ok() && v.is_ok()) << f;
        ASSERT_TRUE(h->is_u8() && v->is_u8()) << f;
        ASSERT_EQ(h->u8, transposed(v.value()).u8) << f << " " << sz[0] << "->" << sz[2] << " x" << c;
        // Both passes: the horizontal pass on only the rows the vertical pass needs equals the
        // horizontal pass on every row followed by the vertical pass.
        auto both = resize(img, sz[2], sz[1] / 2 + 1, f);
        auto steps = resize(h.value(), sz[2], sz[1] / 2 + 1, f);
        ASSERT_TRUE(both.is_ok() && steps.is_ok());
        ASSERT_EQ(both->u8, steps->u8) << f;
        ++checked;
      }
  EXPECT_EQ(checked, 5 * 6 * 6);
}

// The same samples as bytes or as integral floats preprocess to the same floats, and a grey
// image gives the same input as its RGB replication (the pipeline resizes grey images once).
TEST(Preprocess, RepresentationsAndGreyReplicationAgree) {
  PreprocessConfig cfg;
  cfg.mean = {0.485f, 0.456f, 0.406f};
  cfg.std = {0.229f, 0.224f, 0.225f};
  cfg.resize_w = 50;
  cfg.resize_h = 41;
  for (const char* layout : {"NCHW", "NHWC"})
    for (const char* interp : {"bilinear", "bicubic", "nearest"})
      for (int c : {1, 2, 3}) {
        cfg.layout = layout;
        cfg.interpolation = interp;
        const Image img = random_u8_image(73, 88, c, uint32_t(c));
        Image f = img;
        f.pixels.assign(f.u8.begin(), f.u8.end());
        f.u8.clear();
        auto a = preprocess_image(img, cfg), b = preprocess_image(f, cfg);
        auto rgb = preprocess_image(to_color(img, "RGB"), cfg);
        ASSERT_TRUE(a.is_ok() && b.is_ok() && rgb.is_ok()) << a.status().message();
        ASSERT_EQ(a->size(), size_t(3 * 50 * 41));
        EXPECT_EQ(a.value(), b.value()) << layout << " " << interp << " x" << c;
        EXPECT_EQ(a.value(), rgb.value()) << layout << " " << interp << " x" << c;
      }
  // Non-integral (windowed DICOM-like) grey samples: the float path commutes the same way.
  Image g;
  g.width = 31;
  g.height = 17;
  g.channels = 1;
  for (int i = 0; i < 31 * 17; ++i) g.pixels.push_back(float((i * 37) % 256) * 0.75f + 0.125f);
  cfg.layout = "NCHW";
  cfg.interpolation = "bilinear";
  auto a = preprocess_image(g, cfg), rgb = preprocess_image(to_color(g, "RGB"), cfg);
  ASSERT_TRUE(a.is_ok() && rgb.is_ok());
  EXPECT_EQ(a.value(), rgb.value());
}

TEST(Preprocess, LayoutsAndGray) {
  auto src = decode_image_file(kFixtures + "rgb8.png");
  ASSERT_TRUE(src.is_ok());
  PreprocessConfig cfg;
  cfg.mean = {0.5f, 0.25f, 0.125f};
  cfg.std = {2.f, 4.f, 8.f};
  auto nchw = preprocess_image(src.value(), cfg);
  cfg.layout = "NHWC";
  auto nhwc = preprocess_image(src.value(), cfg);
  ASSERT_TRUE(nchw.is_ok() && nhwc.is_ok());
  const int H = src->height, W = src->width;
  ASSERT_EQ(nchw->size(), size_t(3 * H * W));
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < H * W; ++i) {
      const float expect = (src->at(size_t(i) * 3 + c) / 255.f - cfg.mean[c]) / cfg.std[c];
      ASSERT_EQ((*nchw)[c * H * W + i], expect);
      ASSERT_EQ((*nhwc)[i * 3 + c], expect);
    }
  PreprocessConfig g;
  g.color = "L";
  g.mean = {0.5f};
  g.std = {0.5f};
  g.resize_w = 4;
  g.resize_h = 3;
  auto t = preprocess_image(src.value(), g);
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  EXPECT_EQ(t->size(), 12u);
  g.mean = {0.1f, 0.2f, 0.3f};  // 3 means for 1 channel
  EXPECT_FALSE(preprocess_image(src.value(), g).is_ok());
}

// Models' contract on real images: Pillow convert('RGB').resize(BILINEAR), /255, -mean, /std.
TEST(Preprocess, BrainImagesMatchPillowAndNumpy) {
  SKIP_WITHOUT_SHARED_DATA();
  const auto m = manifest();
  ASSERT_FALSE(m["brain"].empty());
  auto cfg128 = parse_preprocess_json(kModelPreprocess);
  ASSERT_TRUE(cfg128.is_ok());
  PreprocessConfig cfg32 = cfg128.value();
  cfg32.resize_w = 32;
  cfg32.resize_h = 24;
  for (const auto& e : m["brain"]) {
    const std::string src = kShared + "/" + e["source"].get<std::string>();
    auto img = decode_image_file(src);
    ASSERT_TRUE(img.is_ok()) << img.status().message();
    auto r = resize(to_color(img.value(), "RGB"), 128, 128, "bilinear");
    ASSERT_TRUE(r.is_ok());
    expect_equals_u8(r.value(), read_raw<uint8_t>(kFixtures + e["rgb128"].get<std::string>()),
                     src);
    auto t = preprocess_image(img.value(), cfg32);
    ASSERT_TRUE(t.is_ok());
    const auto ref = read_raw<float>(kFixtures + e["pre32x24"].get<std::string>());
    ASSERT_EQ(t->size(), ref.size());
    EXPECT_EQ(std::memcmp(t->data(), ref.data(), ref.size() * 4), 0) << src;
  }
}

// End to end against the PyTorch reference inputs shipped with the models
// (models/*_test_data/test_data_set_0/input_0.pb = the first 4 test images, preprocessed).
TEST(Preprocess, MatchesModelReferenceInputs) {
  SKIP_WITHOUT_SHARED_DATA();
  struct Model {
    const char* pb;
    const char* images[4];
  };
  const Model models[] = {
      {"models/brain_resnet18_test_data/test_data_set_0/input_0.pb",
       {"brain_mri/test/glioma/Te-glTr_0000.jpg", "brain_mri/test/glioma/Te-glTr_0001.jpg",
        "brain_mri/test/glioma/Te-glTr_0002.jpg", "brain_mri/test/glioma/Te-glTr_0006.jpg"}},
      {"models/skin_mobilenet_v2_test_data/test_data_set_0/input_0.pb",
       {"skin_ham10000/images/ISIC_0024319.jpg", "skin_ham10000/images/ISIC_0024320.jpg",
        "skin_ham10000/images/ISIC_0024334.jpg", "skin_ham10000/images/ISIC_0024347.jpg"}},
  };
  auto cfg = parse_preprocess_json(kModelPreprocess);
  ASSERT_TRUE(cfg.is_ok());
  const size_t per = 3 * 128 * 128;
  for (const Model& mdl : models) {
    const auto pb = read_bytes(kShared + "/" + mdl.pb);
    if (pb.size() < 4 * per * 4) GTEST_SKIP() << "reference input not found: " << mdl.pb;
    // raw_data is the last field of the TensorProto: the final 4*per floats of the file.
    std::vector<float> ref(4 * per);
    std::memcpy(ref.data(), pb.data() + pb.size() - ref.size() * 4, ref.size() * 4);
    for (int i = 0; i < 4; ++i) {
      auto img = decode_image_file(kShared + "/" + mdl.images[i]);
      ASSERT_TRUE(img.is_ok()) << img.status().message();
      auto t = preprocess_image(img.value(), cfg.value());
      ASSERT_TRUE(t.is_ok());
      ASSERT_EQ(t->size(), per);
      size_t bad = 0;
      float maxd = 0;
      for (size_t k = 0; k < per; ++k) {
        if ((*t)[k] != ref[i * per + k]) ++bad;
        maxd = std::max(maxd, std::fabs((*t)[k] - ref[i * per + k]));
      }
      EXPECT_EQ(bad, 0u) << mdl.images[i] << ": max abs diff " << maxd;
    }
  }
}

}  // namespace
}  // namespace medq
