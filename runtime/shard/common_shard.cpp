// The common shard: zones shared by all threads, in stripes, each under its own lock. It
// serves every thread's first allocations of each class (light allocations, counted per
// thread), so short-lived threads and rarely used classes cost no zone per thread, and
// threads past their exit release (later key destructors that allocate: binding them would
// leave a shard nothing releases).
// A thread allocates from the stripe of the CPU it ran on at its first light allocation, and
// keeps it: with one lock for all, 16 threads allocating lightly on 16 CPUs
// (perf/thread_churn 4000 16) took 12 to 14 times glibc's time. Keeping it, a thread fills one
// stripe with zones of the classes it uses, not a few classes in each stripe it passes through.
// A chunk is freed under its own stripe's lock, so a bad free aborts at once and a free chunk
// is reused at once, whichever thread frees it.
#include <atomic>
#include <cerrno>

#include "runtime/options.hpp"
#include "runtime/platform.hpp"
#include "runtime/shard/alloc_path.hpp"
#include "runtime/shard/shard.hpp"
#include "runtime/spin_lock.hpp"

namespace iso {
namespace {

struct alignas(64) Stripe {
  SpinLock lock;
  Shard* shard;  // created on its first allocation, under the lock
};
constinit Stripe g_stripes[kMaxCommonStripes] = {};
// Stripes in use by default: half the CPUs the process may use, 1 to kMaxCommonStripes, fixed
// at the first light allocation (0 before). Two CPUs share one: on 2 CPUs a second stripe made
// thread churn 35% faster but raised its peak RSS to glibc's level (see docs/DESIGN.md). Any
// count is safe at any time: a chunk goes back to the stripe that owns its zone.
constinit std::atomic<unsigned> g_stripe_count{0};
// Bit i: stripe i lists empty zones. Set under that stripe's lock; other threads' slow paths
// read it to know there is something to purge without taking a lock.
constinit std::atomic<std::uint64_t> g_stripes_with_donors{0};
constinit std::atomic<std::uint32_t> g_common_zones{0};
// Light allocations this thread has made of each class (saturating at the limit).
thread_local constinit std::uint8_t t_light_used[kClassCount] [[gnu::tls_model("initial-exec")]] = {};
// The thread's stripe + 1 (0: not chosen yet).
thread_local constinit std::uint8_t t_stripe [[gnu::tls_model("initial-exec")]] = 0;

unsigned stripe_count() {
  if (g_options.common_stripes != 0) return g_options.common_stripes;
  unsigned n = g_stripe_count.load(std::memory_order_acquire);
  if (n != 0) return n;
  unsigned want = os::usable_cpus() / 2;
  want = want < 1 ? 1 : want > kMaxCommonStripes ? kMaxCommonStripes : want;
  // Racing first allocations agree on the first value stored.
  g_stripe_count.compare_exchange_strong(n, want, std::memory_order_acq_rel);
  return n != 0 ? n : want;
}

// Under the stripe's lock, after its zones changed.
void note_donors(const Shard* common) {
  std::uint64_t bit = std::uint64_t{1} << common->stripe;
  bool has = common->donors != kNoZone;
  bool noted = (g_stripes_with_donors.load(std::memory_order_relaxed) & bit) != 0;
  if (has && !noted) g_stripes_with_donors.fetch_or(bit, std::memory_order_relaxed);
  if (!has && noted) g_stripes_with_donors.fetch_and(~bit, std::memory_order_relaxed);
}

Shard* stripe_owner(const Zone* z) { return static_cast<Shard*>(const_cast<void*>(z->owner)); }

}  // namespace

bool shard_take_light(unsigned cls) {
  if (t_light_used[cls] >= g_options.light_allocs) return false;
  ++t_light_used[cls];
  return true;
}

bool shard_is_common(const void* owner) {
  return owner != nullptr && static_cast<const Shard*>(owner)->common;
}

void* shard_alloc_common(unsigned cls, bool zero) {
  // The caller may be the process's first allocation, bound to nothing yet.
  if (!shard_init()) {
    errno = ENOMEM;
    return nullptr;
  }
  if (t_stripe == 0) t_stripe = static_cast<std::uint8_t>(os::current_cpu() % stripe_count() + 1);
  unsigned i = t_stripe - 1u;
  Stripe& stripe = g_stripes[i];
  ShardFront* self = t_shard;
  LockGuard guard(stripe.lock);
  Shard* common = stripe.shard;
  if (!common) {
    common = shard_create();
    if (!common) {
      errno = ENOMEM;
      return nullptr;
    }
    common->common = true;
    common->stripe = static_cast<std::uint8_t>(i);
    common->bound.store(true, std::memory_order_relaxed);
    stripe.shard = common;
  }
  // The slow path works on t_shard: point it at the stripe for the call (a common shard
  // takes no light allocations, so it never comes back here).
  t_shard = common;
  void* p = shard_alloc_slow(cls, zero);
  t_shard = self;
  note_donors(common);
  return p;
}

void shard_free_common(Zone* z, void* p) {
  Shard* common = stripe_owner(z);
  LockGuard guard(g_stripes[common->stripe].lock);
  shard_free_owned(common, z, p);
  note_donors(common);
}

std::uint32_t common_shard_zones() { return g_common_zones.load(std::memory_order_relaxed); }
void common_shard_count_zone() { g_common_zones.fetch_add(1, std::memory_order_relaxed); }

bool common_shard_has_donors() {
  return g_stripes_with_donors.load(std::memory_order_relaxed) != 0;
}

std::uint64_t common_shard_purge(bool all) {
  std::uint64_t released = 0;
  for (std::uint64_t todo = g_stripes_with_donors.load(std::memory_order_relaxed); todo != 0;
       todo &= todo - 1) {
    Stripe& stripe = g_stripes[__builtin_ctzll(todo)];
    // Held: someone is busy in it, and the next slow path of anyone tries again.
    if (!stripe.lock.try_lock()) continue;
    if (stripe.shard) {
      std::uint64_t before = stripe.shard->zones_released;
      shard_purge_donors(stripe.shard, all);
      released += stripe.shard->zones_released - before;
      note_donors(stripe.shard);
    }
    stripe.lock.unlock();
  }
  return released;
}

void shard_verify_common() {
  for (Stripe& stripe : g_stripes) {
    LockGuard guard(stripe.lock);
    if (stripe.shard) shard_verify(stripe.shard);
  }
}

// In index order, the fixed order fork's handlers keep.
void common_shard_prefork() {
  for (Stripe& stripe : g_stripes) stripe.lock.lock();
}

void common_shard_postfork(bool child) {
  for (Stripe& stripe : g_stripes) {
    if (child) stripe.lock.reset_in_child();
    else stripe.lock.unlock();
  }
}

}  // namespace iso
