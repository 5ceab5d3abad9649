// C++ operator new/delete, all standard forms, on top of the same paths as malloc.
#include <new>

#include "api/alloc_impl.hpp"

#define ISO_EXPORT __attribute__((visibility("default")))

using namespace iso;

namespace {

// The standard's loop: ask the new-handler until it gives up, then throw.
[[gnu::noinline]] void* new_slow(std::size_t size, std::size_t align, bool nothrow) {
  for (;;) {
    void* p = align > kMinAlignBytes ? api::aligned(align, size) : api::alloc(size);
    if (p) return p;
    std::new_handler h = std::get_new_handler();
    if (!h) {
      if (nothrow) return nullptr;
      throw std::bad_alloc();
    }
    h();
  }
}

ISO_ALWAYS_INLINE void* new_impl(std::size_t size) {
  void* p = nullptr;
  if (ISO_LIKELY(size <= kClassTableMaxBytes)) p = shard_malloc_small<false>(size);  // see api::alloc
  else if (size <= kMaxSmallBytes) p = shard_malloc_small<false>(size);
  if (ISO_LIKELY(p != nullptr)) return p;
  return new_slow(size, kMinAlignBytes, false);
}

}  // namespace

ISO_EXPORT void* operator new(std::size_t n) { return new_impl(n); }
ISO_EXPORT void* operator new[](std::size_t n) { return new_impl(n); }
ISO_EXPORT void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try { return new_slow(n, kMinAlignBytes, true); } catch (...) { return nullptr; }
}
ISO_EXPORT void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try { return new_slow(n, kMinAlignBytes, true); } catch (...) { return nullptr; }
}
ISO_EXPORT void* operator new(std::size_t n, std::align_val_t a) {
  return new_slow(n, static_cast<std::size_t>(a), false);
}
ISO_EXPORT void* operator new[](std::size_t n, std::align_val_t a) {
  return new_slow(n, static_cast<std::size_t>(a), false);
}
ISO_EXPORT void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try { return new_slow(n, static_cast<std::size_t>(a), true); } catch (...) { return nullptr; }
}
ISO_EXPORT void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try { return new_slow(n, static_cast<std::size_t>(a), true); } catch (...) { return nullptr; }
}

ISO_EXPORT void operator delete(void* p) noexcept { api::free(p); }
ISO_EXPORT void operator delete[](void* p) noexcept { api::free(p); }
ISO_EXPORT void operator delete(void* p, std::size_t) noexcept { api::free(p); }
ISO_EXPORT void operator delete[](void* p, std::size_t) noexcept { api::free(p); }
ISO_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept { api::free(p); }
ISO_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept { api::free(p); }
ISO_EXPORT void operator delete(void* p, std::align_val_t) noexcept { api::free(p); }
ISO_EXPORT void operator delete[](void* p, std::align_val_t) noexcept { api::free(p); }
ISO_EXPORT void operator delete(void* p, std::size_t, std::align_val_t) noexcept { api::free(p); }
ISO_EXPORT void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { api::free(p); }
ISO_EXPORT void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  api::free(p);
}
ISO_EXPORT void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  api::free(p);
}
