// The malloc-family semantics shared by the C API and the overrides: size limits, errno,
// overflow checks, alignment, realloc in place. Inline so that malloc and iso_alloc are
// each one call deep.
#pragma once
#include <errno.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/root_arena.hpp"
#include "runtime/shard/alloc_path.hpp"

namespace iso::api {

ISO_COLD void* big_or_fail(std::size_t bytes, std::size_t align, bool zero);

// Requests up to kClassTableMaxBytes (most) make one compare before the class table; the
// compiler folds size_class_of in each branch.
ISO_ALWAYS_INLINE void* alloc(std::size_t bytes) {
  if (ISO_LIKELY(bytes <= kClassTableMaxBytes)) return shard_malloc_small<false>(bytes);
  if (bytes <= kMaxSmallBytes) return shard_malloc_small<false>(bytes);
  return big_or_fail(bytes, kMinAlignBytes, false);
}

ISO_ALWAYS_INLINE void* calloc(std::size_t n, std::size_t size) {
  std::size_t bytes;
  if (ISO_UNLIKELY(__builtin_mul_overflow(n, size, &bytes))) {
    errno = ENOMEM;
    return nullptr;
  }
  if (ISO_LIKELY(bytes <= kClassTableMaxBytes)) return shard_malloc_small<true>(bytes);
  if (bytes <= kMaxSmallBytes) return shard_malloc_small<true>(bytes);
  return big_or_fail(bytes, kMinAlignBytes, true);
}

ISO_ALWAYS_INLINE void free(void* p) { shard_free(p); }

// Usable bytes of a live chunk; 0 for NULL. Aborts on a pointer isoshard does not own.
std::size_t usable_size(const void* p);
void* realloc(void* p, std::size_t bytes);
// alignment must be a power of two (the callers check their own rules first).
void* aligned(std::size_t alignment, std::size_t bytes);

}  // namespace iso::api
