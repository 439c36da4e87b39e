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
  // Branch-free over blocks (vectorizes), so a decoded 8-bit image costs one fast pass.
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

Image to_color(const Image& img, const std::string& color) {
  const size_t npix = size_t(img.width) * size_t(img.height);
  const int c = img.channels;
  Image out;
  out.width = img.width;
  out.height = img.height;
  if (color == "RGB") {
    if (c == 3) return img;
    out.channels = 3;
    out.pixels.resize(npix * 3);
    for (size_t i = 0; i < npix; ++i) {
      if (c == 1 || c == 2) {  // L / LA
        const float v = img.pixels[i * c];
        out.pixels[i * 3 + 0] = out.pixels[i * 3 + 1] = out.pixels[i * 3 + 2] = v;
      } else {  // RGBA or more: first three channels
        for (int k = 0; k < 3; ++k) out.pixels[i * 3 + k] = img.pixels[i * c + k];
      }
    }
    return out;
  }
  if (color == "L") {
    if (c == 1) return img;
    out.channels = 1;
    out.pixels.resize(npix);
    if (c == 2) {
      for (size_t i = 0; i < npix; ++i) out.pixels[i] = img.pixels[i * 2];
      return out;
    }
    const bool u8 = is_uint8_image(img);
    for (size_t i = 0; i < npix; ++i) {
      const float* p = &img.pixels[i * c];
      if (u8) {
        // Pillow Convert.c: L24(rgb) = R*19595 + G*38470 + B*7471 + 0x8000, then >> 16.
        const int32_t l = int32_t(p[0]) * 19595 + int32_t(p[1]) * 38470 +
                          int32_t(p[2]) * 7471 + 0x8000;
        out.pixels[i] = float(l >> 16);
      } else {
        out.pixels[i] = float(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
      }
    }
    return out;
  }
  return img;
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

// 8-bit planes, interleaved with `ch` channels. in: in_w x (rows) ; rows offset `offset`.
void horizontal_8bpc(const uint8_t* in, int in_w, int ch, int offset, int out_w, int out_rows,
                     const Coeffs& c, uint8_t* out) {
  const std::vector<int32_t> kk = normalize_coeffs_8bpc(c.kk);
  const int32_t init = 1 << (kPrecisionBits - 1);
  for (int yy = 0; yy < out_rows; yy++) {
    const uint8_t* row = in + size_t(yy + offset) * in_w * ch;
    uint8_t* orow = out + size_t(yy) * out_w * ch;
    for (int xx = 0; xx < out_w; xx++) {
      const int xmin = c.bounds[size_t(xx) * 2], xmax = c.bounds[size_t(xx) * 2 + 1];
      const int32_t* k = &kk[size_t(xx) * c.ksize];
      const uint8_t* px = row + size_t(xmin) * ch;
      if (ch == 3) {  // RGB: the three sums in one pass over the taps
        int32_t s0 = init, s1 = init, s2 = init;
        for (int x = 0; x < xmax; x++, px += 3) {
          s0 += px[0] * k[x];
          s1 += px[1] * k[x];
          s2 += px[2] * k[x];
        }
        orow[size_t(xx) * 3 + 0] = clip8(s0);
        orow[size_t(xx) * 3 + 1] = clip8(s1);
        orow[size_t(xx) * 3 + 2] = clip8(s2);
        continue;
      }
      for (int b = 0; b < ch; b++) {
        int32_t ss = init;
        for (int x = 0; x < xmax; x++) ss += px[size_t(x) * ch + b] * k[x];
        orow[size_t(xx) * ch + b] = clip8(ss);
      }
    }
  }
}

void vertical_8bpc(const uint8_t* in, int w, int ch, int out_h, const Coeffs& c,
                   const std::vector<int>& bounds, uint8_t* out) {
  const std::vector<int32_t> kk = normalize_coeffs_8bpc(c.kk);
  const size_t stride = size_t(w) * ch;
  std::vector<int32_t> acc(stride);
  for (int yy = 0; yy < out_h; yy++) {
    const int32_t* k = &kk[size_t(yy) * c.ksize];
    const int ymin = bounds[size_t(yy) * 2], ymax = bounds[size_t(yy) * 2 + 1];
    // Row by row over the taps (the same sums in the same order as Pillow's per-pixel loop,
    // integer and exact), so the inner loop runs along a row and vectorizes.
    int32_t* __restrict a = acc.data();
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; y++) {
      const uint8_t* __restrict src = in + size_t(y + ymin) * stride;
      const int32_t ky = k[y];
#pragma omp simd
      for (size_t i = 0; i < stride; i++) a[i] += src[i] * ky;
    }
    uint8_t* __restrict orow = out + size_t(yy) * stride;
#pragma omp simd
    for (size_t i = 0; i < stride; i++) orow[i] = clip8(a[i]);
  }
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
  return *src;
}

// Pillow resize(NEAREST): ImagingTransform(AFFINE) -> ImagingScaleAffine with
// a = [in_w/out_w, 0, 0, 0, in_h/out_h, 0] and fill = 1.
Image resize_nearest(const Image& img, int w, int h) {
  Image out;
  out.width = w;
  out.height = h;
  out.channels = img.channels;
  const int ch = img.channels;
  out.pixels.assign(size_t(w) * h * ch, 0.f);
  const double a0 = double(float(img.width) - 0.f) / w;
  const double a4 = double(float(img.height) - 0.f) / h;
  auto coord = [](double v) { return v < 0.0 ? -1 : int(v); };
  std::vector<int> xintab(size_t(w), 0);
  int xmin = w, xmax = 0;
  double xo = 0.0 + a0 * 0.5;
  for (int x = 0; x < w; x++) {
    const int xin = coord(xo);
    if (xin >= 0 && xin < img.width) {
      xmax = x + 1;
      if (x < xmin) xmin = x;
      xintab[size_t(x)] = xin;
    }
    xo += a0;
  }
  double yo = 0.0 + a4 * 0.5;
  for (int y = 0; y < h; y++) {
    const int yi = coord(yo);
    if (yi >= 0 && yi < img.height) {
      const float* in = &img.pixels[size_t(yi) * img.width * ch];
      float* o = &out.pixels[size_t(y) * w * ch];
      for (int x = xmin; x < xmax; x++)
        for (int b = 0; b < ch; b++) o[size_t(x) * ch + b] = in[size_t(xintab[size_t(x)]) * ch + b];
    }
    yo += a4;
  }
  return out;
}

}  // namespace

Result<Image> resize(const Image& img, int w, int h, const std::string& interpolation) {
  if (w <= 0 || h <= 0) return invalid_argument("resize: target size must be positive");
  if (img.width <= 0 || img.height <= 0 || img.channels <= 0 ||
      img.pixels.size() != size_t(img.width) * img.height * img.channels)
    return invalid_argument("resize: malformed input image");
  const Filter* f = nullptr;
  if (interpolation == "nearest") {
    if (w == img.width && h == img.height) return img;
    return resize_nearest(img, w, h);
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
  if (is_uint8_image(img)) {
    std::vector<uint8_t> in(img.pixels.size());
    for (size_t i = 0; i < in.size(); ++i) in[i] = uint8_t(img.pixels[i]);
    std::vector<uint8_t> r = resample_inner<uint8_t>(in, img.width, img.height, ch, w, h, *f,
                                                     horizontal_8bpc, vertical_8bpc);
    out.pixels.assign(r.begin(), r.end());
  } else {
    out.pixels = resample_inner<float>(img.pixels, img.width, img.height, ch, w, h, *f,
                                       horizontal_f32, vertical_f32);
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Full pipeline
// ------------------------------------------------------------------------------------------

Result<std::vector<float>> preprocess_image(const Image& img, const PreprocessConfig& cfg) {
  RETURN_IF_ERROR(validate_preprocess_config(cfg));
  if (img.width <= 0 || img.height <= 0 || img.channels <= 0 ||
      img.pixels.size() != size_t(img.width) * img.height * img.channels)
    return invalid_argument("preprocess: malformed input image");
  Image x = to_color(img, cfg.color);
  if (cfg.resize_w > 0 && cfg.resize_h > 0) {
    ASSIGN_OR_RETURN(x, resize(x, cfg.resize_w, cfg.resize_h, cfg.interpolation));
  }
  const int C = x.channels, H = x.height, W = x.width;
  const size_t HW = size_t(H) * W;
  // scale == 1/N (N integer): divide by N like torchvision's ToTensor (x.div(255)).
  const double inv = 1.0 / double(cfg.scale);
  const double n_round = std::round(inv);
  const bool use_div = n_round >= 1.0 && std::fabs(inv - n_round) <= 1e-6 * n_round;
  const float divisor = float(n_round);
  std::vector<float> dst(HW * C);
  const bool nchw = cfg.layout == "NCHW";
  for (int c = 0; c < C; ++c) {
    const float mean = cfg.mean.size() == 1 ? cfg.mean[0] : cfg.mean[size_t(c)];
    const float sd = cfg.std.size() == 1 ? cfg.std[0] : cfg.std[size_t(c)];
    for (size_t i = 0; i < HW; ++i) {
      const float p = x.pixels[i * C + c];
      const float v = use_div ? p / divisor : p * cfg.scale;
      const float r = (v - mean) / sd;
      if (nchw)
        dst[size_t(c) * HW + i] = r;
      else
        dst[i * C + c] = r;
    }
  }
  return dst;
}

}  // namespace medq
