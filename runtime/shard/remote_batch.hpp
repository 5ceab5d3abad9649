// Cross-thread frees travel in batches: a freeing thread fills one batch per destination
// shard (its outbox) and hands it over with one queue operation. Batches are runtime
// metadata from their own arena, never malloc, and are recycled through a lock-free pool.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

// A batch is 64 words: three of header, then the chunks. Its fill word counts in words from
// the batch's start, so the next chunk goes to word batch_words(fill) with no offset to add, and
// a full batch has bit 6 set.
inline constexpr unsigned kBatchHeaderWords = 3;
inline constexpr unsigned kBatchFillBytesShift = 8;

// Words of a batch in use (header and chunks), from its fill word.
ISO_ALWAYS_INLINE constexpr std::size_t batch_words(std::uint64_t fill) { return fill & 0xff; }

struct RemoteBatch {
  std::atomic<std::uint32_t> link;  // pool or inbox overflow list (never both at once)
  std::uint32_t id;
  std::uint32_t dest_tag;           // destination shard id + 1 (see Zone::owner_tag)
  // Header words plus chunks in it (low byte) and their bytes (from bit 8), bumped by one
  // scalar add per chunk. As two adjacent fields GCC paired their updates into SSE loads and
  // stores, and producer/consumer (2+2, split) took 0.151 s instead of 0.108.
  std::uint64_t fill;
  // The freed pointers as they were passed to free: the owner finds the zone and checks the
  // chunk, so the freeing thread does neither.
  std::uint64_t entries[kRemoteBatchChunks];

  std::uint32_t count() const {
    return static_cast<std::uint32_t>(batch_words(fill) - kBatchHeaderWords);
  }
};
static_assert(sizeof(RemoteBatch) == 512, "batch ids map to addresses with a shift");
static_assert(offsetof(RemoteBatch, entries) == kBatchHeaderWords * sizeof(std::uint64_t));
static_assert(kBatchHeaderWords + kRemoteBatchChunks == 64, "full at bit 6 of fill");

// The fill word of an empty batch.
inline constexpr std::uint64_t kEmptyBatchFill = kBatchHeaderWords;
// What one chunk of chunk_bytes adds to a batch's fill word.
ISO_ALWAYS_INLINE constexpr std::uint64_t batch_fill_step(std::uint32_t chunk_bytes) {
  return std::uint64_t{chunk_bytes} << kBatchFillBytesShift | 1;
}
// Fill bits that say a batch must go: 64 words used, or kRemoteBatchBytes reached. One test
// (a sign-extended 32-bit immediate) where two compares were.
inline constexpr std::uint64_t kBatchFullBits =
    std::uint64_t{64} | ~((std::uint64_t{kRemoteBatchBytes} << kBatchFillBytesShift) - 1);
static_assert((kRemoteBatchBytes & (kRemoteBatchBytes - 1)) == 0, "one bit test for the bytes");
static_assert(static_cast<std::int64_t>(kBatchFullBits) >= INT32_MIN, "fits a test immediate");
ISO_ALWAYS_INLINE constexpr bool batch_full(std::uint64_t fill) {
  return (fill & kBatchFullBits) != 0;
}

// The batch every closed outbox holds: its destination is no shard's, so a remote free's
// one test (an open batch for the zone's owner) fails there, and it is never written.
extern constinit RemoteBatch g_no_batch ISO_HIDDEN;
inline constexpr std::uint32_t kNoDestTag = ~std::uint32_t{0};

// Sets up the batch arena; called by shard_init under the shard-init lock (idempotent).
bool batch_pool_init();
// A batch from the pool (or freshly carved); nullptr only when the batch arena is exhausted.
RemoteBatch* batch_get();
void batch_put(RemoteBatch* b);
RemoteBatch* batch_by_id(std::uint32_t id);

}  // namespace iso
