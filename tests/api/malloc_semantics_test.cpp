// POSIX / C / C++ allocation semantics of isoshard, exercised through the overridden malloc
// family, the iso_* C API and operator new/delete. The binary links libisoshard.a, so every
// call here (and gtest's own) is served by isoshard.
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "api/isoshard.h"
#include "tests/api/test_support.hpp"

namespace {

using isotest::escape;
using isotest::fill_pattern;
using isotest::first_nonzero;
using isotest::first_pattern_mismatch;
using isotest::is_aligned;
using isotest::opaque;

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMaxSmall = 32768;
constexpr std::size_t kPtrdiffMax = static_cast<std::size_t>(PTRDIFF_MAX);

// Sizes no allocator can serve: all must fail cleanly with ENOMEM, never crash or succeed.
const std::size_t kUnservable[] = {
    SIZE_MAX,          SIZE_MAX - kPage, SIZE_MAX / 2 + 1, kPtrdiffMax + 1, kPtrdiffMax,
    std::size_t{1} << 50,  // 1 PiB: more than any address space isoshard reserves
};

// One allocator "family": the same semantics are required of malloc & co. and of iso_*.
struct Family {
  const char* name;
  void* (*alloc)(std::size_t);
  void* (*calloc)(std::size_t, std::size_t);
  void* (*realloc)(void*, std::size_t);
  void (*free)(void*);
  std::size_t (*usable)(void*);
  void* (*aligned)(std::size_t, std::size_t);
};

const Family kLibc{"libc",   ::malloc,           ::calloc,         ::realloc,
                   ::free,   ::malloc_usable_size, ::aligned_alloc};
const Family kIso{"iso_api", iso_alloc,  iso_calloc,       iso_realloc,
                  iso_free,  iso_chunksz, iso_aligned_alloc};

// Test names and messages show the family's name, not its bytes.
void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

class FamilyTest : public testing::TestWithParam<Family> {
 protected:
  const Family& f() const { return GetParam(); }
};

TEST_P(FamilyTest, ZeroSizeGivesUniqueFreeablePointers) {
  // malloc(0) must not return NULL here, and each result must be distinct: programs use
  // such pointers as unique keys.
  std::vector<void*> ptrs;
  std::set<void*> seen;
  for (int i = 0; i < 2000; ++i) {
    void* p = f().alloc(opaque(std::size_t{0}));
    ASSERT_NE(p, nullptr) << i;
    EXPECT_TRUE(is_aligned(p, 16)) << p;
    EXPECT_TRUE(seen.insert(p).second) << "malloc(0) returned " << p << " twice";
    ptrs.push_back(p);
  }
  for (void* p : ptrs) f().free(p);
}

TEST_P(FamilyTest, EveryChunkIs16ByteAlignedAndFullyUsableForSizes1To100000) {
  // x86-64 ABI: max_align_t is 16. Every size, small classes and big allocations alike.
  for (std::size_t n = 1; n <= 100000; ++n) {
    auto* p = static_cast<unsigned char*>(f().alloc(opaque(n)));
    ASSERT_NE(p, nullptr) << n;
    ASSERT_TRUE(is_aligned(p, 16)) << "size " << n << " got " << static_cast<void*>(p);
    std::size_t have = f().usable(p);
    ASSERT_GE(have, n) << n;
    // Touch both ends of the usable range: a wrong usable size or a guard page too close
    // would fault here.
    p[0] = 1;
    p[n - 1] = 2;
    p[have - 1] = 3;
    escape(p);
    f().free(p);
  }
}

TEST_P(FamilyTest, UsableSizeCoversRequestAndWholeRangeIsWritable) {
  EXPECT_EQ(f().usable(nullptr), 0u);
  for (std::size_t n : {1, 15, 16, 17, 100, 128, 129, 1000, 4096, 32767, 32768, 32769, 65536,
                        100000, 1 << 20}) {
    void* p = f().alloc(opaque(n));
    ASSERT_NE(p, nullptr) << n;
    std::size_t have = f().usable(p);
    EXPECT_GE(have, n) << n;
    // glibc promises the whole usable size may be used: write it all.
    std::memset(p, 0x5a, have);
    escape(p);
    EXPECT_EQ(f().usable(p), have) << n;
    f().free(p);
  }
}

TEST_P(FamilyTest, UnservableSizesFailWithENOMEM) {
  for (std::size_t n : kUnservable) {
    errno = 0;
    void* p = f().alloc(opaque(n));
    EXPECT_EQ(p, nullptr) << "size " << n;
    EXPECT_EQ(errno, ENOMEM) << "size " << n;
    if (p) f().free(p);
  }
  // The allocator still works afterwards.
  void* p = f().alloc(opaque(std::size_t{64}));
  ASSERT_NE(p, nullptr);
  f().free(p);
}

TEST_P(FamilyTest, CallocOverflowAndUnservableSizesFailWithENOMEM) {
  struct Case { std::size_t n, size; };
  const Case cases[] = {
      {SIZE_MAX, 2}, {2, SIZE_MAX}, {SIZE_MAX / 2 + 1, 2}, {std::size_t{1} << 32, std::size_t{1} << 32},
      {std::size_t{1} << 33, std::size_t{1} << 31},  // wraps to exactly 0: must not "succeed"
      {1, SIZE_MAX}, {kPtrdiffMax, 1}, {kPtrdiffMax / 16 + 1, 16},
  };
  for (const Case& c : cases) {
    errno = 0;
    void* p = f().calloc(opaque(c.n), opaque(c.size));
    EXPECT_EQ(p, nullptr) << c.n << " x " << c.size;
    EXPECT_EQ(errno, ENOMEM) << c.n << " x " << c.size;
    if (p) f().free(p);
  }
}

TEST_P(FamilyTest, CallocOfZeroElementsOrZeroSizeGivesUniquePointers) {
  void* a = f().calloc(opaque(std::size_t{0}), opaque(std::size_t{16}));
  void* b = f().calloc(opaque(std::size_t{16}), opaque(std::size_t{0}));
  void* c = f().calloc(opaque(std::size_t{0}), opaque(std::size_t{0}));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(c, nullptr);
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_NE(a, c);
  f().free(a);
  f().free(b);
  f().free(c);
}

TEST_P(FamilyTest, CallocZeroesReusedChunks) {
  // Freed chunks keep their old bytes ("freed" state); calloc must clear them when it hands
  // one out again, for small classes and for cached big mappings alike.
  const std::size_t sizes[] = {1,     16,    24,    64,    100,   1000,   4096,
                               20000, 32768, 40000, 100000, 1 << 20, 5 << 20};
  for (std::size_t n : sizes) {
    const int count = n > kMaxSmall ? 4 : 64;
    std::set<void*> dirty;
    std::size_t reused = 0;
    for (int round = 0; round < 8; ++round) {
      std::vector<void*> ptrs;
      for (int i = 0; i < count; ++i) {
        void* p = f().alloc(opaque(n));
        ASSERT_NE(p, nullptr) << n;
        std::memset(p, 0xAB, f().usable(p));
        escape(p);
        ptrs.push_back(p);
      }
      for (void* p : ptrs) {
        dirty.insert(p);
        f().free(p);
      }
      ptrs.clear();
      for (int i = 0; i < count; ++i) {
        void* p = f().calloc(opaque(std::size_t{1}), opaque(n));
        ASSERT_NE(p, nullptr) << n;
        reused += dirty.count(p);
        std::size_t bad = first_nonzero(p, n);
        ASSERT_EQ(bad, n) << "calloc(1, " << n << ") returned " << p
                          << " with a non-zero byte at offset " << bad
                          << (dirty.count(p) ? " (a reused chunk)" : "");
        ptrs.push_back(p);
      }
      for (void* p : ptrs) {
        std::memset(p, 0xAB, f().usable(p));
        escape(p);
        dirty.insert(p);
        f().free(p);
      }
    }
    // Otherwise this test would not test reuse at all.
    EXPECT_GT(reused, 0u) << "no chunk of size " << n << " was ever reused by calloc";
  }
}

TEST_P(FamilyTest, ReallocOfNullAllocates) {
  void* p = f().realloc(nullptr, opaque(std::size_t{100}));
  ASSERT_NE(p, nullptr);
  EXPECT_GE(f().usable(p), 100u);
  std::memset(p, 1, 100);
  f().free(p);
  void* big = f().realloc(nullptr, opaque(std::size_t{200000}));
  ASSERT_NE(big, nullptr);
  EXPECT_GE(f().usable(big), 200000u);
  std::memset(big, 1, 200000);
  f().free(big);
}

TEST_P(FamilyTest, ReallocToZeroReturnsMinimalFreeableAllocation) {
  // isoshard chose jemalloc/mimalloc behaviour: realloc(p, 0) frees p and returns a minimal
  // allocation, never NULL (glibc returns NULL, which makes "p = realloc(p, 0)" leak-free but
  // ambiguous with failure).
  for (std::size_t n : {1, 16, 64, 5000, 100000}) {
    void* p = f().alloc(opaque(n));
    ASSERT_NE(p, nullptr);
    fill_pattern(p, n, n);
    void* q = f().realloc(p, opaque(std::size_t{0}));
    ASSERT_NE(q, nullptr) << "realloc(p, 0) from size " << n;
    EXPECT_TRUE(is_aligned(q, 16));
    EXPECT_GE(f().usable(q), 0u);
    f().free(q);
  }
}

struct Resize { std::size_t from, to; };

TEST_P(FamilyTest, ReallocPreservesContentsAcrossSmallAndBigAllocations) {
  const Resize cases[] = {
      // small -> small, growing and shrinking, across classes
      {1, 17}, {24, 100}, {100, 24}, {1000, 5000}, {5000, 1000}, {16, 32768}, {32768, 16},
      // small -> big
      {1000, 100000}, {32768, 32769}, {64, 3 << 20},
      // big -> small
      {100000, 1000}, {32769, 32768}, {3 << 20, 64},
      // big -> big
      {40000, 80000}, {100000, 5 << 20}, {5 << 20, 100000}, {1 << 20, 600000}, {70000, 69000},
  };
  for (const Resize& c : cases) {
    void* p = f().alloc(opaque(c.from));
    ASSERT_NE(p, nullptr) << c.from;
    fill_pattern(p, c.from, c.from ^ c.to);
    void* q = f().realloc(p, opaque(c.to));
    ASSERT_NE(q, nullptr) << c.from << " -> " << c.to;
    EXPECT_TRUE(is_aligned(q, 16));
    EXPECT_GE(f().usable(q), c.to) << c.from << " -> " << c.to;
    std::size_t kept = std::min(c.from, c.to);
    EXPECT_EQ(first_pattern_mismatch(q, kept, c.from ^ c.to), kept)
        << "realloc " << c.from << " -> " << c.to << " lost contents";
    std::memset(q, 0x77, c.to);  // the whole new size is usable
    escape(q);
    f().free(q);
  }
}

TEST_P(FamilyTest, ReallocChainThroughEverySizeKeepsContents) {
  // One block grown step by step from 1 byte to 300 KB and shrunk back: every class and the
  // small/big boundary both ways, contents checked at each step.
  std::vector<std::size_t> steps;
  for (std::size_t n = 1; n < 300000; n = n * 5 / 4 + 1) steps.push_back(n);
  for (std::size_t i = steps.size(); i-- > 0;) steps.push_back(steps[i]);
  void* p = f().alloc(opaque(steps[0]));
  ASSERT_NE(p, nullptr);
  fill_pattern(p, steps[0], 42);
  for (std::size_t i = 1; i < steps.size(); ++i) {
    std::size_t prev = steps[i - 1], n = steps[i];
    void* q = f().realloc(p, opaque(n));
    ASSERT_NE(q, nullptr) << n;
    std::size_t kept = std::min(prev, n);
    ASSERT_EQ(first_pattern_mismatch(q, kept, 42), kept) << prev << " -> " << n;
    fill_pattern(q, n, 42);
    p = q;
  }
  f().free(p);
}

TEST_P(FamilyTest, ReallocWithinTheSameSizeClassStaysInPlace) {
  // 97..112 is one class, 17..32 another, 1281..1536 another: growing or shrinking inside
  // a class must not move (nor copy) the block.
  const Resize cases[] = {{100, 112}, {112, 97}, {17, 32}, {32, 17}, {1300, 1536}, {1536, 1281},
                          {32000, 32768}};
  for (const Resize& c : cases) {
    void* p = f().alloc(opaque(c.from));
    ASSERT_NE(p, nullptr);
    fill_pattern(p, c.from, 7);
    void* q = f().realloc(p, opaque(c.to));
    EXPECT_EQ(q, p) << c.from << " -> " << c.to << " moved";
    std::size_t kept = std::min(c.from, c.to);
    EXPECT_EQ(first_pattern_mismatch(q, kept, 7), kept);
    f().free(q ? q : p);
  }
}

TEST_P(FamilyTest, ReallocFailureReturnsNullWithENOMEMAndKeepsTheBlock) {
  for (std::size_t n : {64, 40000}) {
    void* p = f().alloc(opaque(n));
    ASSERT_NE(p, nullptr);
    fill_pattern(p, n, 99);
    for (std::size_t huge : kUnservable) {
      errno = 0;
      void* q = f().realloc(p, opaque(huge));
      EXPECT_EQ(q, nullptr) << n << " -> " << huge;
      EXPECT_EQ(errno, ENOMEM);
      if (q) {
        p = q;
        break;
      }
    }
    // POSIX: on failure the original block is untouched and still owned by the caller.
    EXPECT_EQ(first_pattern_mismatch(p, n, 99), n);
    EXPECT_GE(f().usable(p), n);
    f().free(p);
  }
}

TEST_P(FamilyTest, AlignedAllocationsUpTo8MiBAreAlignedAndUsable) {
  std::vector<std::size_t> alignments;
  for (std::size_t a = 1; a <= (1u << 20); a *= 2) alignments.push_back(a);
  alignments.push_back(std::size_t{8} << 20);
  for (std::size_t a : alignments) {
    const std::size_t sizes[] = {1, a / 2 + 1, a - 1 + (a == 1), a, a + 1, 3000, 40000, 2 * a + 16};
    for (std::size_t n : sizes) {
      void* p = f().aligned(opaque(a), opaque(n));
      ASSERT_NE(p, nullptr) << "alignment " << a << " size " << n;
      EXPECT_TRUE(is_aligned(p, a)) << "alignment " << a << " size " << n << " got " << p;
      EXPECT_TRUE(is_aligned(p, 16)) << p;
      EXPECT_GE(f().usable(p), n);
      std::memset(p, 0xc3, n);  // write the whole range
      escape(p);
      f().free(p);
    }
  }
}

TEST_P(FamilyTest, ManyLiveAlignedAllocationsDoNotOverlap) {
  // Aligned requests are served from power-of-two classes: check that the chunks handed out
  // side by side really are distinct and keep their contents.
  struct Live { void* p; std::size_t n; std::uint64_t seed; };
  std::vector<Live> live;
  std::uint64_t seed = 1;
  for (std::size_t a : {32, 64, 256, 4096, 65536}) {
    for (std::size_t n : {1, 33, 100, 700, 5000}) {
      for (int i = 0; i < 8; ++i) {
        void* p = f().aligned(opaque(a), opaque(n));
        ASSERT_NE(p, nullptr);
        ASSERT_TRUE(is_aligned(p, a));
        fill_pattern(p, n, ++seed);
        live.push_back({p, n, seed});
      }
    }
  }
  for (const Live& l : live) EXPECT_EQ(first_pattern_mismatch(l.p, l.n, l.seed), l.n) << l.p;
  for (const Live& l : live) f().free(l.p);
}

TEST_P(FamilyTest, AlignedAllocRejectsAlignmentThatIsNotAPowerOfTwo) {
  for (std::size_t a : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{48},
                        std::size_t{100}, std::size_t{4095}, std::size_t{4097}, SIZE_MAX}) {
    errno = 0;
    void* p = f().aligned(opaque(a), opaque(std::size_t{64}));
    EXPECT_EQ(p, nullptr) << "alignment " << a;
    EXPECT_EQ(errno, EINVAL) << "alignment " << a;
    if (p) f().free(p);
  }
}

TEST_P(FamilyTest, AlignedAllocOfUnservableSizeOrAlignmentFailsWithENOMEM) {
  for (std::size_t n : kUnservable) {
    errno = 0;
    void* p = f().aligned(opaque(std::size_t{64}), opaque(n));
    EXPECT_EQ(p, nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    if (p) f().free(p);
  }
  // An alignment as large as the address space is a power of two but cannot be served.
  errno = 0;
  void* p = f().aligned(opaque(std::size_t{1} << 62), opaque(std::size_t{64}));
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(errno, ENOMEM);
  if (p) f().free(p);
}

TEST_P(FamilyTest, BlocksFromThisFamilyMayBeFreedByTheOtherFamily) {
  // iso_* and malloc & co. are one heap: mixing them must work both ways.
  const Family& other = std::string(f().name) == "libc" ? kIso : kLibc;
  for (std::size_t n : {1, 64, 5000, 40000, 1 << 20}) {
    void* p = f().alloc(opaque(n));
    ASSERT_NE(p, nullptr);
    fill_pattern(p, n, n);
    EXPECT_EQ(other.usable(p), f().usable(p));
    void* q = other.realloc(p, opaque(2 * n));
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(first_pattern_mismatch(q, n, n), n);
    other.free(q);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyTest, testing::Values(kLibc, kIso),
                         [](const testing::TestParamInfo<Family>& info) {
                           return std::string(info.param.name);
                         });

TEST(Calloc, ZeroesChunksAfterTheirZoneGavePagesToAnotherSizeClass) {
  // An empty zone donates resident pages (its tail) to a growing zone of another class;
  // later it grows back. Every chunk it then hands to calloc must read as zero, including
  // one that straddles the old tail boundary (half old pages with old data, half new).
  // A fresh thread, so the zones involved start empty and the sequence is deterministic.
  const std::size_t pairs[][2] = {{12288, 16384}, {20480, 24576}, {3072, 5120},
                                  {1280, 1792},   {28672, 10240}, {7168, 14336}};
  std::size_t bad = 0;
  std::string first_bad;
  std::thread t([&] {
    for (const auto& pair : pairs) {
      const std::size_t a = pair[0], b = pair[1];
      for (int k = 1; k < 40; k += 3) {
        std::vector<void*> as, bs;
        for (int i = 0; i < k; ++i) {  // a zone of class a, dirty, then empty: a donor
          void* p = malloc(opaque(a));
          std::memset(p, 0xAB, a);
          as.push_back(p);
        }
        for (void* p : as) free(p);
        as.clear();
        for (int i = 0; i < k / 2 + 1; ++i) {  // class b grows from a's pages and stays live
          void* p = malloc(opaque(b));
          std::memset(p, 0xCD, b);
          bs.push_back(p);
        }
        for (int i = 0; i < k + 3; ++i) {  // class a grows back (no donor left: new pages)
          void* p = iso_calloc(1, opaque(a));
          std::size_t at = first_nonzero(p, a);
          if (at != a && bad++ == 0)
            first_bad = "calloc(1, " + std::to_string(a) + ") after donating to class " +
                        std::to_string(b) + " (k=" + std::to_string(k) + "): byte " +
                        std::to_string(at) + " is not zero";
          as.push_back(p);
        }
        for (void* p : as) free(p);
        for (void* p : bs) free(p);
      }
    }
  });
  t.join();
  EXPECT_EQ(bad, 0u) << bad << " calloc'd chunks were not zeroed; the first: " << first_bad;
}

TEST(Free, LeavesErrnoAlone) {
  // POSIX.1-2024: "The free() function shall not modify errno" (glibc guarantees it since
  // 2.33); code such as "errno = e; free(buf); return -1;" relies on it. Every kind of free:
  // own chunk, big mappings (cached and unmapped), NULL, and a thread's first call (which
  // sets up the thread's shard and its zones).
  void* small = malloc(opaque(std::size_t{100}));
  void* cached_big = malloc(opaque(std::size_t{1} << 20));
  void* unmapped_big = malloc(opaque(std::size_t{100} << 20));
  void* for_thread = malloc(opaque(std::size_t{100}));
  ASSERT_TRUE(small && cached_big && unmapped_big && for_thread);
  auto free_keeps_errno = [](void* p) {
    errno = ENOENT;
    free(p);
    return errno == ENOENT;
  };
  EXPECT_TRUE(free_keeps_errno(small)) << "errno " << errno;
  EXPECT_TRUE(free_keeps_errno(cached_big)) << "errno " << errno;
  EXPECT_TRUE(free_keeps_errno(unmapped_big)) << "errno " << errno;
  EXPECT_TRUE(free_keeps_errno(nullptr)) << "errno " << errno;
  int thread_errno = 0;
  std::thread t([&] {
    errno = ENOENT;
    free(for_thread);  // the thread's first allocator call: binds a shard
    thread_errno = errno;
  });
  t.join();
  EXPECT_EQ(thread_errno, ENOENT) << "a thread's first free changed errno to " << thread_errno;
}

// --- functions only the malloc family has --------------------------------------------------

TEST(Reallocarray, ResizesLikeReallocAndKeepsContents) {
  void* p = reallocarray(nullptr, opaque(std::size_t{10}), opaque(std::size_t{8}));
  ASSERT_NE(p, nullptr);
  EXPECT_GE(malloc_usable_size(p), 80u);
  fill_pattern(p, 80, 5);
  void* q = reallocarray(p, opaque(std::size_t{5000}), opaque(std::size_t{8}));
  ASSERT_NE(q, nullptr);
  EXPECT_GE(malloc_usable_size(q), 40000u);
  EXPECT_EQ(first_pattern_mismatch(q, 80, 5), 80u);
  std::memset(q, 0, 40000);
  free(q);
}

TEST(Reallocarray, OverflowFailsWithENOMEMAndKeepsTheBlock) {
  void* p = malloc(opaque(std::size_t{64}));
  ASSERT_NE(p, nullptr);
  fill_pattern(p, 64, 6);
  struct Case { std::size_t n, size; };
  for (Case c : {Case{SIZE_MAX, 2}, Case{std::size_t{1} << 33, std::size_t{1} << 31},
                 Case{std::size_t{1} << 32, std::size_t{1} << 32}, Case{kPtrdiffMax, 1}}) {
    errno = 0;
    void* q = reallocarray(p, opaque(c.n), opaque(c.size));
    EXPECT_EQ(q, nullptr) << c.n << " x " << c.size;
    EXPECT_EQ(errno, ENOMEM) << c.n << " x " << c.size;
    if (q) p = q;
  }
  EXPECT_EQ(first_pattern_mismatch(p, 64, 6), 64u);
  free(p);
}

TEST(PosixMemalign, AlignmentsFrom8To8MiBAreAlignedAndUsable) {
  std::vector<std::size_t> alignments;
  for (std::size_t a = sizeof(void*); a <= (1u << 20); a *= 2) alignments.push_back(a);
  alignments.push_back(std::size_t{8} << 20);
  for (std::size_t a : alignments) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, a - 1, a, a + 1, std::size_t{40000}}) {
      void* p = reinterpret_cast<void*>(0x1);
      int rc = posix_memalign(&p, opaque(a), opaque(n));
      ASSERT_EQ(rc, 0) << "alignment " << a << " size " << n;
      ASSERT_NE(p, nullptr);
      EXPECT_TRUE(is_aligned(p, a)) << "alignment " << a << " size " << n << " got " << p;
      EXPECT_GE(malloc_usable_size(p), n);
      std::memset(p, 0x3c, n);
      escape(p);
      free(p);
    }
  }
}

TEST(PosixMemalign, InvalidAlignmentIsEINVALAndLeavesMemptrAlone) {
  // Not a power of two, or not a multiple of sizeof(void*) (1, 2, 4 on x86-64).
  for (std::size_t a : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{4},
                        std::size_t{3}, std::size_t{12}, std::size_t{24}, std::size_t{4095},
                        SIZE_MAX}) {
    void* sentinel = reinterpret_cast<void*>(0xdeadbeef);
    void* p = sentinel;
    int rc = posix_memalign(&p, opaque(a), opaque(std::size_t{64}));
    EXPECT_EQ(rc, EINVAL) << "alignment " << a;
    EXPECT_EQ(p, sentinel) << "alignment " << a << ": *memptr changed on failure";
    if (rc == 0) free(p);
  }
}

TEST(PosixMemalign, UnservableSizeIsENOMEMAndLeavesMemptrAlone) {
  for (std::size_t n : kUnservable) {
    void* sentinel = reinterpret_cast<void*>(0xdeadbeef);
    void* p = sentinel;
    int rc = posix_memalign(&p, opaque(std::size_t{64}), opaque(n));
    EXPECT_EQ(rc, ENOMEM) << n;
    EXPECT_EQ(p, sentinel) << "size " << n << ": *memptr changed on failure";
    if (rc == 0) free(p);
  }
  void* sentinel = reinterpret_cast<void*>(0xdeadbeef);
  void* p = sentinel;
  EXPECT_EQ(posix_memalign(&p, opaque(std::size_t{1} << 62), opaque(std::size_t{16})), ENOMEM);
  EXPECT_EQ(p, sentinel);
}

TEST(Memalign, PowerOfTwoAlignmentsAreHonoured) {
  for (std::size_t a = 1; a <= (std::size_t{8} << 20); a *= 2) {
    for (std::size_t n : {std::size_t{1}, a, std::size_t{5000}}) {
      void* p = memalign(opaque(a), opaque(n));
      ASSERT_NE(p, nullptr) << a;
      EXPECT_TRUE(is_aligned(p, a)) << a << " " << p;
      EXPECT_GE(malloc_usable_size(p), n);
      std::memset(p, 1, n);
      escape(p);
      free(p);
    }
  }
}

TEST(Memalign, AlignmentThatIsNotAPowerOfTwoIsRoundedUp) {
  // glibc rounds a non-power-of-two alignment up to the next power of two.
  struct Case { std::size_t asked, honoured; };
  for (Case c : {Case{3, 4}, Case{24, 32}, Case{48, 64}, Case{100, 128}, Case{3000, 4096},
                 Case{5000, 8192}, Case{(1u << 20) + 1, 2u << 20}}) {
    for (int i = 0; i < 16; ++i) {
      void* p = memalign(opaque(c.asked), opaque(std::size_t{100}));
      ASSERT_NE(p, nullptr) << c.asked;
      EXPECT_TRUE(is_aligned(p, c.honoured)) << "memalign(" << c.asked << ") gave " << p;
      std::memset(p, 1, 100);
      escape(p);
      free(p);
    }
  }
}

TEST(Memalign, AlignmentZeroOrBelowSixteenActsLikeMalloc) {
  // glibc: an alignment up to the malloc alignment (0 included) is plain malloc.
  for (std::size_t a : {0, 1, 2, 3, 5, 8, 12, 16}) {
    void* p = memalign(opaque(a), opaque(std::size_t{100}));
    ASSERT_NE(p, nullptr) << "memalign(" << a << ", 100)";
    EXPECT_TRUE(is_aligned(p, 16)) << a;
    EXPECT_GE(malloc_usable_size(p), 100u);
    std::memset(p, 1, 100);
    escape(p);
    free(p);
  }
}

TEST(Memalign, UnservableSizeFailsWithENOMEM) {
  for (std::size_t n : kUnservable) {
    errno = 0;
    void* p = memalign(opaque(std::size_t{64}), opaque(n));
    EXPECT_EQ(p, nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    if (p) free(p);
  }
}

TEST(Valloc, ResultIsPageAlignedAndUsable) {
  ASSERT_EQ(static_cast<std::size_t>(sysconf(_SC_PAGESIZE)), kPage);
  for (std::size_t n : {0, 1, 100, 4095, 4096, 4097, 32768, 40000, 1 << 20}) {
    void* p = valloc(opaque(n));
    ASSERT_NE(p, nullptr) << n;
    EXPECT_TRUE(is_aligned(p, kPage)) << n << " " << p;
    EXPECT_GE(malloc_usable_size(p), n);
    std::memset(p, 2, n);
    escape(p);
    free(p);
  }
  for (std::size_t n : kUnservable) {
    errno = 0;
    void* p = valloc(opaque(n));
    EXPECT_EQ(p, nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    if (p) free(p);
  }
}

TEST(Pvalloc, ResultIsPageAlignedAndCoversWholePages) {
  for (std::size_t n : {0, 1, 100, 4095, 4096, 4097, 32768, 40000, 1 << 20}) {
    void* p = pvalloc(opaque(n));
    ASSERT_NE(p, nullptr) << n;
    EXPECT_TRUE(is_aligned(p, kPage)) << n << " " << p;
    // pvalloc rounds the size up to whole pages (pvalloc(0) gives one page): all usable.
    std::size_t rounded = n == 0 ? kPage : (n + kPage - 1) / kPage * kPage;
    EXPECT_GE(malloc_usable_size(p), rounded) << n;
    std::memset(p, 3, rounded);
    escape(p);
    free(p);
  }
  for (std::size_t n : kUnservable) {
    errno = 0;
    void* p = pvalloc(opaque(n));
    EXPECT_EQ(p, nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    if (p) free(p);
  }
}

TEST(MallocUsableSize, AgreesWithIsoChunkszAndIsStableWhileLive) {
  EXPECT_EQ(malloc_usable_size(nullptr), 0u);
  EXPECT_EQ(iso_chunksz(nullptr), 0u);
  std::vector<void*> ptrs;
  for (std::size_t n = 1; n < 200000; n = n * 3 / 2 + 7) {
    void* p = malloc(opaque(n));
    ASSERT_NE(p, nullptr);
    EXPECT_GE(malloc_usable_size(p), n);
    EXPECT_EQ(malloc_usable_size(p), iso_chunksz(p));
    ptrs.push_back(p);
  }
  for (void* p : ptrs) free(p);
}

TEST(Stats, BigAllocationsAreCountedWhileLive) {
  iso_stats before{}, during{}, after{};
  iso_get_stats(&before);
  EXPECT_GE(before.shards, 1u) << "the main thread is bound to a shard before main()";
  EXPECT_GE(before.zones, 1u);
  void* a = malloc(opaque(std::size_t{1} << 20));
  void* b = iso_alloc(opaque(std::size_t{300000}));  // above the largest size class
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  iso_get_stats(&during);
  EXPECT_EQ(during.big_live, before.big_live + 2);
  free(a);
  iso_free(b);
  iso_get_stats(&after);
  EXPECT_EQ(after.big_live, before.big_live);
}

TEST(AddressSpace, FreedBigAllocationsGiveTheirSlotsBack) {
  // isoshard reserves 1 TiB and cuts big allocations out of it. 4000 x 300 MiB is more than
  // that: only if each free returns its address range can the loop go on.
  for (int i = 0; i < 4000; ++i) {
    std::size_t n = (std::size_t{300} << 20) + std::size_t(i % 7) * 4096;
    auto* p = static_cast<char*>(malloc(opaque(n)));
    ASSERT_NE(p, nullptr) << "iteration " << i << ": address space exhausted";
    p[0] = 1;
    p[n - 1] = 1;
    free(p);
  }
}

TEST(AddressSpace, FreedHugelyAlignedAllocationsGiveTheirSlotsBack) {
  // A 1 GiB alignment costs a 1 GiB run of the reserved range; 1100 of them exceed 1 TiB.
  for (int i = 0; i < 1100; ++i) {
    void* p = aligned_alloc(opaque(std::size_t{1} << 30), opaque(std::size_t{64}));
    ASSERT_NE(p, nullptr) << "iteration " << i << ": address space exhausted";
    ASSERT_TRUE(is_aligned(p, std::size_t{1} << 30));
    std::memset(p, 1, 64);
    free(p);
  }
}

// --- operator new / delete -----------------------------------------------------------------

struct alignas(64) Line64 { unsigned char bytes[64]; };
struct alignas(4096) Page4096 { unsigned char bytes[4096]; };
struct alignas(65536) Huge64K { unsigned char bytes[100]; };

template <class T>
void check_over_aligned_new() {
  std::vector<T*> singles;
  for (int i = 0; i < 50; ++i) {
    T* t = new T;
    ASSERT_TRUE(is_aligned(t, alignof(T))) << alignof(T) << " " << static_cast<void*>(t);
    std::memset(t->bytes, i, sizeof t->bytes);
    singles.push_back(t);
  }
  for (std::size_t count : {1, 3, 17}) {
    T* arr = new T[opaque(count)];
    ASSERT_TRUE(is_aligned(arr, alignof(T))) << alignof(T) << " " << static_cast<void*>(arr);
    std::memset(static_cast<void*>(arr), 0x11, count * sizeof(T));
    escape(arr);
    delete[] arr;
  }
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(singles[i]->bytes[sizeof(T::bytes) - 1], static_cast<unsigned char>(i));
    delete singles[i];
  }
}

TEST(OperatorNew, OverAlignedTypesGetTheirAlignment) {
  check_over_aligned_new<Line64>();
  check_over_aligned_new<Page4096>();
  check_over_aligned_new<Huge64K>();
}

TEST(OperatorNew, EveryFormReturnsIsoshardMemoryAndEveryDeleteFormFreesIt) {
  // iso_chunksz aborts on a pointer isoshard does not own: it proves the override is in use.
  for (std::size_t n : {0, 1, 24, 1000, 40000}) {
    std::size_t want = n ? n : 1;
    void* a = ::operator new(opaque(n));
    void* b = ::operator new[](opaque(n));
    void* c = ::operator new(opaque(n), std::nothrow);
    void* d = ::operator new[](opaque(n), std::nothrow);
    void* e = ::operator new(opaque(n), std::align_val_t{256});
    void* g = ::operator new[](opaque(n), std::align_val_t{8192});
    void* h = ::operator new(opaque(n), std::align_val_t{1 << 20}, std::nothrow);
    void* k = ::operator new[](opaque(n), std::align_val_t{32}, std::nothrow);
    void* all[] = {a, b, c, d, e, g, h, k};
    std::set<void*> distinct(std::begin(all), std::end(all));
    EXPECT_EQ(distinct.size(), 8u) << "size " << n;
    for (void* p : all) {
      ASSERT_NE(p, nullptr) << n;
      EXPECT_TRUE(is_aligned(p, 16));
      EXPECT_GE(iso_chunksz(p), want);
      std::memset(p, 0x42, want);
      escape(p);
    }
    EXPECT_TRUE(is_aligned(e, 256));
    EXPECT_TRUE(is_aligned(g, 8192));
    EXPECT_TRUE(is_aligned(h, 1 << 20));
    EXPECT_TRUE(is_aligned(k, 32));
    ::operator delete(a, n);  // sized
    ::operator delete[](b);
    ::operator delete(c, std::nothrow);
    ::operator delete[](d, n);
    ::operator delete(e, n, std::align_val_t{256});
    ::operator delete[](g, std::align_val_t{8192});
    ::operator delete(h, std::align_val_t{1 << 20}, std::nothrow);
    ::operator delete[](k, std::align_val_t{32}, std::nothrow);
  }
  ::operator delete(nullptr);
  ::operator delete[](nullptr);
}

TEST(OperatorNew, NewOfZeroBytesGivesDistinctPointers) {
  void* a = ::operator new(opaque(std::size_t{0}));
  void* b = ::operator new(opaque(std::size_t{0}));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  ::operator delete(a);
  ::operator delete(b);
}

TEST(OperatorNew, NothrowNewOfHugeSizeReturnsNull) {
  for (std::size_t n : kUnservable) {
    EXPECT_EQ(::operator new(opaque(n), std::nothrow), nullptr) << n;
    EXPECT_EQ(::operator new[](opaque(n), std::nothrow), nullptr) << n;
    EXPECT_EQ(::operator new(opaque(n), std::align_val_t{64}, std::nothrow), nullptr) << n;
    EXPECT_EQ(::operator new[](opaque(n), std::align_val_t{8192}, std::nothrow), nullptr) << n;
  }
}

TEST(OperatorNew, NewOfHugeSizeThrowsBadAlloc) {
  for (std::size_t n : kUnservable) {
    EXPECT_THROW(escape(::operator new(opaque(n))), std::bad_alloc) << n;
    EXPECT_THROW(escape(::operator new[](opaque(n))), std::bad_alloc) << n;
    EXPECT_THROW(escape(::operator new(opaque(n), std::align_val_t{64})), std::bad_alloc) << n;
    EXPECT_THROW(escape(::operator new[](opaque(n), std::align_val_t{8192})), std::bad_alloc) << n;
  }
  // Through a new-expression as well.
  std::size_t count = opaque(kPtrdiffMax / 2);
  EXPECT_THROW(escape(new char[count]), std::bad_alloc);
}

// The new-handler is global: install one for the scope of a test and restore it after.
class NewHandlerTest : public testing::Test {
 protected:
  static inline int calls = 0;
  static inline int give_up_after = 0;
  static void counting_handler() {
    // Nothing to release here: after `give_up_after` calls, uninstall ourselves, which makes
    // operator new throw (or the nothrow form return null).
    if (++calls >= give_up_after) std::set_new_handler(nullptr);
  }
  static void throwing_handler() {
    ++calls;
    throw std::bad_alloc();
  }
  void SetUp() override {
    calls = 0;
    give_up_after = 3;
    previous_ = std::set_new_handler(counting_handler);
  }
  void TearDown() override { std::set_new_handler(previous_); }

 private:
  std::new_handler previous_ = nullptr;
};

TEST_F(NewHandlerTest, ThrowingNewCallsTheHandlerUntilItIsRemoved) {
  EXPECT_THROW(escape(::operator new(opaque(SIZE_MAX / 2))), std::bad_alloc);
  EXPECT_EQ(calls, 3);
}

TEST_F(NewHandlerTest, AlignedNewCallsTheHandlerToo) {
  EXPECT_THROW(escape(::operator new[](opaque(SIZE_MAX / 2), std::align_val_t{4096})),
               std::bad_alloc);
  EXPECT_EQ(calls, 3);
}

TEST_F(NewHandlerTest, NothrowNewCallsTheHandlerThenReturnsNull) {
  EXPECT_EQ(::operator new(opaque(SIZE_MAX / 2), std::nothrow), nullptr);
  EXPECT_EQ(calls, 3);
}

TEST_F(NewHandlerTest, HandlerThatThrowsMakesNothrowNewReturnNull) {
  std::set_new_handler(throwing_handler);
  EXPECT_EQ(::operator new(opaque(SIZE_MAX / 2), std::nothrow), nullptr);
  EXPECT_EQ(calls, 1);
  EXPECT_THROW(escape(::operator new(opaque(SIZE_MAX / 2))), std::bad_alloc);
  EXPECT_EQ(calls, 2);
}

TEST_F(NewHandlerTest, HandlerIsNotCalledWhenAllocationSucceeds) {
  void* p = ::operator new(opaque(std::size_t{1} << 20));
  void* q = ::operator new(opaque(std::size_t{100}), std::align_val_t{64});
  EXPECT_EQ(calls, 0);
  ::operator delete(p);
  ::operator delete(q, std::align_val_t{64});
}

}  // namespace

TEST(MallocTrim, ReturnsOneWhenItGaveMemoryBackAndZeroWhenThereWasNone) {
  malloc_trim(0);  // whatever earlier tests left
  // A thread frees a burst and exits: its shard waits in the pool with those pages.
  std::thread([] {
    std::vector<void*> ps;
    for (int i = 0; i < 256; ++i) {
      ps.push_back(malloc(4096));
      std::memset(ps.back(), 0x21, 4096);
    }
    for (void* p : ps) free(p);
  }).join();
  EXPECT_EQ(malloc_trim(0), 1);
  EXPECT_EQ(malloc_trim(0), 0);
}
