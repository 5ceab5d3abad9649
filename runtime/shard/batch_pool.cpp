#include "runtime/errors.hpp"
#include "runtime/metadata_arena.hpp"
#include "runtime/shard/id_stack.hpp"
#include "runtime/shard/remote_batch.hpp"

namespace iso {
namespace {

struct BatchLink {
  std::atomic<std::uint32_t>& operator()(std::uint32_t id) const { return batch_by_id(id)->link; }
};

constinit MetadataArena g_batches;
constinit IdStack<BatchLink> g_free_batches;
constinit std::atomic<bool> g_ready{false};
constinit std::atomic<bool> g_initing{false};

void ensure_arena() {
  if (g_ready.load(std::memory_order_acquire)) return;
  bool expected = false;
  if (g_initing.compare_exchange_strong(expected, true)) {
    if (!g_batches.init(kBatchArenaBytes)) fatal(Fault::kOutOfMetadata, nullptr, -1);
    g_ready.store(true, std::memory_order_release);
  }
  while (!g_ready.load(std::memory_order_acquire)) __builtin_ia32_pause();
}

}  // namespace

RemoteBatch* batch_by_id(std::uint32_t id) {
  return reinterpret_cast<RemoteBatch*>(g_batches.base() + std::size_t{id} * sizeof(RemoteBatch));
}

RemoteBatch* batch_get() {
  ensure_arena();
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
