#include "runtime/planner.h"

#include <algorithm>

namespace medq {

MemoryPlan plan_memory(const std::vector<BufferRequest>& reqs) {
  std::vector<size_t> order(reqs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reqs[a].bytes > reqs[b].bytes; });
  struct Placed { size_t offset, size; int first, last; };
  std::vector<Placed> placed;
  MemoryPlan plan;
  for (size_t idx : order) {
    const BufferRequest& r = reqs[idx];
    size_t size = (r.bytes + 63) / 64 * 64;
    // Collect placed buffers whose lifetimes overlap, sorted by offset.
    std::vector<const Placed*> live;
    for (const auto& p : placed)
      if (!(p.last < r.first || r.last < p.first)) live.push_back(&p);
    std::sort(live.begin(), live.end(), [](const Placed* a, const Placed* b) { return a->offset < b->offset; });
    size_t best = 0;
    size_t cursor = 0;
    bool found = false;
    size_t best_gap = SIZE_MAX;
    for (const Placed* p : live) {
      if (p->offset >= cursor + size) {
        size_t gap = p->offset - cursor;
        if (gap < best_gap) { best_gap = gap; best = cursor; found = true; }
      }
      cursor = std::max(cursor, p->offset + p->size);
    }
    if (!found) best = cursor;
    placed.push_back({best, size, r.first, r.last});
    plan.assignments.push_back({r.id, best});
    plan.total_bytes = std::max(plan.total_bytes, best + size);
  }
  return plan;
}

}  // namespace medq
