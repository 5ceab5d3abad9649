// The C API (isoshard.h) and the library constructor.
#include "api/isoshard.h"

#include "api/alloc_impl.hpp"
#include "runtime/platform.hpp"
#include "runtime/shard/shard.hpp"

using namespace iso;

extern "C" {

void* iso_alloc(size_t size) { return api::alloc(size); }
void* iso_calloc(size_t n, size_t size) { return api::calloc(n, size); }
void* iso_realloc(void* p, size_t size) { return api::realloc(p, size); }
void iso_free(void* p) { api::free(p); }
size_t iso_chunksz(void* p) { return api::usable_size(p); }

void* iso_aligned_alloc(size_t alignment, size_t size) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    errno = EINVAL;
    return nullptr;
  }
  return api::aligned(alignment, size);
}

uint64_t iso_verify(void) {
  shard_verify_common();
  ShardFront* f = t_shard;
  return is_sentinel(f) ? 0 : shard_verify(static_cast<Shard*>(f));
}

void iso_flush(void) {
  ShardFront* f = t_shard;
  if (is_sentinel(f)) return;
  Shard* s = static_cast<Shard*>(f);
  shard_flush_outboxes(s);
  shard_drain_inbox(s);
}

int iso_trim(void) {
  if (!root_ready()) return 0;
  bool gave_back = false;
  ShardFront* f = t_shard;
  if (!is_sentinel(f)) {
    Shard* s = static_cast<Shard*>(f);
    std::uint64_t before = s->zones_released;
    shard_purge_donors(s, true);
    gave_back = s->zones_released != before;
  }
  gave_back |= common_shard_purge(true) != 0;
  gave_back |= shard_trim_pooled(os::now_ms(), true) != 0;
  return gave_back;
}

void iso_get_stats(struct iso_stats* out) {
  *out = iso_stats{};
  if (!root_ready()) return;
  RootStats r = root_stats();
  out->shards = shard_count();
  out->shards_pooled = shards_pooled();
  out->zones = r.zones;
  out->common_zones = common_shard_zones();
  out->big_live = r.big_live;
  out->big_cached_bytes = r.big_cached_bytes;
  out->metadata_bytes = r.metadata_bytes;
  ShardFront* f = t_shard;
  if (!is_sentinel(f)) {
    Shard* s = static_cast<Shard*>(f);
    out->remote_frees_sent = shard_remote_frees_sent(s);
    out->remote_frees_received = s->remote_frees_received;
    out->zones_released = s->zones_released;
    out->inbox_overflows = s->inbox.overflow_pushes();
    out->remote_batches_sent = s->remote_batches_sent;
  }
}

}  // extern "C"

// The main thread's shard and its default zones exist before main(), as in the seed.
[[gnu::constructor]] static void isoshard_init() {
  shard_bind_main();
}
