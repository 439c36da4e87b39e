#include "core/cpu.h"

#include <cpuid.h>

namespace medq {

bool cpu_has_vnni() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    const bool avx512_vnni = (c >> 11) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    const bool avx_vnni = (a >> 4) & 1;
    return avx512_vnni || avx_vnni;
  }();
  return has;
}

}  // namespace medq
