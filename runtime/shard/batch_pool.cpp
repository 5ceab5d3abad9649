#include "runtime/metadata_arena.hpp"
#include "runtime/root_arena.hpp"
#include "runtime/shard/id_stack.hpp"
#include "runtime/shard/remote_batch.hpp"
#include "runtime/shard/shard.hpp"

namespace iso {
namespace {

struct BatchLink {
  std::atomic<std::uint32_t>& operator()(std::uint32_t id) const { return batch_by_id(id)->link; }
};

constinit MetadataArena g_batches;
constinit IdStack<BatchLink> g_free_batches;
constinit std::atomic<bool> g_ready{false};

}  // namespace

constinit RemoteBatch g_no_batch = {{}, 0, kNoDestTag, 0, {}};

// Under the shard-init lock, which fork's prepare handler also takes: a fork can no longer
// land between "someone is setting the arena up" and "it is ready", which left a forked child
// spinning forever on its first cross-thread free (ForkUnderThreads, once in a few hundred).
bool batch_pool_init() {
  if (g_ready.load(std::memory_order_relaxed)) return true;
  // In proportion to the root's range; halves while the reservation fails.
  if (!g_batches.init_up_to(root_slot_count() * kBatchBytesPerSlot,
                            kMinSlotCount * kBatchBytesPerSlot))
    return false;
  g_ready.store(true, std::memory_order_release);
  return true;
}

RemoteBatch* batch_by_id(std::uint32_t id) {
  return reinterpret_cast<RemoteBatch*>(g_batches.base() + std::size_t{id} * sizeof(RemoteBatch));
}

RemoteBatch* batch_get() {
  if (!g_ready.load(std::memory_order_acquire) && !shard_init()) return nullptr;
  std::uint32_t id;
  if (g_free_batches.pop(id, BatchLink{})) return batch_by_id(id);
  void* p = g_batches.alloc(sizeof(RemoteBatch), sizeof(RemoteBatch));
  if (!p) return nullptr;
  auto* b = static_cast<RemoteBatch*>(p);
  b->id = static_cast<std::uint32_t>((static_cast<char*>(p) - g_batches.base()) / sizeof(RemoteBatch));
  return b;
}

void batch_put(RemoteBatch* b) { g_free_batches.push(b->id, BatchLink{}); }

}  // namespace iso
