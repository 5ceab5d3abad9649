#include "api/alloc_impl.hpp"

namespace iso::api {

void* big_or_fail(std::size_t bytes, std::size_t align, bool zero) {
  void* p = nullptr;
  // PTRDIFF_MAX is the most any object may span; the root refuses far less already.
  if (bytes <= static_cast<std::size_t>(PTRDIFF_MAX) && root_init())
    p = root_big_alloc(bytes, align, zero);
  if (!p) errno = ENOMEM;
  return p;
}

std::size_t usable_size(const void* p) {
  if (!p) return 0;
  Zone* z = zone_of(p);
  if (z && z->kind == SlotKind::kZone) {
    std::uint32_t idx;
    if (zone_chunk_at(*z, p, idx)) return z->chunk_bytes();
    zone_bad_free(*z, p, kChunkFresh);
  } else if (z && z->kind == SlotKind::kBig && z->user_base == reinterpret_cast<std::uintptr_t>(p)) {
    return root_big_usable(*z);
  }
  fatal(Fault::kInvalidFree, p, z && z->kind != SlotKind::kUnused ? long{z->id} : -1);
}

void* realloc(void* p, std::size_t bytes) {
  if (!p) return alloc(bytes);
  std::size_t have = usable_size(p);
  // Stay in place when the chunk fits and is not more than twice what is asked for
  // (small chunks: the same size class).
  if (bytes <= have) {
    if (have <= kMaxSmallBytes ? size_class_of(bytes) == size_class_of(have) : bytes >= have / 2)
      return p;
  }
  void* q = alloc(bytes);
  if (!q) return nullptr;  // p stays valid, as POSIX says
  std::memcpy(q, p, bytes < have ? bytes : have);
  free(p);
  return q;
}

void* aligned(std::size_t alignment, std::size_t bytes) {
  if (alignment <= kMinAlignBytes) return alloc(bytes);
  // Every power-of-two class's chunks sit at multiples of their size from a page boundary,
  // so up to a page of alignment is a matter of picking that class.
  std::size_t want = bytes > alignment ? bytes : alignment;
  if (alignment <= kPageBytes && want <= kMaxSmallBytes) {
    std::size_t pow2 = std::size_t{1} << (64 - __builtin_clzll(want - 1));
    return alloc(pow2);
  }
  return big_or_fail(bytes ? bytes : 1, alignment, false);
}

}  // namespace iso::api
