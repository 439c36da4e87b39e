#include "core/dtype.h"

#include <cmath>
#include <cstring>

namespace medq {

const DataTypeTraits& traits(DataType dt) {
  static const DataTypeTraits kTable[] = {
      {"undefined", 0, false, false},  // 0
      {"float32", 4, true, true},      // 1
      {"uint8", 1, false, false},      // 2
      {"int8", 1, false, true},        // 3
      {"uint16", 2, false, false},     // 4
      {"int16", 2, false, true},       // 5
      {"int32", 4, false, true},       // 6
      {"int64", 8, false, true},       // 7
      {"string", 0, false, false},     // 8
      {"bool", 1, false, false},       // 9
      {"float16", 2, true, true},      // 10
      {"float64", 8, true, true},      // 11
      {"uint32", 4, false, false},     // 12
      {"uint64", 8, false, false},     // 13
      {"complex64", 0, false, false},  // 14
      {"complex128", 0, false, false}, // 15
      {"bfloat16", 2, true, true},     // 16
  };
  int i = static_cast<int>(dt);
  if (i < 0 || i > 16) return kTable[0];
  return kTable[i];
}

bool dtype_supported(DataType dt) { return traits(dt).size > 0; }

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0);  // inf/nan
  if (absx >= 0x477ff000u) return sign | 0x7c00u;  // overflow -> inf
  if (absx < 0x38800000u) {  // half subnormal: multiples of 2^-24, round half to even
    float a;
    std::memcpy(&a, &absx, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t r = absx + 0xc8000fffu + ((absx >> 13) & 1);  // rebias + round to nearest even
  return sign | (r >> 13);
}

float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace medq
