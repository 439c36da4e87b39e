#include "core/alloc.h"

#include <malloc.h>

#include <cstdlib>

namespace medq {

void tune_allocator() {
  if (std::getenv("GLIBC_TUNABLES") || std::getenv("MALLOC_TRIM_THRESHOLD_") || std::getenv("MALLOC_MMAP_THRESHOLD_"))
    return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

void limit_allocator_arenas(int cpus) {
  if (std::getenv("GLIBC_TUNABLES") || std::getenv("MALLOC_ARENA_MAX")) return;
  mallopt(M_ARENA_MAX, cpus < 2 ? 2 : cpus);
}

}  // namespace medq
