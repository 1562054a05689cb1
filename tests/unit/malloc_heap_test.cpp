// SPDX-License-Identifier: Apache-2.0
// Unused malloc memory, found in a real process: a child of this test allocates and frees
// in its main heap and in three threads' arenas, stops, and is read through
// /proc/PID/mem the way CRIU reads it. What the walk calls unused covers what the child
// freed and nothing it still holds; zeroed in the child, the child's data is intact and
// its allocator goes on working. Its memory written as a CRIU dump of two tasks packs
// smaller and unpacks to exactly those pages with that memory zeroed.
#include "pack/malloc_heap.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/fd.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "pack/pack.h"
#include "tests/support/criu_writer.h"

namespace seamless::packfmt::malloc_heap {
namespace {

constexpr int kThreads = 3, kBlocks = 160;
constexpr int kHeaps = kThreads + 1;  // heap 0: the main thread's
// Blocks of the last thread when its arena is to outgrow one heap (64 MiB).
constexpr int kManyBlocks = 7000;

// What the child tells the parent, in memory both share.
struct Block {
  uint64_t address = 0, size = 0;
};
struct Shared {
  int blocks[kHeaps] = {kBlocks, kBlocks, kBlocks, kBlocks};
  Block live[kHeaps][kManyBlocks];
  Block freed[kHeaps][kManyBlocks];
  int ready = 0;
};

// Block i of a heap holds bytes no compressor can shrink, from a seed of its own.
void fill(unsigned char* p, size_t size, int heap, int i) {
  uint64_t x = uint64_t(heap) << 32 | uint64_t(i + 1);
  for (size_t k = 0; k < size; ++k) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[k] = static_cast<unsigned char>(x);
  }
}
bool holds(const unsigned char* p, size_t size, int heap, int i) {
  std::string expected(size, '\0');
  fill(reinterpret_cast<unsigned char*>(expected.data()), size, heap, i);
  return std::memcmp(p, expected.data(), size) == 0;
}

// Allocates blocks of 1200..20000 bytes (above the tcache's and the fastbins' sizes, so
// freed ones go back to the heap), fills each with its own bytes, frees every other one,
// the last of them merging into the top.
void fill_heap(Shared* s, int heap) {
  static void* blocks[kHeaps][kManyBlocks];
  const int n = s->blocks[heap];
  for (int i = 0; i < n; ++i) {
    const size_t size = 1200 + size_t(i * 7919) % 18800;
    blocks[heap][i] = std::malloc(size);
    fill(static_cast<unsigned char*>(blocks[heap][i]), size, heap, i);
    (i % 2 ? s->freed : s->live)[heap][i] = {reinterpret_cast<uint64_t>(blocks[heap][i]), size};
  }
  for (int i = 1; i < n; i += 2) std::free(blocks[heap][i]);
}

// After the parent zeroed what it found: every live block still holds its bytes, and
// malloc, calloc and free go on working in this heap.
bool check_heap(Shared* s, int heap) {
  for (int i = 0; i < s->blocks[heap]; i += 2)
    if (!holds(reinterpret_cast<const unsigned char*>(s->live[heap][i].address), s->live[heap][i].size, heap, i))
      return false;
  for (int round = 0; round < 3; ++round) {
    void* more[kBlocks];
    for (int i = 0; i < kBlocks; ++i) {
      const size_t size = 16 + size_t(i * 104729 + round) % 30000;
      more[i] = i % 3 ? std::malloc(size) : std::calloc(1, size);
      if (!more[i]) return false;
      if (i % 3 == 0)
        for (size_t k = 0; k < size; ++k)
          if (static_cast<unsigned char*>(more[i])[k]) return false;
      std::memset(more[i], 0x5a, size);
    }
    for (int i = 0; i < kBlocks; ++i) std::free(more[i]);
  }
  return true;
}

struct ThreadArgs {
  Shared* shared;
  int heap;
  pthread_barrier_t* filled;
  pthread_barrier_t* resumed;
  bool good = false;
};

void* thread_main(void* p) {
  auto* a = static_cast<ThreadArgs*>(p);
  fill_heap(a->shared, a->heap);
  pthread_barrier_wait(a->filled);
  pthread_barrier_wait(a->resumed);
  a->good = check_heap(a->shared, a->heap);
  return nullptr;
}

[[noreturn]] void child(Shared* s) {
  pthread_barrier_t filled, resumed;
  pthread_barrier_init(&filled, nullptr, kThreads + 1);
  pthread_barrier_init(&resumed, nullptr, kThreads + 1);
  pthread_t threads[kThreads];
  ThreadArgs args[kThreads];
  for (int t = 0; t < kThreads; ++t) {
    args[t] = {s, t + 1, &filled, &resumed};
    pthread_create(&threads[t], nullptr, thread_main, &args[t]);
  }
  fill_heap(s, 0);  // after pthread_create's own allocations, which would reuse its blocks
  pthread_barrier_wait(&filled);
  __atomic_store_n(&s->ready, 1, __ATOMIC_SEQ_CST);
  raise(SIGSTOP);
  pthread_barrier_wait(&resumed);
  bool good = check_heap(s, 0);
  for (int t = 0; t < kThreads; ++t) {
    pthread_join(threads[t], nullptr);
    good = good && args[t].good;
  }
  _exit(good ? 0 : 1);
}

// The child's memory as a CRIU dump holds it: its anonymous private writable mappings,
// read through /proc/PID/mem, pages that are all zeros left out.
struct ChildMemory {
  Memory memory;
  std::map<uint64_t, std::string> pages;
};

ChildMemory read_child(pid_t pid) {
  ChildMemory out;
  std::ifstream maps(cat("/proc/", pid, "/maps"));
  UniqueFd mem(::open(cat("/proc/", pid, "/mem").c_str(), O_RDONLY));
  EXPECT_TRUE(mem.valid());
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode, path;
    in >> range >> perms >> offset >> dev >> inode;
    std::getline(in, path);
    path.erase(0, path.find_first_not_of(' '));
    if (perms != "rw-p" || inode != "0" || (!path.empty() && path != "[heap]")) continue;
    const uint64_t start = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
    const uint64_t end = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    out.memory.mappings.push_back({start, end});
    if (path == "[heap]") {  // the break may have grown into a second mapping since the fork
      if (!out.memory.brk_start || start < out.memory.brk_start) out.memory.brk_start = start;
      out.memory.brk = std::max(out.memory.brk, end);
    }
    for (uint64_t a = start; a < end; a += 4096) {
      std::string page(4096, '\0');
      EXPECT_EQ(::pread(mem.get(), page.data(), 4096, off_t(a)), 4096) << std::hex << a;
      if (page.find_first_not_of('\0') != std::string::npos) out.pages[a] = std::move(page);
    }
  }
  out.memory.page = [&pages = out.pages](uint64_t a) -> const unsigned char* {
    auto it = pages.find(a);
    return it == pages.end() ? nullptr : reinterpret_cast<const unsigned char*>(it->second.data());
  };
  return out;
}

bool covered(const std::vector<Range>& ranges, uint64_t start, uint64_t end) {
  for (const auto& r : ranges) {
    if (r.end <= start) continue;
    if (r.start > start) return false;
    start = r.end;
    if (start >= end) return true;
  }
  return start >= end;
}

bool overlaps(const std::vector<Range>& ranges, uint64_t start, uint64_t end) {
  for (const auto& r : ranges)
    if (r.start < end && start < r.end) return true;
  return false;
}

class MallocHeap : public ::testing::Test {
 protected:
  // Starts the child; `outgrown`: its last thread's arena takes a second heap.
  void start(bool outgrown) {
    void* m = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    shared_ = new (m) Shared();
    if (outgrown) shared_->blocks[kHeaps - 1] = kManyBlocks;
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) child(shared_);
    int status = 0;
    ASSERT_EQ(::waitpid(pid_, &status, WUNTRACED), pid_);
    ASSERT_TRUE(WIFSTOPPED(status));
    ASSERT_EQ(__atomic_load_n(&shared_->ready, __ATOMIC_SEQ_CST), 1);
  }
  void TearDown() override {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (shared_) ::munmap(shared_, sizeof(Shared));
  }
  // Resumes the child; true when it exits 0 (its blocks intact, its allocator working).
  bool child_is_well() {
    ::kill(pid_, SIGCONT);
    int status = 0;
    reaped_ = ::waitpid(pid_, &status, 0) == pid_;
    return reaped_ && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  Shared* shared_ = nullptr;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

TEST_F(MallocHeap, FreedMemoryIsFoundAndZeroingItHarmsNothing) {
  start(true);
  if (HasFatalFailure()) return;
  std::set<uint64_t> heaps;  // the last thread's arena's, by their 64 MiB-aligned start
  for (int i = 1; i < kManyBlocks; i += 2) heaps.insert(shared_->freed[kHeaps - 1][i].address >> 26);
  ASSERT_GE(heaps.size(), 2u) << "the last arena has outgrown its first heap";
  ChildMemory m = read_child(pid_);
  ASSERT_GT(m.memory.brk, m.memory.brk_start) << "the child has a main heap";
  const auto ranges = unused(m.memory);
  ASSERT_FALSE(ranges.empty());
  uint64_t total = 0;
  for (const auto& r : ranges) total += r.end - r.start;
  for (int heap = 0; heap < kHeaps; ++heap) {
    for (int i = 0; i < shared_->blocks[heap]; i += 2) {
      const Block& b = shared_->live[heap][i];
      EXPECT_FALSE(overlaps(ranges, b.address - 16, b.address + b.size)) << "live block " << i << " of heap " << heap;
    }
    for (int i = 1; i < shared_->blocks[heap]; i += 2) {
      const Block& b = shared_->freed[heap][i];
      // A free chunk keeps 48 bytes of glibc's (16 before the block, 32 in it) and the
      // block's last 8 may be the next chunk's copy of its size.
      EXPECT_TRUE(covered(ranges, b.address + 32, b.address + b.size - 8))
          << "freed block " << i << " of heap " << heap;
    }
  }
  const bool arena_found = std::any_of(ranges.begin(), ranges.end(), [&](const Range& r) {
    return r.start < m.memory.brk_start || r.start >= m.memory.brk;
  });
  EXPECT_TRUE(arena_found) << "the threads' arenas are walked too";

  UniqueFd mem(::open(cat("/proc/", pid_, "/mem").c_str(), O_RDWR));
  ASSERT_TRUE(mem.valid());
  for (const auto& r : ranges) {
    const std::string zeros(r.end - r.start, '\0');
    ASSERT_EQ(::pwrite(mem.get(), zeros.data(), zeros.size(), off_t(r.start)), ssize_t(zeros.size()));
  }
  EXPECT_TRUE(child_is_well()) << total << " bytes zeroed";
}

TEST_F(MallocHeap, AHeapThatBreaksGlibcsRulesAnywhereIsLeftAlone) {
  start(false);
  if (HasFatalFailure()) return;
  ChildMemory m = read_child(pid_);
  const auto ranges = unused(m.memory);
  // Change one freed block's footer (the next chunk's copy of its size) in heap 2's arena.
  const Block& b = shared_->freed[2][kBlocks / 2 + 1];
  ASSERT_TRUE(covered(ranges, b.address + 32, b.address + b.size - 8));
  uint64_t footer = 0;
  for (const auto& r : ranges)
    if (r.start <= b.address + 32 && b.address + 32 < r.end) footer = r.end;
  ASSERT_NE(footer, 0u);
  auto& page = m.pages[footer & ~uint64_t(4095)];
  page.resize(4096);
  page[footer & 4095] ^= 0x10;
  const auto broken = unused(m.memory);
  EXPECT_FALSE(overlaps(broken, b.address, b.address + b.size)) << "that heap is not zeroed at all";
  EXPECT_FALSE(broken.empty()) << "the other heaps still are";
  EXPECT_LT(broken.size(), ranges.size());

  // Memory that is no heap: the same pages, a size word of the main heap's first chunk gone.
  auto& first = m.pages[m.memory.brk_start];
  first.resize(4096);
  std::memset(first.data() + 8, 0, 8);
  for (const auto& r : unused(m.memory))
    EXPECT_FALSE(r.start >= m.memory.brk_start && r.end <= m.memory.brk) << "the main heap is left alone";
}

// A dump made up to look like heaps (a hostile process in a sink writes what it likes into
// its memory): mappings up to the top of the address space, a break beyond user space,
// every page present full of plausible chunk headers, a heap_info claiming an arena. The
// walks end, and what they find lies in the memory the process itself claims (zeroing it
// harms nobody else); a break beyond user space is no heap.
TEST(MallocHeapMadeUp, MemoryThatOnlyLooksLikeAHeapStaysWithinItself) {
  std::string page(4096, '\0');
  for (size_t k = 0; k < page.size(); k += 16) {
    const uint64_t prev_size = 32, head = 32 | 1;  // endless 32-byte chunks, all in use
    std::memcpy(page.data() + k, &prev_size, 8);
    std::memcpy(page.data() + k + 8, &head, 8);
  }
  std::string info = page;
  const uint64_t base = uint64_t(1) << 40, words[] = {base + 48, 0, 1 << 20, 1 << 20};
  std::memcpy(info.data(), words, sizeof words);
  Memory m;
  m.mappings = {{0, ~uint64_t(4095)}, {base, base + (uint64_t(1) << 30)}, {uint64_t(1) << 46, uint64_t(1) << 47}};
  m.page = [&](uint64_t a) -> const unsigned char* {
    if (a == base) return reinterpret_cast<const unsigned char*>(info.data());
    const bool present = a < (uint64_t(4) << 20) || (a >= base && a < base + (2 << 20));
    return present ? reinterpret_cast<const unsigned char*>(page.data()) : nullptr;
  };
  for (auto brk : {std::pair<uint64_t, uint64_t>{0, ~uint64_t(0)}, {uint64_t(1) << 62, ~uint64_t(0)}}) {
    m.brk_start = brk.first, m.brk = brk.second;
    EXPECT_TRUE(unused(m).empty()) << std::hex << brk.first << "-" << brk.second;
  }
  m.brk_start = 4096, m.brk = 1 << 20;
  for (const auto& r : unused(m)) EXPECT_TRUE(r.start >= m.brk_start && r.end <= m.brk) << std::hex << r.start;
}

// The child's memory as CRIU would dump it, twice (as if it had forked a worker): for
// each task a pagemap, an mm image with its anonymous mappings and break, and its pages.
void write_dump(const ChildMemory& m, const std::string& dir) {
  using test::criu_writer::bytes;
  using test::criu_writer::image;
  using test::criu_writer::num;
  constexpr uint64_t kRegular = 1, kAnonPrivate = 1 << 9, kPresent = 1 << 2;
  std::string pages;
  std::vector<std::string> pagemap;
  for (const auto& [address, page] : m.pages) {
    pages += page;
    pagemap.push_back(num(1, address) + num(2, 1) + num(4, kPresent));
  }
  std::string mm = num(1, 0) + num(2, 0) + num(3, 0) + num(4, 0) + num(5, 0) + num(6, m.memory.brk_start) +
                   num(7, m.memory.brk) + num(8, 0) + num(9, 0) + num(10, 0) + num(11, 0) + num(12, 0);
  for (const auto& x : m.memory.mappings)
    mm += bytes(14, num(1, x.start) + num(2, x.end) + num(3, 0) + num(4, 0) + num(5, 3) + num(6, 0x22) +
                        num(7, kRegular | kAnonPrivate) + num(8, uint64_t(-1)));
  for (int task : {7, 8}) {
    std::vector<std::string> entries{num(1, uint64_t(task - 6))};
    entries.insert(entries.end(), pagemap.begin(), pagemap.end());
    ASSERT_TRUE(sys::write_file(cat(dir, "/pagemap-", task, ".img"), image(0x56084025, entries)).ok());
    ASSERT_TRUE(sys::write_file(cat(dir, "/mm-", task, ".img"), image(0x57492820, {mm})).ok());
    ASSERT_TRUE(sys::write_file(cat(dir, "/pages-", task - 6, ".img"), pages).ok());
  }
}

TEST_F(MallocHeap, APackStoresFreeMallocMemoryAsZeros) {
  start(false);
  if (HasFatalFailure()) return;
  ChildMemory m = read_child(pid_);
  // Only the threads' heaps (the main heap holds all this test process had allocated
  // before the fork).
  std::set<uint64_t> heaps;
  for (int heap = 1; heap < kHeaps; ++heap) heaps.insert(shared_->live[heap][0].address >> 26);
  std::erase_if(m.pages, [&](const auto& p) { return !heaps.count(p.first >> 26); });
  const auto ranges = unused(m.memory);
  TempDir dir = TempDir::create().value();
  std::filesystem::create_directories(dir / "src/gw");
  write_dump(m, dir / "src/gw");
  if (HasFatalFailure()) return;
  // What the pages must unpack to: the same with the free memory zeroed.
  std::string expected;
  uint64_t zeroed = 0;
  for (auto& [address, page] : m.pages) {
    for (const auto& r : ranges) {
      const uint64_t from = std::max(address, r.start), to = std::min(address + 4096, r.end);
      if (from < to) std::memset(page.data() + (from - address), 0, to - from), zeroed += to - from;
    }
    expected += page;
  }
  ASSERT_GT(zeroed, uint64_t(kThreads) * kBlocks / 2 * 1000) << "most of what the child freed is dumped";

  std::map<bool, uint64_t> size;
  for (bool zero : {true, false}) {
    PackOptions o;
    o.zero_free_heap = zero;
    o.compression = Compression::Gzip;
    PackStats stats;
    const std::string pack = dir / cat("p", zero, ".pack");
    auto w = write_pack(pack, "{}", dir / "src", list_pack_files(dir / "src"), o, &stats);
    ASSERT_TRUE(w.ok()) << w.error().message;
    EXPECT_EQ(stats.free_heap_bytes, zero ? 2 * zeroed : 0);
    EXPECT_GE(stats.copies, m.pages.size()) << "the second task's pages are copies of the first's";
    size[zero] = std::filesystem::file_size(pack);
    const std::string out = dir / cat("out", zero);
    auto u = unpack(pack, out);
    ASSERT_TRUE(u.ok()) << u.error().message;
    const std::string original = sys::read_file(dir / "src/gw/pages-1.img", 1 << 30).value();
    for (const char* image : {"/gw/pages-1.img", "/gw/pages-2.img"})
      EXPECT_TRUE(sys::read_file(out + image, 1 << 30).value() == (zero ? expected : original)) << image;
  }
  EXPECT_LT(size[true] * 10, size[false] * 6) << "the child freed about half of what it wrote";
}

}  // namespace
}  // namespace seamless::packfmt::malloc_heap
