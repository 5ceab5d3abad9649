// Binding threads to shards. A thread binds on its first allocation or free; at exit its
// shard goes to a pool (a Boost.Lockfree stack of ids, with an unbounded IdStack behind it
// for when the stack is full) and the next thread to bind takes it, zones and all, so thread
// churn costs no memory growth. Shard storage grows lazily from a reserved arena.
#include <pthread.h>
#include <sched.h>

#include <cerrno>

#include <boost/lockfree/stack.hpp>
#include <new>

#include "runtime/errors.hpp"
#include "runtime/metadata_arena.hpp"
#include "runtime/options.hpp"
#include "runtime/platform.hpp"
#include "runtime/root_arena.hpp"
#include "runtime/shard/id_stack.hpp"
#include "runtime/shard/shard.hpp"
#include "runtime/shard/tsan_ignore.hpp"

namespace iso {
namespace {

inline constexpr unsigned kShardPoolSlots = 1024;
using ShardStack = boost::lockfree::stack<std::uint32_t, boost::lockfree::capacity<kShardPoolSlots>>;

struct ShardLink {
  std::atomic<std::uint32_t>& operator()(std::uint32_t id) const {
    return shard_by_id(id)->pool_link;
  }
};

constinit SpinLock g_init_lock;
constinit std::atomic<bool> g_ready{false};
constinit SpinLock g_hooks_lock;
constinit std::atomic<bool> g_hooks_ready{false};
constinit MetadataArena g_shard_arena;
// Indexed by shard id, made writable as ids are handed out (see MetadataArena).
constinit MetadataArena g_shard_table_arena;
constinit Shard** g_shard_table = nullptr;
constinit std::atomic<std::uint32_t> g_shard_count{0};
constinit std::atomic<std::uint32_t> g_pooled{0};
constinit std::atomic<std::uint32_t> g_untrimmed_pooled{0};
constinit std::atomic<std::uint64_t> g_last_pool_trim_ms{0};
// Where the next purge's sweep of the shard table starts (it trims a few shards at a time).
constinit std::atomic<std::uint32_t> g_pool_trim_cursor{0};
constinit ShardStack* g_pool = nullptr;
constinit IdStack<ShardLink> g_pool_overflow;
constinit pthread_key_t g_exit_key = 0;

// Set once the thread's shard is released at exit: later frees (other destructors) must
// not bind a shard that nothing would release again.
thread_local constinit bool t_exited [[gnu::tls_model("initial-exec")]] = false;

}  // namespace

bool shard_init() {
  if (g_ready.load(std::memory_order_acquire)) return true;
  if (!root_init()) return false;
  LockGuard guard(g_init_lock);
  if (g_ready.load(std::memory_order_relaxed)) return true;
  static_assert(sizeof(Shard) <= kShardBytesBound, "kReserveBytesPerSlot counts shards by it");
  // In proportion to the root's range; each halves while its reservation fails. A full
  // table or arena sends threads to the common shards.
  std::size_t max_shards = root_slot_count() * kShardsPerSlot;
  std::size_t min_shards = kMinSlotCount * kShardsPerSlot;
  constexpr std::size_t kShardStride = (sizeof(Shard) + 63) & ~std::size_t{63};
  constexpr std::size_t kPoolBytes = sizeof(ShardStack) + kPageBytes;
  if (!batch_pool_init()) return false;
  if (!g_shard_table_arena.init_up_to(max_shards * sizeof(Shard*), min_shards * sizeof(Shard*)))
    return false;
  // The pool stack comes first; the halving takes shards only.
  bool arena = false;
  for (std::size_t n = max_shards; !arena && n >= min_shards; n /= 2)
    arena = g_shard_arena.init(kPoolBytes + n * kShardStride);
  if (!arena) return false;
  g_shard_table = reinterpret_cast<Shard**>(g_shard_table_arena.base());
  // Boost.Lockfree's constructors are not constexpr: build it here, in our own memory.
  void* pool = g_shard_arena.alloc(sizeof(ShardStack), 64);
  if (!pool) return false;  // its pages could not be made writable
  g_pool = new (pool) ShardStack();
  g_ready.store(true, std::memory_order_release);
  return true;
}

Shard* shard_create() {
  LockGuard guard(g_init_lock);
  std::uint32_t id = g_shard_count.load(std::memory_order_relaxed);
  if (!g_shard_table_arena.commit_prefix(std::size_t{id + 1} * sizeof(Shard*))) return nullptr;
  void* mem = g_shard_arena.alloc(sizeof(Shard), 64);
  if (!mem) return nullptr;
  auto* s = new (mem) Shard();
  for (unsigned c = 0; c < kClassCount; ++c) {
    s->current[c] = &g_empty_zone;
    s->avail[c] = kNoZone;
  }
  shard_drop_outboxes(s);  // all closed
  s->donors = kNoZone;
  s->frees_until_chores = kFreesPerChores;
  s->id = id;
  g_shard_table[id] = s;
  g_shard_count.store(id + 1, std::memory_order_release);
  return s;
}

namespace {

Shard* take_pooled() {
  std::uint32_t id;
  if (boost_lockfree_call([&] { return g_pool->pop(id); }) || g_pool_overflow.pop(id, ShardLink{})) {
    g_pooled.fetch_sub(1, std::memory_order_relaxed);
    return shard_by_id(id);
  }
  return nullptr;
}

// The shard's pages stay as its thread left them: the next thread to bind it (thread churn
// takes the newest pooled shard first) reuses them without a syscall or a page fault. One
// that waits retain_ms is trimmed by another thread's purge (shard_trim_pooled).
void give_to_pool(Shard* s) {
  std::uint64_t now = os::now_ms();
  s->untrimmed_since_ms.store(now ? now : 1, std::memory_order_relaxed);
  g_untrimmed_pooled.fetch_add(1, std::memory_order_relaxed);
  s->bound.store(false, std::memory_order_release);
  g_pooled.fetch_add(1, std::memory_order_relaxed);
  if (!boost_lockfree_call([&] { return g_pool->bounded_push(s->id); }))
    g_pool_overflow.push(s->id, ShardLink{});
}

// Holds s for the calling thread. A pooled shard is held by anyone else only while a purge
// trims it (shard_trim_pooled): then the binding thread waits for that trim to end.
void claim(Shard* s) {
  while (s->bound.exchange(true, std::memory_order_acquire)) sched_yield();
  if (s->untrimmed_since_ms.exchange(0, std::memory_order_relaxed) != 0)
    g_untrimmed_pooled.fetch_sub(1, std::memory_order_relaxed);
}

// Runs in the first destructor round. Other keys' destructors may still free or allocate
// after it: their frees go home one batch each, their allocations use the common shard, so
// nothing binds a shard that no destructor would release.
void on_thread_exit(void*) {
  shard_release_current();
  t_exited = true;
}

void prefork() {
  common_shard_prefork();
  g_init_lock.lock();
  root_prefork();
}

void postfork_parent() {
  root_postfork(false);
  g_init_lock.unlock();
  common_shard_postfork(false);
}

// Only the forking thread survives fork. The other bound shards were snapshot wherever their
// threads were, possibly mid-operation: rebuild each from its bitmaps before the pool hands
// it to a thread of the child. Their outboxes are dropped (a batch being filled may be
// half-written): those chunks stay allocated, a bounded leak rather than a corruption.
void postfork_child() {
  root_postfork(true);
  g_init_lock.reset_in_child();
  common_shard_postfork(true);
  ShardFront* self = t_shard;
  std::uint32_t n = shard_count();
  auto vanished = [self](const Shard* s) {
    return s != self && !shard_is_common(s) && s->bound.load(std::memory_order_relaxed);
  };
  for (std::uint32_t id = 0; id < n; ++id) {
    Shard* s = shard_by_id(id);
    if (!vanished(s)) continue;
    for (unsigned c = 0; c < kClassCount; ++c) s->avail[c] = kNoZone;
    shard_drop_outboxes(s);
    s->donors = kNoZone;
    s->donor_bytes = 0;
  }
  std::uint32_t slots = root_stats().slots_used;
  for (std::uint32_t slot = 0; slot < slots; ++slot) {
    Zone& z = g_zones[slot];
    if (z.kind != SlotKind::kZone || z.owner == nullptr) continue;
    auto* s = static_cast<Shard*>(const_cast<void*>(z.owner));
    if (!vanished(s)) continue;
    zone_rebuild(z);
    if (s->current[z.cls] != &z) {
      z.next_avail = s->avail[z.cls];
      s->avail[z.cls] = z.id;
    }
  }
  for (std::uint32_t id = 0; id < n; ++id) {
    Shard* s = shard_by_id(id);
    if (vanished(s)) give_to_pool(s);
  }
}

}  // namespace

Shard* shard_by_id(std::uint32_t id) { return g_shard_table[id]; }
std::uint32_t shard_count() { return g_shard_count.load(std::memory_order_acquire); }
std::uint32_t shards_pooled() { return g_pooled.load(std::memory_order_relaxed); }

bool shard_thread_exited() { return t_exited; }

void shard_install_hooks() {
  if (g_hooks_ready.load(std::memory_order_acquire)) return;
  LockGuard guard(g_hooks_lock);
  if (g_hooks_ready.load(std::memory_order_relaxed)) return;
  // Both may allocate (glibc's atfork list): the caller is already bound, so that is safe.
  pthread_key_create(&g_exit_key, on_thread_exit);
  pthread_atfork(prefork, postfork_parent, postfork_child);
  g_hooks_ready.store(true, std::memory_order_release);
}

Shard* shard_bind() {
  if (!shard_init()) return nullptr;
  Shard* s = take_pooled();
  if (!s) s = shard_create();
  if (!s) return nullptr;
  claim(s);
  t_shard = s;
  shard_install_hooks();
  if (!t_exited) pthread_setspecific(g_exit_key, s);  // may calloc: we are bound by now
  shard_drain_inbox(s);
  return s;
}

Shard* shard_bind_main() {
  ShardFront* f = t_shard;
  Shard* s = is_sentinel(f) ? shard_bind() : static_cast<Shard*>(f);
  if (!s || s->lock_metadata) return s;
  // Every other shard makes a zone of a class once its thread allocates more than lightly:
  // a thousand idle threads cost no zones at all.
  s->lock_metadata = true;
  shard_make_default_zones(s);
  return s;
}

void shard_release_current() {
  ShardFront* f = t_shard;
  if (is_sentinel(f)) return;
  Shard* s = static_cast<Shard*>(f);
  shard_flush_outboxes(s);
  shard_drain_inbox(s);
  t_shard = &g_sentinel_shard;
  give_to_pool(s);
}

bool shard_pool_trim_pending() {
  return g_untrimmed_pooled.load(std::memory_order_relaxed) != 0;
}

std::size_t shard_trim_pooled(std::uint64_t now, bool all) {
  if (!all) {
    if (!shard_pool_trim_pending()) return 0;
    std::uint64_t last = g_last_pool_trim_ms.load(std::memory_order_relaxed);
    if (now - last <= g_options.retain_ms / 2 ||
        !g_last_pool_trim_ms.compare_exchange_strong(last, now, std::memory_order_relaxed))
      return 0;
  }
  std::size_t bytes = 0;
  std::uint32_t n = shard_count();
  std::uint32_t first = all ? 0 : g_pool_trim_cursor.load(std::memory_order_relaxed);
  std::uint32_t trims = 0;
  std::uint32_t k = 0;
  for (; k < n && (all || trims < kPoolTrimsPerPurge); ++k) {
    std::uint32_t id = first + k < n ? first + k : first + k - n;  // first <= n: counts only grow
    Shard* s = shard_by_id(id);
    // Measured with today's retain_ms (a test may change it while shards wait).
    std::uint64_t since = s->untrimmed_since_ms.load(std::memory_order_relaxed);
    if (since == 0 || (!all && (since > now || now - since < g_options.retain_ms))) continue;
    bool free = false;  // bound (or held by another trimmer): leave it
    if (!s->bound.compare_exchange_strong(free, true, std::memory_order_acquire)) continue;
    if (s->untrimmed_since_ms.exchange(0, std::memory_order_relaxed) != 0) {  // not bound meanwhile
      g_untrimmed_pooled.fetch_sub(1, std::memory_order_relaxed);
      shard_drain_inbox(s);
      bytes += shard_trim_for_pool(s);
      ++trims;
    }
    s->bound.store(false, std::memory_order_release);
  }
  // Only one thread gets past the time gate: the next sweep goes on after the last shard seen.
  if (!all) {
    std::uint32_t next = first + k < n ? first + k : first + k - n;
    g_pool_trim_cursor.store(next, std::memory_order_relaxed);
  }
  return bytes;
}

}  // namespace iso
