// Cross-thread frees travel in batches: a freeing thread fills one batch per destination
// shard (its outbox) and hands it over with one queue operation. Batches are runtime
// metadata from their own arena, never malloc, and are recycled through a lock-free pool.
#pragma once
#include <atomic>
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

struct RemoteBatch {
  std::atomic<std::uint32_t> link;  // pool or inbox overflow list (never both at once)
  std::uint32_t id;
  std::uint32_t dest;               // destination shard id
  std::uint32_t cpu;                // the sender's CPU when it sent the batch
  // Chunks in it (low half) and their bytes (high half), bumped by one scalar add per chunk.
  // As two adjacent fields GCC paired their updates into SSE loads and stores, and
  // producer/consumer (2+2, split) took 0.151 s instead of 0.108.
  std::uint64_t fill;
  // Chunks as (zone id, chunk index), found and checked by the freeing thread: the owner
  // goes straight to the bitmap word.
  std::uint64_t entries[kRemoteBatchChunks];

  std::uint32_t count() const { return static_cast<std::uint32_t>(fill); }
};

ISO_ALWAYS_INLINE constexpr std::uint64_t batch_fill_step(std::uint32_t chunk_bytes) {
  return std::uint64_t{chunk_bytes} << 32 | 1;
}

ISO_ALWAYS_INLINE std::uint64_t remote_entry(std::uint32_t zone_id, std::uint32_t idx) {
  return std::uint64_t{zone_id} << 32 | idx;
}
ISO_ALWAYS_INLINE std::uint32_t remote_entry_zone(std::uint64_t e) {
  return static_cast<std::uint32_t>(e >> 32);
}
ISO_ALWAYS_INLINE std::uint32_t remote_entry_chunk(std::uint64_t e) {
  return static_cast<std::uint32_t>(e);
}
static_assert(sizeof(RemoteBatch) == 512, "batch ids map to addresses with a shift");

// Sets up the batch arena; called by shard_init under the shard-init lock (idempotent).
bool batch_pool_init();
// A batch from the pool (or freshly carved); nullptr only when the batch arena is exhausted.
RemoteBatch* batch_get();
void batch_put(RemoteBatch* b);
RemoteBatch* batch_by_id(std::uint32_t id);

}  // namespace iso
