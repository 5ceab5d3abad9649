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
  std::uint32_t count;
  void* chunks[kRemoteBatchChunks];
};
static_assert(sizeof(RemoteBatch) == 512, "batch ids map to addresses with a shift");

// Sets up the batch arena; called by shard_init under the shard-init lock (idempotent).
bool batch_pool_init();
// A batch from the pool (or freshly carved); nullptr only when the batch arena is exhausted.
RemoteBatch* batch_get();
void batch_put(RemoteBatch* b);
RemoteBatch* batch_by_id(std::uint32_t id);

}  // namespace iso
