// Memory errors isoshard must catch: each aborts (SIGABRT) with exactly the one-line report
// of runtime/errors.cpp on stderr, naming the fault and the pointer:
//   isoshard: double free of 0x... in zone N (S-byte chunks)
//   isoshard: invalid free of 0x... (not in any zone)
//   isoshard: invalid free of 0x... in zone N (S-byte chunks)
//   isoshard: canary overwritten (heap overflow) of 0x... in zone N (S-byte chunks)
//
// Where the test knows the bad pointer before the death statement, the expected line names
// that exact address. That relies on the "fast" death-test style (fork without exec: the
// child has the parent's addresses); tests that start threads use "threadsafe" (re-exec),
// and there the address is matched by pattern only.
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

#include "api/isoshard.h"
#include "tests/api/test_support.hpp"

namespace {

using isotest::escape;
using isotest::opaque;

constexpr const char* kAnyPtr = "0x[0-9a-f]+";

std::string ptr_re(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);  // glibc: 0x + lowercase hex, as fmt prints it
  return buf;
}

// The regex for one report line. `ptr` is a regex (kAnyPtr or an exact address).
std::string report(const std::string& fault, const std::string& ptr, const std::string& where) {
  return "isoshard: " + fault + " of " + ptr + " " + where;
}
std::string in_zone(unsigned chunk_bytes) {
  return "in zone [0-9]+ \\(" + std::to_string(chunk_bytes) + "-byte chunks\\)";
}
const std::string kInAnyZone = "in zone [0-9]+ \\([0-9]+-byte chunks\\)";
const std::string kNotInAnyZone = "\\(not in any zone\\)";

auto aborted() { return testing::KilledBySignal(SIGABRT); }

// Frees p twice; noinline + opaque so the compiler neither sees nor "fixes" the double free.
[[gnu::noinline]] void free_twice(void* p) {
  free(opaque(p));
  free(opaque(p));
}

[[gnu::noinline]] void free_opaque(void* p) { free(opaque(p)); }

class Errors : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "fast"); }
};

TEST_F(Errors, DoubleFreeOfSmallChunkAborts) {
  for (std::size_t n : {16, 64, 1000, 32768}) {
    void* p = malloc(opaque(n));
    ASSERT_NE(p, nullptr);
    unsigned chunk = static_cast<unsigned>(malloc_usable_size(p));
    EXPECT_EXIT(free_twice(p), aborted(), report("double free", ptr_re(p), in_zone(chunk)))
        << "size " << n;
    free(p);
  }
}

TEST_F(Errors, DoubleFreeOfChunkStillInTheFreelistCacheAborts) {
  // The first free puts the chunk in the zone's freelist cache; the second must still be
  // caught (the bitmap says freed) rather than pushing it into the cache twice.
  void* p = malloc(opaque(std::size_t{48}));
  void* q = malloc(opaque(std::size_t{48}));
  ASSERT_NE(p, nullptr);
  EXPECT_EXIT(
      {
        free_opaque(p);
        free_opaque(q);
        free_opaque(p);
      },
      aborted(), report("double free", ptr_re(p), in_zone(48)));
  free(p);
  free(q);
}

TEST_F(Errors, DoubleFreeOfBigAllocationAborts) {
  // Above the largest size class (256 KiB): one slot, and runs of slots.
  for (std::size_t n : {std::size_t{300000}, std::size_t{1} << 20, std::size_t{9} << 20}) {
    void* p = malloc(opaque(n));
    ASSERT_NE(p, nullptr);
    EXPECT_EXIT(free_twice(p), aborted(), report("double free", ptr_re(p), "in zone [0-9]+"))
        << "size " << n;
    free(p);
  }
}

TEST_F(Errors, DoubleFreeOfUncachedBigAllocationAborts) {
  // Too big to be kept in the big-mapping cache: after the first free its slots are
  // returned. The second free must still abort (reported as invalid or double free),
  // never unmap or hand out anything.
  void* p = malloc(opaque(std::size_t{100} << 20));
  ASSERT_NE(p, nullptr);
  EXPECT_EXIT(free_twice(p), aborted(),
              "isoshard: (double|invalid) free of " + ptr_re(p));
  free(p);
}

TEST_F(Errors, DoubleDeleteAborts) {
  auto* v = new std::uint64_t[10];
  EXPECT_EXIT(
      {
        delete[] opaque(v);
        delete[] opaque(v);
      },
      aborted(), report("double free", ptr_re(v), in_zone(80)));
  delete[] v;
}

TEST_F(Errors, FreeOfStackAddressAborts) {
  char buf[64];
  escape(buf);
  EXPECT_EXIT(free_opaque(buf), aborted(), report("invalid free", ptr_re(buf), kNotInAnyZone));
}

char g_global_buffer[256];

TEST_F(Errors, FreeOfGlobalAborts) {
  EXPECT_EXIT(free_opaque(g_global_buffer), aborted(),
              report("invalid free", ptr_re(g_global_buffer), kNotInAnyZone));
  EXPECT_EXIT(free_opaque(g_global_buffer + 16), aborted(),
              report("invalid free", ptr_re(g_global_buffer + 16), kNotInAnyZone));
}

TEST_F(Errors, FreeIntoTheMiddleOfASmallChunkAborts) {
  for (std::size_t n : {32, 64, 100, 4096, 20000}) {
    auto* p = static_cast<char*>(malloc(opaque(n)));
    ASSERT_NE(p, nullptr);
    unsigned chunk = static_cast<unsigned>(malloc_usable_size(p));
    for (std::size_t off : {std::size_t{1}, std::size_t{16}, n / 2 & ~std::size_t{15}, n - 1}) {
      if (off == 0) continue;
      EXPECT_EXIT(free_opaque(p + off), aborted(), report("invalid free", ptr_re(p + off), in_zone(chunk)))
          << "size " << n << " offset " << off;
    }
    free(p);
  }
}

TEST_F(Errors, FreeIntoTheMiddleOfABigAllocationAborts) {
  // 300 KB (one slot), and 20 MiB (a run of slots: the later ones are "tail" slots).
  for (std::size_t n : {std::size_t{300000}, std::size_t{20} << 20}) {
    auto* p = static_cast<char*>(malloc(opaque(n)));
    ASSERT_NE(p, nullptr);
    for (std::size_t off : {std::size_t{16}, std::size_t{4096}, n / 2, n - 16}) {
      EXPECT_EXIT(free_opaque(p + off), aborted(),
                  report("invalid free", ptr_re(p + off), "in zone [0-9]+"))
          << "size " << n << " offset " << off;
    }
    free(p);
  }
}

TEST(ErrorsThreaded, FreeOfNeverAllocatedChunkInsideAZoneAborts) {
  // A fresh thread has fresh zones: in its 20 KB-class zone exactly one chunk was handed
  // out, so the chunk after it (or the padding after the last one) never was.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::thread t([] {
          auto* p = static_cast<char*>(malloc(opaque(std::size_t{19000})));
          free_opaque(p + malloc_usable_size(p));
        });
        t.join();
        std::fprintf(stderr, "free of a never-allocated chunk accepted\n");
        std::exit(0);
      },
      aborted(), report("invalid free", kAnyPtr, in_zone(20480)));
}

TEST_F(Errors, FreeOfUnusedAddressInsideTheReservedRangeAborts) {
  // isoshard reserves 1 TiB up front and hands out slots from its start; 256 GiB past a live
  // chunk is reserved but not any zone's.
  auto* p = static_cast<char*>(malloc(opaque(std::size_t{64})));
  ASSERT_NE(p, nullptr);
  char* unused = p + (std::size_t{1} << 38);
  EXPECT_EXIT(free_opaque(unused), aborted(), report("invalid free", ptr_re(unused), kNotInAnyZone));
  free(p);
}

TEST_F(Errors, UsableSizeOfForeignPointerAborts) {
  // malloc_usable_size must not guess about memory it does not own.
  char buf[32];
  escape(buf);
  EXPECT_EXIT(escape(reinterpret_cast<void*>(malloc_usable_size(opaque(static_cast<void*>(buf))))),
              aborted(), report("invalid free", ptr_re(buf), kNotInAnyZone));
}

TEST_F(Errors, ReallocOfPointerIntoTheMiddleOfAChunkAborts) {
  // realloc must validate its pointer like free does, not copy from and free a bogus chunk.
  auto* q = static_cast<char*>(malloc(opaque(std::size_t{200})));
  ASSERT_NE(q, nullptr);
  unsigned chunk = static_cast<unsigned>(malloc_usable_size(q));
  EXPECT_EXIT(escape(realloc(opaque(q + 16), 400)), aborted(),
              report("invalid free", ptr_re(q + 16), in_zone(chunk)));
  free(q);
}

// --- guard pages around big allocations --------------------------------------------------------

TEST_F(Errors, OverflowPastTheEndOfABigAllocationHitsAGuardPage) {
  // A page-multiple size ends exactly at the mapping's end: the next byte is a guard page.
  for (std::size_t n : {std::size_t{401408}, std::size_t{1} << 20}) {
    auto* p = static_cast<char*>(malloc(opaque(n)));
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(malloc_usable_size(p), n);
    p[n - 1] = 1;  // the last byte is fine
    EXPECT_EXIT(opaque(p)[opaque(n)] = 1, testing::KilledBySignal(SIGSEGV), "") << n;
    free(p);
  }
}

TEST_F(Errors, UnderflowBeforeABigAllocationHitsAGuardPage) {
  auto* p = static_cast<char*>(malloc(opaque(std::size_t{400000})));
  ASSERT_NE(p, nullptr);
  EXPECT_EXIT(opaque(p)[opaque(std::ptrdiff_t{-1})] = 1, testing::KilledBySignal(SIGSEGV), "");
  free(p);
}

TEST_F(Errors, UseOfAFreedBigAllocationFaultsOnceItsMappingIsGone) {
  // Too big for the big-mapping cache: free returns its pages at once, so a dangling write
  // faults instead of corrupting whatever comes next.
  // (Free and write both in the child: any allocation in between may legitimately reuse the
  // address range, e.g. for a new zone.)
  auto* p = static_cast<char*>(malloc(opaque(std::size_t{100} << 20)));
  ASSERT_NE(p, nullptr);
  p[12345] = 1;
  EXPECT_EXIT(
      {
        free_opaque(p);
        opaque(p)[12345] = 1;
      },
      testing::KilledBySignal(SIGSEGV), "");
  free(p);
}

// --- heap overflow into canaries ------------------------------------------------------------

// In a fresh thread (hence a fresh shard with fresh zones), allocates `count` chunks of
// 64 bytes and overflows by 16 bytes each one whose right neighbour is not one of ours (but
// is flanked by ours). Canary chunks sit at secret random positions (one per 64 chunks) among the
// chunks handed out, so some overflows must land on canaries. Then runs `after` on the same
// thread (the zones belong to it).
template <class After>
void overflow_chunks_on_fresh_thread(std::size_t count, After after) {
  std::thread t([&] {
    isotest::own_zones_from_now();  // iso_verify checks the thread's own zones
    std::vector<char*> chunks;
    chunks.reserve(count);
    for (std::size_t i = 0; i < count; ++i)
      chunks.push_back(static_cast<char*>(malloc(opaque(std::size_t{64}))));
    std::unordered_set<char*> ours(chunks.begin(), chunks.end());
    for (char* c : chunks) {
      // Only a neighbour that is not ours can be a canary; and one with our chunk past it
      // lies inside committed pages (the last committed chunk has PROT_NONE after it).
      if (ours.count(c + 64) || !ours.count(c + 128)) continue;
      std::memset(opaque(c) + 64, 0x41, 16);  // the bug under test: writes past the chunk
    }
    escape(chunks.data());
    after(chunks);
  });
  t.join();
}

TEST(ErrorsThreaded, HeapOverflowIntoCanaryIsCaughtWhenANeighbourIsFreed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        overflow_chunks_on_fresh_thread(4096, [](std::vector<char*>& chunks) {
          for (char* c : chunks) free(c);
        });
        std::fprintf(stderr, "no canary overwrite detected\n");
        std::exit(0);
      },
      aborted(), report("canary overwritten \\(heap overflow\\)", kAnyPtr, in_zone(64)));
}

TEST(ErrorsThreaded, IsoVerifyFindsAnOverwrittenCanary) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        overflow_chunks_on_fresh_thread(4096, [](std::vector<char*>&) { iso_verify(); });
        std::fprintf(stderr, "iso_verify returned\n");
        std::exit(0);
      },
      aborted(), report("canary overwritten \\(heap overflow\\)", kAnyPtr, in_zone(64)));
}

TEST(ErrorsThreaded, IsoVerifyPassesOnAnIntactHeap) {
  // The control for the test above: same allocations without the overflow.
  std::uint64_t in_use = 0;
  std::thread t([&] {
    isotest::own_zones_from_now();
    std::vector<void*> chunks;
    for (int i = 0; i < 4096; ++i) chunks.push_back(malloc(opaque(std::size_t{64})));
    in_use = iso_verify();
    for (void* c : chunks) free(c);
  });
  t.join();
  EXPECT_GE(in_use, 4096u);
}

TEST(ErrorsThreaded, UnderflowIntoCanaryIsCaughtWhenANeighbourIsFreed) {
  // Writes before the start of a chunk hit the tail of the chunk to its left.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::thread t([] {
          std::vector<char*> chunks;
          for (int i = 0; i < 4096; ++i) chunks.push_back(static_cast<char*>(malloc(opaque(std::size_t{128}))));
          std::unordered_set<char*> ours(chunks.begin(), chunks.end());
          for (char* c : chunks)
            if (!ours.count(c - 128) && ours.count(c - 256)) std::memset(opaque(c) - 8, 0x42, 8);
          for (char* c : chunks) free(c);
        });
        t.join();
        std::fprintf(stderr, "no canary overwrite detected\n");
        std::exit(0);
      },
      aborted(), report("canary overwritten \\(heap overflow\\)", kAnyPtr, in_zone(128)));
}

// --- errors that cross threads ---------------------------------------------------------------

TEST(ErrorsThreaded, DoubleFreeByAnotherThreadIsCaughtWhenTheOwnerTakesItBack) {
  // The remote free is queued; the owner finds the second copy when it drains its inbox.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        void* p = malloc(opaque(std::size_t{96}));
        std::thread t([p] {
          free_twice(p);
          iso_flush();
        });
        t.join();
        iso_flush();
        std::fprintf(stderr, "owner drained a double free silently\n");
        std::exit(0);
      },
      aborted(), report("double free", kAnyPtr, in_zone(96)));
}

TEST(ErrorsThreaded, RemoteFreeOfChunkTheOwnerAlreadyFreedIsCaught) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        void* p = malloc(opaque(std::size_t{96}));
        free_opaque(p);
        std::thread t([p] {
          free_opaque(p);
          iso_flush();
        });
        t.join();
        iso_flush();
        std::fprintf(stderr, "owner drained a double free silently\n");
        std::exit(0);
      },
      aborted(), report("double free", kAnyPtr, in_zone(96)));
}

TEST(ErrorsThreaded, RemoteFreeIntoTheMiddleOfAChunkAbortsInTheFreeingThread) {
  // The thread's first free to that owner opens a batch, on the slow path, which checks the
  // pointer itself.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto* p = static_cast<char*>(malloc(opaque(std::size_t{96})));
        std::thread t([p] { free_opaque(p + 32); });
        t.join();
        std::fprintf(stderr, "remote invalid free accepted\n");
        std::exit(0);
      },
      aborted(), report("invalid free", kAnyPtr, in_zone(96)));
}

TEST(ErrorsThreaded, RemoteFreeIntoTheMiddleOfAChunkIsCaughtWhenTheOwnerTakesItBack) {
  // Once a batch for the owner is open, the freeing thread appends the pointer unchecked; the
  // owner checks that it starts a chunk when it drains the batch.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        void* q = malloc(opaque(std::size_t{96}));
        auto* p = static_cast<char*>(malloc(opaque(std::size_t{96})));
        std::thread t([q, p] {
          free_opaque(q);       // opens the batch
          free_opaque(p + 32);  // goes into it
          iso_flush();
        });
        t.join();
        iso_flush();
        std::fprintf(stderr, "owner drained an invalid free silently\n");
        std::exit(0);
      },
      aborted(), report("invalid free", kAnyPtr, in_zone(96)));
}

}  // namespace
