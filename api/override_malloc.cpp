// The malloc family, replacing libc's when linked in or preloaded.
#include <malloc.h>
#include <unistd.h>

#include "api/alloc_impl.hpp"
#include "api/isoshard.h"

#define ISO_EXPORT extern "C" __attribute__((visibility("default")))

using namespace iso;

namespace {

bool valid_alignment(std::size_t a) { return a != 0 && (a & (a - 1)) == 0; }

void* memalign_impl(std::size_t alignment, std::size_t size) {
  if (alignment <= kMinAlignBytes) return api::alloc(size);  // 0 included, as in glibc
  // glibc rounds an alignment that is not a power of two up to one; so do we.
  if (!valid_alignment(alignment)) {
    if (alignment > (std::size_t{1} << 62)) {
      errno = EINVAL;
      return nullptr;
    }
    alignment = std::size_t{1} << (64 - __builtin_clzll(alignment));
  }
  return api::aligned(alignment, size);
}

}  // namespace

ISO_EXPORT void* malloc(size_t size) { return api::alloc(size); }
ISO_EXPORT void free(void* p) { api::free(p); }
ISO_EXPORT void cfree(void* p) { api::free(p); }
ISO_EXPORT void* calloc(size_t n, size_t size) { return api::calloc(n, size); }
ISO_EXPORT void* realloc(void* p, size_t size) { return api::realloc(p, size); }
ISO_EXPORT size_t malloc_usable_size(void* p) { return api::usable_size(p); }

ISO_EXPORT void* reallocarray(void* p, size_t n, size_t size) {
  size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return api::realloc(p, bytes);
}

ISO_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) {
  if (!valid_alignment(alignment) || alignment % sizeof(void*) != 0) return EINVAL;
  int saved = errno;
  void* p = api::aligned(alignment, size);
  if (!p) {
    errno = saved;  // posix_memalign reports through its result, not errno
    return ENOMEM;
  }
  *out = p;
  return 0;
}

ISO_EXPORT void* aligned_alloc(size_t alignment, size_t size) {
  if (!valid_alignment(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return api::aligned(alignment, size);
}

ISO_EXPORT void* memalign(size_t alignment, size_t size) { return memalign_impl(alignment, size); }
ISO_EXPORT void* valloc(size_t size) { return api::aligned(kPageBytes, size); }

ISO_EXPORT void* pvalloc(size_t size) {
  size_t rounded;
  if (__builtin_add_overflow(size, kPageBytes - 1, &rounded)) {
    errno = ENOMEM;
    return nullptr;
  }
  rounded &= ~(kPageBytes - 1);
  return api::aligned(kPageBytes, rounded ? rounded : kPageBytes);
}

// glibc extras that programs call. malloc_trim gives free memory back at once (the pad is
// not needed: nothing is trimmed from a heap top); mallopt accepts and ignores.
ISO_EXPORT int malloc_trim(size_t) { return iso_trim(); }
ISO_EXPORT int mallopt(int, int) { return 1; }
