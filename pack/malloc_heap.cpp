// SPDX-License-Identifier: Apache-2.0
// Walking glibc malloc heaps in a dumped process's memory (malloc/malloc.c, arena.c).
#include "pack/malloc_heap.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace seamless::packfmt::malloc_heap {
namespace {

constexpr uint64_t kPage = 4096;
// HEAP_MAX_SIZE on 64-bit: a non-main arena's heaps are mappings aligned to it.
constexpr uint64_t kHeapMax = uint64_t(64) << 20;
// A chunk: prev_size, then size with flags in its low 3 bits; a free one keeps fd, bk
// and (large ones) fd_nextsize, bk_nextsize after that.
constexpr uint64_t kPrevInUse = 1, kIsMmapped = 2, kFlags = 7;
constexpr uint64_t kHeader = 16, kMinChunk = 32, kAlign = 16;
constexpr uint64_t kFreeKept = 48;
// struct malloc_state: mutex, flags, have_fastchunks, fastbinsY[10], then top; its size.
constexpr uint64_t kTopOffset = 96, kArenaSize = 2200;
// The end of x86-64's user space (4-level paging): what lies beyond is no heap glibc made,
// and the bound keeps made-up mappings from costing more than 2^21 heap candidates.
constexpr uint64_t kAddressLimit = uint64_t(1) << 47;
// sizeof(heap_info): 32 before glibc 2.35, 48 since (it gained pagesize).
constexpr uint64_t kHeapInfoSizes[] = {32, 48};

class Reader {
 public:
  explicit Reader(const Memory& m) : m_(m) {}
  // The 8-byte word at `a` (8-aligned, so within one page).
  uint64_t word(uint64_t a) {
    const uint64_t p = a & ~(kPage - 1);
    if (p != page_at_) {
      page_at_ = p;
      page_ = m_.page(p);
    }
    uint64_t v = 0;
    if (page_) std::memcpy(&v, page_ + (a - p), 8);
    return v;
  }

 private:
  const Memory& m_;
  uint64_t page_at_ = 1;  // no page
  const unsigned char* page_ = nullptr;
};

uint64_t align_chunk(uint64_t a) { return ((a + kHeader + kAlign - 1) & ~(kAlign - 1)) - kHeader; }

// How a heap's walk must end: at `top`, which ends exactly at the heap's end (0: the
// chunk that does is the top); or, for an arena's older heap, at glibc's two fenceposts.
struct WalkEnd {
  uint64_t end = 0;
  uint64_t top = 0;
  bool fenceposts = false;
};

// The unused bytes of the heap whose chunks start at `first`; none unless every chunk
// agrees with glibc's invariants.
std::optional<std::vector<Range>> walk(Reader& r, uint64_t first, const WalkEnd& e) {
  std::vector<Range> out;
  if (e.end > kAddressLimit || first >= e.end) return std::nullopt;
  uint64_t c = first;
  if (c % kAlign != 0 || !(r.word(c + 8) & kPrevInUse)) return std::nullopt;
  while (c + kHeader <= e.end) {
    const uint64_t head = r.word(c + 8), size = head & ~kFlags;
    if (head & kIsMmapped || size % kAlign != 0) return std::nullopt;
    if (e.fenceposts && size == kHeader) {
      // The old top's end: a 16-byte chunk, then one of size 0 (malloc.c, sysmalloc).
      const bool last = c + 2 * kHeader <= e.end && (r.word(c + kHeader + 8) & ~kFlags) == 0;
      return last ? std::optional(std::move(out)) : std::nullopt;
    }
    if (size < kMinChunk || size > e.end - c) return std::nullopt;
    const bool is_top = e.top ? c == e.top : !e.fenceposts && c + size == e.end;
    if (is_top) {
      if (c + size != e.end) return std::nullopt;
      out.push_back({c + kHeader, e.end});
      return out;
    }
    const uint64_t next = c + size;
    if (next + kHeader > e.end) return std::nullopt;
    if (!(r.word(next + 8) & kPrevInUse)) {
      // Free: the next chunk holds a copy of its size, and glibc never leaves two free
      // chunks side by side (fastbin and tcache chunks count as in use).
      if (r.word(next) != size || !(head & kPrevInUse)) return std::nullopt;
      if (size > kFreeKept) out.push_back({c + kFreeKept, next});
    }
    c = next;
  }
  return std::nullopt;
}

// The part of a mapping from `start` (aligned) on.
std::optional<Memory::Mapping> mapping_from(const Memory& m, uint64_t start) {
  for (const auto& x : m.mappings)
    if (x.start <= start && start < x.end) return Memory::Mapping{start, x.end};
  return std::nullopt;
}

// A non-main arena's heap at `h.start`: heap_info {ar_ptr, prev, size, mprotect_size...};
// the arena itself follows the heap_info of its first heap.
std::optional<std::vector<Range>> arena_heap(Reader& r, const Memory& m, const Memory::Mapping& h) {
  const uint64_t base = h.start, ar = r.word(base), size = r.word(base + 16);
  if (size > kHeapMax || size < kPage || size > h.end - base || r.word(base + 24) < size) return std::nullopt;
  const uint64_t first_heap = ar & ~(kHeapMax - 1);
  const uint64_t info = ar - first_heap;
  if (std::find(std::begin(kHeapInfoSizes), std::end(kHeapInfoSizes), info) == std::end(kHeapInfoSizes))
    return std::nullopt;
  const auto owner = first_heap == base ? std::optional(h) : mapping_from(m, first_heap);
  if (!owner || owner->end - owner->start < info + kArenaSize) return std::nullopt;
  const uint64_t first = first_heap == base ? align_chunk(ar + kArenaSize) : base + info;
  const uint64_t top = r.word(ar + kTopOffset);
  WalkEnd e{base + size, 0, false};
  if (top >= first && top < base + size)
    e.top = top;
  else
    e.fenceposts = true;
  return walk(r, first, e);
}

}  // namespace

std::vector<Range> unused(const Memory& given) {
  // Adjacent mappings as one: a heap that grew after a fork is two.
  Memory memory = given;
  std::sort(memory.mappings.begin(), memory.mappings.end(),
            [](const Memory::Mapping& a, const Memory::Mapping& b) { return a.start < b.start; });
  std::vector<Memory::Mapping> joined;
  for (const auto& m : memory.mappings) {
    if (m.end <= m.start || m.end > kAddressLimit) continue;
    if (!joined.empty() && joined.back().end == m.start)
      joined.back().end = m.end;
    else
      joined.push_back(m);
  }
  memory.mappings = std::move(joined);
  Reader r(memory);
  std::vector<Range> out;
  auto add = [&](std::optional<std::vector<Range>> found) {
    if (found) out.insert(out.end(), found->begin(), found->end());
  };
  // A walk reads only pages the dump holds (others read as zeros, which no chunk is): a
  // made-up break costs no more than the dump's size.
  if (memory.brk > memory.brk_start) add(walk(r, align_chunk(memory.brk_start), WalkEnd{memory.brk, 0, false}));
  // A heap's mapping may have merged with a neighbour's (a thread's stack): every aligned
  // address in an anonymous mapping may start one.
  for (const auto& m : memory.mappings)
    for (uint64_t base = (m.start + kHeapMax - 1) & ~(kHeapMax - 1); base >= m.start && base < m.end; base += kHeapMax)
      add(arena_heap(r, memory, {base, m.end}));
  std::sort(out.begin(), out.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
  return out;
}

}  // namespace seamless::packfmt::malloc_heap
