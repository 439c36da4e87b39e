// Process-wide settings of glibc's allocator for medq's allocation pattern.
#pragma once

namespace medq {

// Every image medq decodes, resizes and normalises allocates and frees buffers of 50-600 KiB
// (decoded pixels, resize scratch, the float input row). glibc maps allocations above its
// dynamic mmap threshold with mmap and gives the top of a heap back to the kernel once more
// than its trim threshold is free there, so in a loop over images such buffers are mapped
// (or the heap grown) and unmapped (or trimmed) again and again, and every page of every buffer
// is faulted in and zeroed anew: decode + preprocess of a 224x224 JPEG took 1.05 ms in that
// state against 0.25 ms with the memory kept (bench/preprocess_bench.cc, one thread). This
// fixes the mmap threshold at 32 MiB (glibc's maximum; larger blocks, weights and big images
// are still mapped) and the trim threshold at 64 MiB, so freed buffers are reused. `medq serve`
// still gives free memory back every 10 s (malloc_trim), so its RSS stays bounded.
// Does nothing when the user configures the allocator (GLIBC_TUNABLES, MALLOC_TRIM_THRESHOLD_,
// MALLOC_MMAP_THRESHOLD_). Call once at the start of main().
void tune_allocator();

// `medq serve` loads every model on a short-lived thread (so that its OpenMP pool goes with it),
// and glibc gives such threads arenas of their own (up to 8 per CPU) whose freed model-sized
// blocks stay mapped: 20 reloads of brain_resnet18 took the server from 140 MB to 1.3 GB. With as
// many arenas as CPUs (at least 2) the same 20 reloads end at ~380 MB. Does nothing when
// MALLOC_ARENA_MAX or GLIBC_TUNABLES is set.
void limit_allocator_arenas(int cpus);

}  // namespace medq
