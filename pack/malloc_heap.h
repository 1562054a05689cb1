// SPDX-License-Identifier: Apache-2.0
// The bytes of a dumped process that nothing will ever read: the bodies of free chunks in
// its glibc malloc heaps. A program that frees memory leaves it dirty in the heap (a JVM's
// compiler threads leave tens of megabytes of it in their arenas), and CRIU dumps it like
// any other page; zeroed, it costs a pack nothing. Only glibc's own bookkeeping of a free
// chunk is kept (its size, its list links, the next chunk's copy of its size), and a heap
// is touched only when a walk over all its chunks agrees with glibc's invariants from its
// first chunk to its last, so memory that merely resembles a heap is left alone.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace seamless::packfmt::malloc_heap {

// A dumped task's memory as far as the walk needs it.
struct Memory {
  struct Mapping {
    uint64_t start = 0, end = 0;  // an anonymous, private, readable and writable mapping
  };
  std::vector<Mapping> mappings;
  // The program's break: glibc's main heap runs from brk_start to brk (both 0: none).
  uint64_t brk_start = 0, brk = 0;
  // The 4096 bytes of the page at `address` (page-aligned), or null when the dump holds
  // none (the page reads as zeros).
  std::function<const unsigned char*(uint64_t address)> page;
};

struct Range {
  uint64_t start = 0, end = 0;
  bool operator==(const Range&) const = default;
};

// The free chunks' bodies and the top chunks' of every heap that walks cleanly (glibc's
// chunk layout on 64-bit, as since glibc 2.26), in address order.
std::vector<Range> unused(const Memory& memory);

}  // namespace seamless::packfmt::malloc_heap
