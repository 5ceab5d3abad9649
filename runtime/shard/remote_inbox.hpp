// A shard's inbox of cross-thread frees: a bounded Boost.Lockfree queue of batch ids (fixed
// capacity, so it never allocates) and, for when it is full, an intrusive list of batches
// that the owner takes whole. A sender never waits and a batch is never dropped.
#pragma once
#include <atomic>
#include <boost/lockfree/queue.hpp>
#include <cstdint>

#include "runtime/config.hpp"
#include "runtime/shard/remote_batch.hpp"
#include "runtime/shard/tsan_ignore.hpp"

namespace iso {

class RemoteInbox {
 public:
  void push(RemoteBatch* b) {
    if (boost_lockfree_call([&] { return queue_.bounded_push(b->id); })) return;
    overflow_pushes_.fetch_add(1, std::memory_order_relaxed);
    std::uint32_t old = overflow_.load(std::memory_order_relaxed);
    do {
      b->link.store(old, std::memory_order_relaxed);
    } while (!overflow_.compare_exchange_weak(old, b->id + 1, std::memory_order_release,
                                              std::memory_order_relaxed));
  }

  // Calls f(batch) for every batch received; only the owner calls this.
  template <class F>
  void drain(F&& f) {
    std::uint32_t id;
    while (boost_lockfree_call([&] { return queue_.pop(id); })) f(batch_by_id(id));
    // Taking the whole list at once cannot suffer ABA.
    std::uint32_t top = overflow_.exchange(0, std::memory_order_acquire);
    while (top) {
      RemoteBatch* b = batch_by_id(top - 1);
      top = b->link.load(std::memory_order_relaxed);
      f(b);
    }
  }

  bool maybe_nonempty() const {
    return !boost_lockfree_call([&] { return queue_.empty(); }) ||
           overflow_.load(std::memory_order_relaxed) != 0;
  }
  std::uint64_t overflow_pushes() const { return overflow_pushes_.load(std::memory_order_relaxed); }

 private:
  boost::lockfree::queue<std::uint32_t, boost::lockfree::capacity<kInboxSlots>> queue_;
  std::atomic<std::uint32_t> overflow_{0};  // top batch id + 1
  std::atomic<std::uint64_t> overflow_pushes_{0};
};

}  // namespace iso
