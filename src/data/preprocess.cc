// Preprocessing: colour conversion, Pillow-exact resampling, normalisation, layout.
//
// Floating-point contraction (a*b+c -> fma) would change the filter coefficients and the
// float-path sums compared with Pillow's (non-FMA) build, so it is disabled for this file (the
// medq_data target is also built with -ffp-contract=off).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "data/preprocess.h"

#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>

#include <nlohmann/json.hpp>

namespace medq {

// ------------------------------------------------------------------------------------------
// JSON config
// ------------------------------------------------------------------------------------------

Result<PreprocessConfig> parse_preprocess_json(const std::string& text) {
  using nlohmann::json;
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("preprocess: invalid JSON: " + text);
  if (!j.is_object()) return invalid_argument("preprocess: expected a JSON object");
  PreprocessConfig cfg;
  auto float_list = [](const json& v, const char* key,
                       std::vector<float>* out) -> Status {
    if (!v.is_array() || v.empty())
      return invalid_argument(std::string("preprocess: '") + key +
                              "' must be a non-empty array of numbers");
    out->clear();
    for (const auto& e : v) {
      if (!e.is_number())
        return invalid_argument(std::string("preprocess: '") + key +
                                "' must be a non-empty array of numbers");
      out->push_back(e.get<float>());
    }
    return Status::ok();
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "color") {
      if (!v.is_string()) return invalid_argument("preprocess: 'color' must be a string");
      cfg.color = v.get<std::string>();
    } else if (key == "resize") {
      if (v.is_null()) {
        cfg.resize_w = cfg.resize_h = 0;
        continue;
      }
      if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() ||
          !v[1].is_number_integer())
        return invalid_argument(
            "preprocess: 'resize' must be an array of two integers [width, height]");
      const int64_t w = v[0].get<int64_t>(), h = v[1].get<int64_t>();
      if (w <= 0 || h <= 0 || w > 65535 || h > 65535)
        return invalid_argument("preprocess: 'resize' values must be in 1..65535");
      cfg.resize_w = int(w);
      cfg.resize_h = int(h);
    } else if (key == "interpolation") {
      if (!v.is_string()) return invalid_argument("preprocess: 'interpolation' must be a string");
      cfg.interpolation = v.get<std::string>();
    } else if (key == "scale") {
      if (!v.is_number()) return invalid_argument("preprocess: 'scale' must be a number");
      cfg.scale = v.get<float>();
    } else if (key == "mean") {
      RETURN_IF_ERROR(float_list(v, "mean", &cfg.mean));
    } else if (key == "std") {
      RETURN_IF_ERROR(float_list(v, "std", &cfg.std));
    } else if (key == "layout") {
      if (!v.is_string()) return invalid_argument("preprocess: 'layout' must be a string");
      cfg.layout = v.get<std::string>();
    } else {
      return invalid_argument("preprocess: unknown key '" + key + "'");
    }
  }
  RETURN_IF_ERROR(validate_preprocess_config(cfg));
  return cfg;
}

namespace {
const std::set<std::string>& known_filters() {
  static const std::set<std::string> k = {"nearest", "bilinear", "linear", "bicubic",
                                          "cubic",   "lanczos",  "box",    "hamming"};
  return k;
}
}  // namespace

Status validate_preprocess_config(const PreprocessConfig& cfg) {
  int channels = 0;
  if (cfg.color == "RGB") channels = 3;
  else if (cfg.color == "L") channels = 1;
  else return invalid_argument("preprocess: 'color' must be \"RGB\" or \"L\", got '" + cfg.color + "'");
  if (cfg.resize_w < 0 || cfg.resize_h < 0 || ((cfg.resize_w == 0) != (cfg.resize_h == 0)))
    return invalid_argument("preprocess: 'resize' must be two positive integers");
  if (!known_filters().count(cfg.interpolation))
    return invalid_argument("preprocess: unsupported 'interpolation' '" + cfg.interpolation +
                            "' (nearest, bilinear, bicubic, lanczos, box, hamming)");
  if (!std::isfinite(cfg.scale) || cfg.scale == 0.f)
    return invalid_argument("preprocess: 'scale' must be a finite non-zero number");
  if (cfg.mean.size() != 1 && int(cfg.mean.size()) != channels)
    return invalid_argument("preprocess: 'mean' has " + std::to_string(cfg.mean.size()) +
                            " values but color '" + cfg.color + "' has " +
                            std::to_string(channels) + " channels");
  if (cfg.std.size() != 1 && int(cfg.std.size()) != channels)
    return invalid_argument("preprocess: 'std' has " + std::to_string(cfg.std.size()) +
                            " values but color '" + cfg.color + "' has " +
                            std::to_string(channels) + " channels");
  for (float s : cfg.std)
    if (!std::isfinite(s) || s == 0.f)
      return invalid_argument("preprocess: 'std' values must be finite and non-zero");
  for (float m : cfg.mean)
    if (!std::isfinite(m)) return invalid_argument("preprocess: 'mean' values must be finite");
  if (cfg.layout != "NCHW" && cfg.layout != "NHWC")
    return invalid_argument("preprocess: 'layout' must be \"NCHW\" or \"NHWC\", got '" +
                            cfg.layout + "'");
  return Status::ok();
}

// ------------------------------------------------------------------------------------------
// Colour
// ------------------------------------------------------------------------------------------

bool is_uint8_image(const Image& img) {
  if (img.is_u8()) return true;
  // Branch-free over blocks (vectorizes), so a float image costs one fast pass.
  const float* p = img.pixels.data();
  const size_t n = img.pixels.size();
  // v is an integer in 0..255 iff it is in range (false for NaN) and rounding it to an integer
  // (adding and removing 2^23 rounds a float in [0, 2^23) to the nearest integer) keeps it.
  constexpr float kRound = 8388608.f;
  for (size_t i0 = 0; i0 < n; i0 += 4096) {
    const size_t i1 = std::min(n, i0 + 4096);
    int ok = 1;
#pragma omp simd reduction(& : ok)
    for (size_t i = i0; i < i1; ++i) {
      const float v = p[i];
      ok &= static_cast<int>(v >= 0.f) & static_cast<int>(v <= 255.f) & static_cast<int>((v + kRound) - kRound == v);
    }
    if (!ok) return false;
  }
  return true;
}

namespace {

// The float samples of an image that is_uint8_image() accepts, as bytes.
std::vector<uint8_t> bytes_of(const std::vector<float>& pixels) {
  std::vector<uint8_t> b(pixels.size());
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(pixels[i]);
  return b;
}

// "RGB" from 1 (L), 2 (LA) or 4+ (RGBA...) channels: grey replicated, extra channels dropped.
template <class T>
void to_rgb(const std::vector<T>& in, int c, size_t npix, std::vector<T>* out) {
  out->resize(npix * 3);
  T* o = out->data();
  for (size_t i = 0; i < npix; ++i) {
    if (c == 1 || c == 2) {  // L / LA
      o[i * 3 + 0] = o[i * 3 + 1] = o[i * 3 + 2] = in[i * c];
    } else {  // RGBA or more: first three channels
      for (int k = 0; k < 3; ++k) o[i * 3 + k] = in[i * c + k];
    }
  }
}

// Whether to_color(img, color) changes an image of c channels (it converts to "RGB" and "L" only).
bool changes_color(int c, const std::string& color) { return (color == "RGB" && c != 3) || (color == "L" && c != 1); }

// Pillow Convert.c for 8-bit data: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
inline int32_t luma8(int32_t r, int32_t g, int32_t b) { return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; }

}  // namespace

Image to_color(const Image& img, const std::string& color) {
  const size_t npix = size_t(img.width) * size_t(img.height);
  const int c = img.channels;
  if (!changes_color(c, color)) return img;
  Image out;
  out.width = img.width;
  out.height = img.height;
  if (color == "RGB") {
    out.channels = 3;
    if (img.is_u8())
      to_rgb(img.u8, c, npix, &out.u8);
    else
      to_rgb(img.pixels, c, npix, &out.pixels);
    return out;
  }
  out.channels = 1;
  if (img.is_u8()) {
    out.u8.resize(npix);
    for (size_t i = 0; i < npix; ++i) {
      const uint8_t* p = &img.u8[i * c];
      out.u8[i] = c == 2 ? p[0] : uint8_t(luma8(p[0], p[1], p[2]));
    }
    return out;
  }
  out.pixels.resize(npix);
  if (c == 2) {
    for (size_t i = 0; i < npix; ++i) out.pixels[i] = img.pixels[i * 2];
    return out;
  }
  const bool u8 = is_uint8_image(img);
  for (size_t i = 0; i < npix; ++i) {
    const float* p = &img.pixels[i * c];
    if (u8)
      out.pixels[i] = float(luma8(int32_t(p[0]), int32_t(p[1]), int32_t(p[2])));
    else
      out.pixels[i] = float(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Pillow Resample.c port
// ------------------------------------------------------------------------------------------
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kPi = 3.14159265358979323846;  // M_PI

struct Filter {
  double (*fn)(double);
  double support;
};

double box_filter(double x) {
  if (x > -0.5 && x <= 0.5) return 1.0;
  return 0.0;
}
double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}
double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}
double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}
double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

const Filter kBox{box_filter, 0.5};
const Filter kBilinear{bilinear_filter, 1.0};
const Filter kHamming{hamming_filter, 1.0};
const Filter kBicubic{bicubic_filter, 2.0};
const Filter kLanczos{lanczos_filter, 3.0};

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // per output: xmin, count
  std::vector<double> kk;   // outSize * ksize
};

// precompute_coeffs() of Resample.c; in0/in1 are floats there (the resize box).
Coeffs precompute_coeffs(int in_size, float in0, float in1, int out_size, const Filter& f) {
  Coeffs c;
  double filterscale, scale;
  filterscale = scale = double(in1 - in0) / out_size;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = f.support * filterscale;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.kk.assign(size_t(out_size) * c.ksize, 0.0);
  c.bounds.assign(size_t(out_size) * 2, 0);
  for (int xx = 0; xx < out_size; xx++) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &c.kk[size_t(xx) * c.ksize];
    for (int x = 0; x < xmax; x++) {
      const double w = f.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; x++)
      if (ww != 0.0) k[x] /= ww;
    c.bounds[size_t(xx) * 2 + 0] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return c;
}

std::vector<int32_t> normalize_coeffs_8bpc(const std::vector<double>& prekk) {
  std::vector<int32_t> kk(prekk.size());
  for (size_t x = 0; x < prekk.size(); x++) {
    if (prekk[x] < 0)
      kk[x] = int32_t(-0.5 + prekk[x] * (1 << kPrecisionBits));
    else
      kk[x] = int32_t(0.5 + prekk[x] * (1 << kPrecisionBits));
  }
  return kk;
}

// Pillow's Resample.c accumulates 8-bit resampling in int: weights are normalized to
// 1 << kPrecisionBits, so |sum| < 255 * 1.5 * 2^22 < 2^31 for every filter here.
inline uint8_t clip8(int32_t in) {
  const int32_t v = in >> kPrecisionBits;  // arithmetic shift, like Pillow's int >> 22
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output line of 8-bit resampling: out[i] = clip8(init + sum_t k[t] * base[(first + t) * stride + i])
// for i < n. Integer sums (exact in any order, as in Pillow's per-pixel loop) along contiguous
// memory: with AVX2 32 outputs at a time in four registers across all taps, clipped by the
// saturating packs (the shifted sums lie well inside int16); the rest through acc.
void resample_line_8bpc(const uint8_t* base, size_t stride, int first, int taps, const int32_t* k, size_t n,
                        int32_t* __restrict acc, uint8_t* __restrict out) {
  size_t i0 = 0;
#if defined(__AVX2__)
  const __m256i init = _mm256_set1_epi32(1 << (kPrecisionBits - 1));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the packs' lane interleave
  for (; i0 + 32 <= n; i0 += 32) {
    __m256i a0 = init, a1 = init, a2 = init, a3 = init;
    const uint8_t* src = base + size_t(first) * stride + i0;
    for (int t = 0; t < taps; t++, src += stride) {
      const __m256i kt = _mm256_set1_epi32(k[t]);
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
      a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(lo), kt));
      a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), kt));
      a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(hi), kt));
      a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), kt));
    }
    a0 = _mm256_srai_epi32(a0, kPrecisionBits);
    a1 = _mm256_srai_epi32(a1, kPrecisionBits);
    a2 = _mm256_srai_epi32(a2, kPrecisionBits);
    a3 = _mm256_srai_epi32(a3, kPrecisionBits);
    const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i0), _mm256_permutevar8x32_epi32(bytes, order));
  }
#endif
  if (i0 == n) return;
  const size_t m = n - i0;
  std::fill(acc, acc + m, 1 << (kPrecisionBits - 1));
  for (int t = 0; t < taps; t++) {
    const uint8_t* __restrict src = base + size_t(first + t) * stride + i0;
    const int32_t kt = k[t];
#pragma omp simd
    for (size_t i = 0; i < m; i++) acc[i] += src[i] * kt;
  }
#pragma omp simd
  for (size_t i = 0; i < m; i++) out[i0 + i] = clip8(acc[i]);
}

#if defined(__SSE2__)
// 16x16 bytes: four rounds of the same interleave of register i with register i + 8. Each round
// rotates the 8-bit (register, position) index left by one bit, so four rounds swap register and
// position: out[c][r] = in[r][c].
inline void transpose16x16(const uint8_t* src, size_t src_stride, uint8_t* dst, size_t dst_stride) {
  __m128i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + size_t(i) * src_stride));
  for (int round = 0; round < 4; ++round) {
    __m128i* in = round % 2 == 0 ? a : b;
    __m128i* out = round % 2 == 0 ? b : a;
    for (int i = 0; i < 8; ++i) {
      out[2 * i] = _mm_unpacklo_epi8(in[i], in[i + 8]);
      out[2 * i + 1] = _mm_unpackhi_epi8(in[i], in[i + 8]);
    }
  }
  for (int i = 0; i < 16; ++i) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + size_t(i) * dst_stride), a[i]);
}
#endif

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols (a byte matrix
// transpose; 16x16 SSE2 blocks, scalar edges).
void transpose_bytes(const uint8_t* src, size_t src_stride, int rows, int cols, uint8_t* dst, size_t dst_stride) {
  int r0 = 0;
#if defined(__SSE2__)
  for (; r0 + 16 <= rows; r0 += 16) {
    int c0 = 0;
    for (; c0 + 16 <= cols; c0 += 16)
      transpose16x16(src + size_t(r0) * src_stride + c0, src_stride, dst + size_t(c0) * dst_stride + r0, dst_stride);
    for (int r = r0; r < r0 + 16; ++r)
      for (int c = c0; c < cols; ++c) dst[size_t(c) * dst_stride + r] = src[size_t(r) * src_stride + c];
  }
#endif
  for (int r = r0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dst[size_t(c) * dst_stride + r] = src[size_t(r) * src_stride + c];
}

// 8-bit planes, interleaved with `ch` channels. in: in_w x (rows) ; rows offset `offset`.
// Computed as a vertical pass on the transposed rows (each byte column, one channel of one input
// column, becomes a contiguous line of out_rows bytes), then transposed back: the same integer
// sums as Pillow's per-pixel loop, vectorized along the column.
void horizontal_8bpc(const uint8_t* in, int in_w, int ch, int offset, int out_w, int out_rows,
                     const Coeffs& c, uint8_t* out) {
  const std::vector<int32_t> kk = normalize_coeffs_8bpc(c.kk);
  const size_t row_bytes = size_t(in_w) * ch, line = size_t(out_rows);
  std::vector<uint8_t> cols(row_bytes * line), out_cols(size_t(out_w) * ch * line);
  // cols[(x * ch + b) * line + r] = pixel (x, r), channel b
  transpose_bytes(in + size_t(offset) * row_bytes, row_bytes, out_rows, int(row_bytes), cols.data(), line);
  std::vector<int32_t> acc(line);
  for (int xx = 0; xx < out_w; xx++)
    for (int b = 0; b < ch; b++)
      resample_line_8bpc(cols.data() + size_t(b) * line, size_t(ch) * line, c.bounds[size_t(xx) * 2],
                         c.bounds[size_t(xx) * 2 + 1], &kk[size_t(xx) * c.ksize], line, acc.data(),
                         out_cols.data() + (size_t(xx) * ch + b) * line);
  transpose_bytes(out_cols.data(), line, out_w * ch, out_rows, out, size_t(out_w) * ch);
}

void vertical_8bpc(const uint8_t* in, int w, int ch, int out_h, const Coeffs& c,
                   const std::vector<int>& bounds, uint8_t* out) {
  const std::vector<int32_t> kk = normalize_coeffs_8bpc(c.kk);
  const size_t stride = size_t(w) * ch;
  std::vector<int32_t> acc(stride);
  for (int yy = 0; yy < out_h; yy++)
    resample_line_8bpc(in, stride, bounds[size_t(yy) * 2], bounds[size_t(yy) * 2 + 1], &kk[size_t(yy) * c.ksize],
                       stride, acc.data(), out + size_t(yy) * stride);
}

void horizontal_f32(const float* in, int in_w, int ch, int offset, int out_w, int out_rows,
                    const Coeffs& c, float* out) {
  for (int yy = 0; yy < out_rows; yy++) {
    const float* row = in + size_t(yy + offset) * in_w * ch;
    float* orow = out + size_t(yy) * out_w * ch;
    for (int xx = 0; xx < out_w; xx++) {
      const int xmin = c.bounds[size_t(xx) * 2], xmax = c.bounds[size_t(xx) * 2 + 1];
      const double* k = &c.kk[size_t(xx) * c.ksize];
      for (int b = 0; b < ch; b++) {
        double ss = 0.0;
        for (int x = 0; x < xmax; x++) ss += row[size_t(x + xmin) * ch + b] * k[x];
        orow[size_t(xx) * ch + b] = float(ss);
      }
    }
  }
}

void vertical_f32(const float* in, int w, int ch, int out_h, const Coeffs& c,
                  const std::vector<int>& bounds, float* out) {
  const size_t stride = size_t(w) * ch;
  for (int yy = 0; yy < out_h; yy++) {
    const double* k = &c.kk[size_t(yy) * c.ksize];
    const int ymin = bounds[size_t(yy) * 2], ymax = bounds[size_t(yy) * 2 + 1];
    float* orow = out + size_t(yy) * stride;
    for (size_t i = 0; i < stride; i++) {
      double ss = 0.0;
      for (int y = 0; y < ymax; y++) ss += in[size_t(y + ymin) * stride + i] * k[y];
      orow[i] = float(ss);
    }
  }
}

// ImagingResampleInner() with box = (0, 0, in_w, in_h), for pixel type T (uint8_t or float).
template <class T, class HFn, class VFn>
std::vector<T> resample_inner(const std::vector<T>& in, int in_w, int in_h, int ch, int out_w,
                              int out_h, const Filter& f, HFn horiz, VFn vert) {
  const bool need_h = out_w != in_w;
  const bool need_v = out_h != in_h;
  Coeffs cv = precompute_coeffs(in_h, 0.f, float(in_h), out_h, f);
  std::vector<int> vbounds = cv.bounds;
  const int ybox_first = vbounds[0];
  const int ybox_last = vbounds[size_t(out_h) * 2 - 2] + vbounds[size_t(out_h) * 2 - 1];
  std::vector<T> tmp;
  const std::vector<T>* src = &in;
  int src_w = in_w;
  if (need_h) {
    Coeffs ch_ = precompute_coeffs(in_w, 0.f, float(in_w), out_w, f);
    for (int i = 0; i < out_h; i++) vbounds[size_t(i) * 2] -= ybox_first;
    const int rows = ybox_last - ybox_first;
    tmp.resize(size_t(out_w) * rows * ch);
    horiz(in.data(), in_w, ch, ybox_first, out_w, rows, ch_, tmp.data());
    src = &tmp;
    src_w = out_w;
  }
  if (need_v) {
    std::vector<T> out(size_t(src_w) * out_h * ch);
    vert(src->data(), src_w, ch, out_h, cv, vbounds, out.data());
    return out;
  }
  return tmp;  // need_h only (resize() returns early when neither is needed)
}

// Pillow resize(NEAREST): ImagingTransform(AFFINE) -> ImagingScaleAffine with
// a = [in_w/out_w, 0, 0, 0, in_h/out_h, 0] and fill = 1.
template <class T>
std::vector<T> resize_nearest(const std::vector<T>& in, int in_w, int in_h, int ch, int w, int h) {
  std::vector<T> out(size_t(w) * h * ch, T(0));
  const double a0 = double(float(in_w) - 0.f) / w;
  const double a4 = double(float(in_h) - 0.f) / h;
  auto coord = [](double v) { return v < 0.0 ? -1 : int(v); };
  std::vector<int> xintab(size_t(w), 0);
  int xmin = w, xmax = 0;
  double xo = 0.0 + a0 * 0.5;
  for (int x = 0; x < w; x++) {
    const int xin = coord(xo);
    if (xin >= 0 && xin < in_w) {
      xmax = x + 1;
      if (x < xmin) xmin = x;
      xintab[size_t(x)] = xin;
    }
    xo += a0;
  }
  double yo = 0.0 + a4 * 0.5;
  for (int y = 0; y < h; y++) {
    const int yi = coord(yo);
    if (yi >= 0 && yi < in_h) {
      const T* src = &in[size_t(yi) * in_w * ch];
      T* o = &out[size_t(y) * w * ch];
      for (int x = xmin; x < xmax; x++)
        for (int b = 0; b < ch; b++) o[size_t(x) * ch + b] = src[size_t(xintab[size_t(x)]) * ch + b];
    }
    yo += a4;
  }
  return out;
}

}  // namespace

Result<Image> resize(const Image& img, int w, int h, const std::string& interpolation) {
  if (w <= 0 || h <= 0) return invalid_argument("resize: target size must be positive");
  if (!img.well_formed()) return invalid_argument("resize: malformed input image");
  const Filter* f = nullptr;
  if (interpolation == "nearest") {
  } else if (interpolation == "bilinear" || interpolation == "linear") {
    f = &kBilinear;
  } else if (interpolation == "bicubic" || interpolation == "cubic") {
    f = &kBicubic;
  } else if (interpolation == "lanczos") {
    f = &kLanczos;
  } else if (interpolation == "box") {
    f = &kBox;
  } else if (interpolation == "hamming") {
    f = &kHamming;
  } else {
    return invalid_argument("resize: unsupported interpolation '" + interpolation + "'");
  }
  // Pillow's Image.resize returns a copy when the size does not change.
  if (w == img.width && h == img.height) return img;

  Image out;
  out.width = w;
  out.height = h;
  out.channels = img.channels;
  const int ch = img.channels;
  if (f == nullptr) {
    if (img.is_u8())
      out.u8 = resize_nearest(img.u8, img.width, img.height, ch, w, h);
    else
      out.pixels = resize_nearest(img.pixels, img.width, img.height, ch, w, h);
  } else if (is_uint8_image(img)) {  // Pillow's 8-bit path: fixed-point, rounded to bytes between passes
    std::vector<uint8_t> converted;  // integral float samples as bytes
    const std::vector<uint8_t>& bytes = img.is_u8() ? img.u8 : (converted = bytes_of(img.pixels));
    out.u8 = resample_inner<uint8_t>(bytes, img.width, img.height, ch, w, h, *f, horizontal_8bpc, vertical_8bpc);
  } else {
    out.pixels = resample_inner<float>(img.pixels, img.width, img.height, ch, w, h, *f,
                                       horizontal_f32, vertical_f32);
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Full pipeline
// ------------------------------------------------------------------------------------------

namespace {
// The pipeline, writing into the buffer that get_dst(n floats) returns (nullptr: refuse n).
template <class GetDst>
Status preprocess_with(const Image& img, const PreprocessConfig& cfg, GetDst get_dst) {
  RETURN_IF_ERROR(validate_preprocess_config(cfg));
  if (!img.well_formed()) return invalid_argument("preprocess: malformed input image");
  // Grey -> RGB replicates one channel, and resampling treats every channel alike (same
  // coefficients, no mixing), so the two commute exactly: a grey image is resized once and its
  // channel replicated while normalising, instead of resizing three equal channels.
  const bool grey_to_rgb = cfg.color == "RGB" && img.channels <= 2;
  const Image* x = &img;
  Image colored, resized;
  const std::string target = grey_to_rgb ? "L" : cfg.color;  // LA -> L keeps the grey channel
  if (changes_color(img.channels, target)) {  // (to_color would return a copy otherwise)
    colored = to_color(img, target);
    x = &colored;
  }
  if (cfg.resize_w > 0 && cfg.resize_h > 0 && (cfg.resize_w != x->width || cfg.resize_h != x->height)) {
    ASSIGN_OR_RETURN(resized, resize(*x, cfg.resize_w, cfg.resize_h, cfg.interpolation));
    x = &resized;
  }
  const int C = grey_to_rgb ? 3 : x->channels, SC = x->channels, H = x->height, W = x->width;
  const size_t HW = size_t(H) * W;
  // scale == 1/N (N integer): divide by N like torchvision's ToTensor (x.div(255)).
  const double inv = 1.0 / double(cfg.scale);
  const double n_round = std::round(inv);
  const bool use_div = n_round >= 1.0 && std::fabs(inv - n_round) <= 1e-6 * n_round;
  const float divisor = float(n_round);
  float* const dst = get_dst(HW * C);
  if (!dst) return invalid_argument("preprocess: image is " + std::to_string(W) + "x" + std::to_string(H) + "x" +
                                    std::to_string(C) + " after resizing, not the size the destination expects");
  const bool nchw = cfg.layout == "NCHW";
  for (int c = 0; c < C; ++c) {
    const float mean = cfg.mean.size() == 1 ? cfg.mean[0] : cfg.mean[size_t(c)];
    const float sd = cfg.std.size() == 1 ? cfg.std[0] : cfg.std[size_t(c)];
    auto normalise = [&](float p) {
      const float v = use_div ? p / divisor : p * cfg.scale;
      return (v - mean) / sd;
    };
    const int sc = grey_to_rgb ? 0 : c;  // source channel
    float* out = nchw ? dst + size_t(c) * HW : dst + c;
    const size_t step = nchw ? 1 : size_t(C);
    if (x->is_u8()) {
      float lut[256];  // the same float operations per byte value, computed once
      for (int v = 0; v < 256; ++v) lut[v] = normalise(float(v));
      const uint8_t* in = x->u8.data() + sc;
      for (size_t i = 0; i < HW; ++i) out[i * step] = lut[in[i * SC]];
    } else {
      const float* in = x->pixels.data() + sc;
      for (size_t i = 0; i < HW; ++i) out[i * step] = normalise(in[i * SC]);
    }
  }
  return Status::ok();
}
}  // namespace

void default_resize_to_input(PreprocessConfig* cfg, const std::vector<int64_t>& input_shape) {
  if (cfg->resize_w > 0 || input_shape.size() != 4) return;
  const bool nhwc = cfg->layout == "NHWC";
  const int64_t h = nhwc ? input_shape[1] : input_shape[2], w = nhwc ? input_shape[2] : input_shape[3];
  if (h <= 0 || w <= 0) return;
  cfg->resize_h = static_cast<int>(h);
  cfg->resize_w = static_cast<int>(w);
}

Result<std::vector<float>> preprocess_image(const Image& img, const PreprocessConfig& cfg) {
  std::vector<float> out;
  RETURN_IF_ERROR(preprocess_with(img, cfg, [&](size_t n) {
    out.resize(n);
    return out.data();
  }));
  return out;
}

Status preprocess_image_into(const Image& img, const PreprocessConfig& cfg, float* dst, size_t n) {
  return preprocess_with(img, cfg, [&](size_t need) { return need == n ? dst : nullptr; });
}

}  // namespace medq
