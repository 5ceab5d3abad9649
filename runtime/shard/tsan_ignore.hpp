// Boost.Lockfree's fixed-capacity queue and stack read a node's link without atomics while
// another thread may relink that node; the tagged compare-and-swap that follows fails and
// the stale value is dropped, but ThreadSanitizer reports it (boostorg/lockfree#22, #78),
// and GCC's TSan symbolizer then crashes matching suppressions. Under TSan, Boost's own plain
// accesses are ignored for the duration of each call; its atomics still synchronise, so a
// race in isoshard's code around it is still reported.
#pragma once

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace iso {

template <class F>
inline auto boost_lockfree_call(F&& f) {
#if defined(__SANITIZE_THREAD__)
  __tsan_ignore_thread_begin();
  auto r = f();
  __tsan_ignore_thread_end();
  return r;
#else
  return f();
#endif
}

}  // namespace iso
