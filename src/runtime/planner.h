// Memory planner: packs buffers with known lifetimes [first, last] (node
// indices, inclusive) into one arena. Greedy by size (largest first, lowest
// non-conflicting offset), as in TFLite/XNNPACK planners. 64-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace medq {

struct BufferRequest {
  uint32_t id;
  size_t bytes;
  int first;
  int last;
};

struct BufferAssignment {
  uint32_t id;
  size_t offset;
};

struct MemoryPlan {
  std::vector<BufferAssignment> assignments;
  size_t total_bytes = 0;
};

MemoryPlan plan_memory(const std::vector<BufferRequest>& reqs);

}  // namespace medq
