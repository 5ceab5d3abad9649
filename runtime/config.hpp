// Compile-time layout of isoshard. Every constant carries its unit in its name.
#pragma once
#include <cstddef>
#include <cstdint>

#ifndef ISOSHARD_PRE_POPULATE_PAGES
#define ISOSHARD_PRE_POPULATE_PAGES 1
#endif
#ifndef ISOSHARD_SANITIZE_CHUNKS
#define ISOSHARD_SANITIZE_CHUNKS 0
#endif
#ifndef ISOSHARD_MLOCK_METADATA
#define ISOSHARD_MLOCK_METADATA 1
#endif
#ifndef ISOSHARD_CANARIES
#define ISOSHARD_CANARIES 1
#endif

#define ISO_ALWAYS_INLINE [[gnu::always_inline]] inline
#define ISO_COLD [[gnu::noinline, gnu::cold]]
// On the runtime's extern declarations of its globals. -fvisibility=hidden marks definitions
// only: a TU that sees just the declaration (free's, in api/) reads the global through the
// GOT, which the linker relaxes to a lea and a load. Hidden, the load takes the address
// itself: free's slot lookup went from 14 instructions to 11.
#define ISO_HIDDEN [[gnu::visibility("hidden")]]
#define ISO_LIKELY(x) __builtin_expect(!!(x), 1)
#define ISO_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace iso {

inline constexpr std::size_t kPageBytes = 4096;
// x86-64 malloc ABI: every chunk is 16-byte aligned.
inline constexpr std::size_t kMinAlignBytes = 16;

// The root reserves one range and cuts it into aligned slots; a pointer's slot is
// (p - base) >> kZoneSlotShift, so free needs no hashing and no search.
inline constexpr unsigned kZoneSlotShift = 22;
inline constexpr std::size_t kZoneSlotBytes = std::size_t{1} << kZoneSlotShift;  // 4 MiB

// The range holds up to kMaxSlotCount slots; the zone table, bitmap, batch and shard arenas
// are reserved in proportion to the slots (see kReserveBytesPerSlot). The count is chosen
// once at start (root_slot_count): as many as fit half the process's RLIMIT_AS, halved again
// while a reservation fails (valgrind caps address space too). The other half of a capped
// address space stays with the program: its stacks, libraries and own mappings count
// against the same limit.
#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer maps shadow memory for every mapping, reserved or not: with 1 TiB reserved,
// root_init failed when two test processes ran at once. Reserve 64 times less under it.
inline constexpr std::size_t kMaxSlotCount = std::size_t{1} << 12;
#else
inline constexpr std::size_t kMaxSlotCount = std::size_t{1} << 18;  // 1 TiB
#endif
inline constexpr std::size_t kMinSlotCount = 16;  // 64 MiB

// A zone slot: [guard page][user pages ...][guard page].
inline constexpr std::size_t kZoneUserBytes = kZoneSlotBytes - 2 * kPageBytes;

// Zone pages are committed in growing steps so RSS follows use: one page first (most zones
// of a thread hold a few chunks), then 16 KiB and 64 KiB in all, then doubling up to
// steps of 4 MiB. Steps from kPrefaultFromBytes on are prefaulted (few page faults in big
// zones; never in the common shard's, see zone_grow); below it pages fault in as chunks are
// handed out, lowest address first.
inline constexpr std::size_t kCommitFirstStepBytes = 4 * 1024;
inline constexpr std::size_t kCommitQuadrupleBelowBytes = 64 * 1024;
inline constexpr std::size_t kCommitMaxStepBytes = 4096 * 1024;
inline constexpr std::size_t kPrefaultFromBytes = 256 * 1024;
// An empty zone keeps this much when it donates pages to another class: a thread's small
// zones that empty and refill all the time then never trade pages back and forth.
inline constexpr std::size_t kDonorFloorBytes = 16 * 1024;
// A shard waiting in the pool keeps this much of each zone: the next thread most likely
// needs it again, and releasing it at every thread exit would cost a syscall per zone.
inline constexpr std::size_t kPooledZoneKeepBytes = 64 * 1024;

// Page donation between zones (see zone.hpp PageSupply): smallest run worth a mapping, and
// how many donors a grow step looks at.
inline constexpr std::size_t kMinDonationBytes = 64 * 1024;
inline constexpr unsigned kMaxDonorsLooked = 16;

// The freelist cache: free chunk indices popped first on the hot path. 128 rather than 64:
// refills scan a third as much in producer/consumer (docs/DESIGN.md), and it still fits the
// zone's table entry.
inline constexpr unsigned kFreelistCacheSlots = 128;

// One canary chunk per this many chunks, at a secret random position in each group.
inline constexpr unsigned kCanaryGroupChunks = 64;

// Cross-thread frees travel in batches of this many chunks, or fewer once they hold this many
// bytes: big chunks go home soon, so a thread that frees to many owners holds at most about
// kOutboxCount * kRemoteBatchBytes of their memory back (16 MiB).
inline constexpr unsigned kRemoteBatchChunks = 61;
inline constexpr std::uint32_t kRemoteBatchBytes = 256 * 1024;
// Bounded Boost.Lockfree inbox per shard; overflow goes to an intrusive list.
inline constexpr unsigned kInboxSlots = 64;
// The owner looks at its inbox at least this often (in its own frees), besides its slow paths.
inline constexpr unsigned kFreesPerChores = 4096;
// Outboxes a shard keeps open at once (direct-mapped by destination shard id; at most 64, one
// bit each in a mask). With 4 (and a send at every slow path), larson's 16 threads on 16 CPUs
// ran 6x slower than 4 threads: a thread freeing to 15 owners in random order through 4 slots
// evicts a batch whenever the next free's owner differs from the one its slot holds (about 3
// frees in 4), and every batch is a queue push and two operations on the global batch pool.
inline constexpr unsigned kOutboxCount = 64;
// The allocation slow path sends the open batches every this many calls, not at each, so
// batches fill before they travel.
inline constexpr unsigned kSlowPathsPerFlush = 8;
// Batches a shard keeps from its drains for its own sends, off the global pool.
inline constexpr unsigned kSpareBatches = 16;

// Pooled shards one purge trims at most: each costs a few syscalls per zone, inside some
// thread's malloc. A thousand threads that exit together are trimmed over a few seconds.
inline constexpr std::uint32_t kPoolTrimsPerPurge = 8;

// The common shard's stripes at most (a lock and a set of zones each; one bit each in a mask).
inline constexpr unsigned kMaxCommonStripes = 64;

// Big allocations freed are kept mapped up to this many bytes to avoid mmap churn.
inline constexpr std::size_t kBigCacheBytes = 64ull << 20;
inline constexpr unsigned kBigCacheEntries = 8;

// Metadata reserved per slot of the range (committed as it is used). A slot's zone has one
// bitmap of at most 64 KiB (16-byte chunks); batches and shards only scale with it.
inline constexpr std::size_t kZoneEntryBytesBound = 2048;  // checked against sizeof(Zone)
inline constexpr std::size_t kBitmapBytesPerSlot = 64 * 1024;
inline constexpr std::size_t kBatchBytesPerSlot = 64 * 1024;
inline constexpr std::size_t kShardsPerSlot = 4;
inline constexpr std::size_t kShardBytesBound = 8 * 1024;  // checked against sizeof(Shard)
inline constexpr std::size_t kReserveBytesPerSlot =
    kZoneSlotBytes + kZoneEntryBytesBound + kBitmapBytesPerSlot + kBatchBytesPerSlot +
    kShardsPerSlot * (kShardBytesBound + sizeof(void*));

}  // namespace iso
