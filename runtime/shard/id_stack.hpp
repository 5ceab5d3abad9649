// A lock-free LIFO of 32-bit ids whose links live in the elements' own metadata (which is
// never unmapped). The head carries a tag bumped on every pop, so a pop that read a stale
// head fails its compare-and-swap instead of corrupting the list (no ABA). Unbounded and
// allocation-free: the fallback wherever a bounded Boost.Lockfree structure can be full.
#pragma once
#include <atomic>
#include <cstdint>

namespace iso {

// LinkOf: a callable, id -> std::atomic<std::uint32_t>& (holds next id + 1; 0 ends the list).
template <class LinkOf>
class IdStack {
 public:
  void push(std::uint32_t id, LinkOf link) {
    std::uint64_t old = head_.load(std::memory_order_relaxed);
    std::uint64_t next;
    do {
      link(id).store(static_cast<std::uint32_t>(old), std::memory_order_relaxed);
      next = (old & ~std::uint64_t{0xffffffff}) | (std::uint64_t{id} + 1);
    } while (!head_.compare_exchange_weak(old, next, std::memory_order_release,
                                          std::memory_order_relaxed));
  }

  bool pop(std::uint32_t& id, LinkOf link) {
    std::uint64_t old = head_.load(std::memory_order_acquire);
    std::uint64_t next;
    do {
      std::uint32_t top = static_cast<std::uint32_t>(old);
      if (top == 0) return false;
      id = top - 1;
      std::uint32_t after = link(id).load(std::memory_order_relaxed);
      next = ((old >> 32) + 1) << 32 | after;
    } while (!head_.compare_exchange_weak(old, next, std::memory_order_acquire,
                                          std::memory_order_acquire));
    return true;
  }

  bool empty() const { return static_cast<std::uint32_t>(head_.load(std::memory_order_relaxed)) == 0; }
  void reset() { head_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> head_{0};
};

}  // namespace iso
