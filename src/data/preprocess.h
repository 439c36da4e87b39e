// Image -> model input tensor, reproducing the reference models' Python pipeline exactly:
//   Image.open(p).convert(color).resize((w, h), <filter>)  ->  x / 255  ->  (x - mean) / std
//   -> NCHW (or NHWC), all in float32.
//
// resize() is a port of Pillow's ImagingResample (src/libImaging/Resample.c): antialiased
// separable filters whose support widens with the downscale factor, coefficients normalised
// and converted to 22-bit fixed point, horizontal pass then vertical pass (restricted to the
// rows the vertical pass needs), rounding + clipping to uint8 between passes. For images whose
// pixels are all integers in 0..255 (every PNG/JPEG decode) it is bit-exact with Pillow on
// mode "L"/"RGB" images. Images with non-integral values (DICOM after windowing) go through
// Pillow's float ("F" mode) path: double coefficients and accumulation, float intermediate.
// "nearest" follows Pillow's resize(NEAREST) (ImagingScaleAffine: source index =
// floor((x + 0.5) * in/out) accumulated in double).
//
// Normalisation: when `scale` is 1/N for an integer N (1/255 in the models' metadata) the value
// is computed as x / float(N) (torchvision ToTensor's div(255), bit-exact with the reference
// test inputs); otherwise x * scale. Then (v - mean[c]) / std[c] in float32.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "data/image.h"

namespace medq {

struct PreprocessConfig {
  std::string color = "RGB";  // "RGB" or "L"
  int resize_w = 0, resize_h = 0;  // 0 = keep the decoded size
  std::string interpolation = "bilinear";  // nearest | bilinear | bicubic | lanczos | box | hamming
  float scale = 1.f / 255;
  std::vector<float> mean{0}, std{1};  // size 1 (broadcast) or #channels
  std::string layout = "NCHW";  // "NCHW" or "NHWC"
};

// Parses the model metadata_props "preprocess" JSON, e.g.
// {"color": "RGB", "resize": [128, 128], "interpolation": "bilinear",
//  "scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
//  "layout": "NCHW"}   ("resize" is [width, height]; absent keys keep the defaults above).
// Unknown keys, wrong types and invalid values are errors naming the key.
Result<PreprocessConfig> parse_preprocess_json(const std::string& json);

// Validates a config (also done by preprocess_image): known colour/filter/layout, resize
// both-or-neither, mean/std of size 1 or #channels of `color` (3 for RGB, 1 for L), std != 0.
Status validate_preprocess_config(const PreprocessConfig& cfg);

// "RGB": grey replicated, RGBA/grey+alpha alpha dropped. "L": Pillow's RGB->L conversion
// (ITU-R 601-2 luma; Pillow 9.x computes (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 for 8-bit
// data, which is what is used here for integral pixels; float data uses
// 0.299R + 0.587G + 0.114B). Any other colour name returns the image unchanged.
Image to_color(const Image& img, const std::string& color);

// Pillow-compatible resize (see top of file). interpolation: "nearest", "bilinear" ("linear"),
// "bicubic" ("cubic"), "lanczos", "box", "hamming".
Result<Image> resize(const Image& img, int w, int h, const std::string& interpolation);

// Whether every pixel is an integer in [0, 255] (selects the 8-bit fixed-point resize path).
bool is_uint8_image(const Image& img);

// Without a configured resize, resizes to the model input's static spatial size (input_shape
// [N, C, H, W], or [N, H, W, C] for layout NHWC); leaves cfg alone when that size is unknown.
void default_resize_to_input(PreprocessConfig* cfg, const std::vector<int64_t>& input_shape);

// Full pipeline for one image: to_color -> resize (if resize_w/h > 0) -> scale -> normalise ->
// layout. Returns channels*h*w floats, CHW for "NCHW", HWC for "NHWC".
Result<std::vector<float>> preprocess_image(const Image& img, const PreprocessConfig& cfg);
// The same into dst, which holds n floats: an error (nothing written) when the image would
// give another number of values (no resize configured and another size, another colour).
Status preprocess_image_into(const Image& img, const PreprocessConfig& cfg, float* dst, size_t n);

}  // namespace medq
