// The common shard: one set of zones shared by all threads, under a lock. It serves every
// thread's first allocations of each class (light allocations, counted per thread), so
// short-lived threads and rarely used classes cost no zone per thread, and threads past their
// exit release (later key destructors that allocate: binding them would leave a shard
// nothing releases).
// Its chunks are freed under the same lock, so a bad free aborts at once and a free chunk
// is reused at once, whichever thread frees it.
#include <atomic>
#include <cerrno>

#include "runtime/options.hpp"
#include "runtime/shard/alloc_path.hpp"
#include "runtime/shard/shard.hpp"
#include "runtime/spin_lock.hpp"

namespace iso {
namespace {

constinit SpinLock g_common_lock;
// Written once, under the lock; read by any thread's free to tell a common chunk.
constinit std::atomic<Shard*> g_common{nullptr};
// Whether the common shard lists empty zones, set under the lock: other threads' slow paths
// read it to know there is something to purge without taking the lock.
constinit std::atomic<bool> g_common_has_donors{false};
// Light allocations this thread has made of each class (saturating at the limit).
thread_local constinit std::uint8_t t_light_used[kClassCount] [[gnu::tls_model("initial-exec")]] = {};

// Under the lock, after the common shard's zones changed.
void note_donors(const Shard* common) {
  bool has = common->donors != kNoZone;
  if (g_common_has_donors.load(std::memory_order_relaxed) != has)
    g_common_has_donors.store(has, std::memory_order_relaxed);
}

}  // namespace

bool shard_take_light(unsigned cls) {
  if (t_light_used[cls] >= g_options.light_allocs) return false;
  ++t_light_used[cls];
  return true;
}

bool shard_is_common(const void* owner) {
  return owner != nullptr && owner == g_common.load(std::memory_order_acquire);
}

void* shard_alloc_common(unsigned cls, bool zero) {
  // The caller may be the process's first allocation, bound to nothing yet.
  if (!g_common.load(std::memory_order_acquire) && !shard_init()) {
    errno = ENOMEM;
    return nullptr;
  }
  ShardFront* self = t_shard;
  LockGuard guard(g_common_lock);
  Shard* common = g_common.load(std::memory_order_relaxed);
  if (!common) {
    common = shard_create();
    if (!common) {
      errno = ENOMEM;
      return nullptr;
    }
    common->bound.store(true, std::memory_order_relaxed);
    g_common.store(common, std::memory_order_release);
  }
  // The slow path works on t_shard: point it at the common shard for the call (it takes no
  // light allocations, so it never comes back here).
  t_shard = common;
  void* p = shard_alloc_slow(cls, zero);
  t_shard = self;
  note_donors(common);
  return p;
}

void shard_free_common(Zone* z, void* p) {
  LockGuard guard(g_common_lock);
  Shard* common = g_common.load(std::memory_order_relaxed);
  shard_free_owned(common, z, p);
  note_donors(common);
}

bool common_shard_has_donors() { return g_common_has_donors.load(std::memory_order_relaxed); }

void common_shard_purge() {
  Shard* common = g_common.load(std::memory_order_acquire);
  // Held: its owner is busy in it, and the next slow path of anyone tries again.
  if (!common || !g_common_lock.try_lock()) return;
  shard_purge_donors(common, false);
  note_donors(common);
  g_common_lock.unlock();
}

void shard_verify_common() {
  LockGuard guard(g_common_lock);
  if (Shard* common = g_common.load(std::memory_order_relaxed)) shard_verify(common);
}

void common_shard_prefork() { g_common_lock.lock(); }

void common_shard_postfork(bool child) {
  if (child) g_common_lock.reset_in_child();
  else g_common_lock.unlock();
}

}  // namespace iso
