// Size classes: 16-byte steps up to 128 bytes, then four classes per power of two up to
// 256 KiB, so internal waste stays under 25 %. Every class size is a multiple of 16, and
// every power of two in range is a class (aligned allocations rely on that).
#pragma once
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

// Up to 256 KiB: mid-size buffers stay in zones (no lock, no syscall per allocation, no
// mapping each: a mapping per allocation would reach vm.max_map_count at ~32k live ones).
inline constexpr unsigned kClassCount = 52;
inline constexpr std::size_t kMaxSmallBytes = 262144;

constexpr unsigned size_class_by_formula(std::size_t bytes) {
  std::size_t s = bytes ? bytes - 1 : 0;
  if (s < 128) return static_cast<unsigned>(s >> 4);
  unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(s));  // 7..17
  return 8 + (e - 7) * 4 + static_cast<unsigned>((s >> (e - 2)) & 3);
}

// Requests up to 4 KiB find their class with one table load (257 bytes). With the table up
// to 1 KiB, producer/consumer's sizes (16 to 4096 bytes, uniform) took the formula on three
// calls in four at random, and cachegrind's branch model counted a mispredict on 30% of them.
inline constexpr std::size_t kClassTableMaxBytes = 4096;
constexpr std::array<std::uint8_t, kClassTableMaxBytes / 16 + 1> make_small_class_table() {
  std::array<std::uint8_t, kClassTableMaxBytes / 16 + 1> t{};
  for (std::size_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<std::uint8_t>(size_class_by_formula(i * 16));
  return t;
}
inline constexpr auto kSmallClassTable = make_small_class_table();

// Class of a request of `bytes` (0..kMaxSmallBytes); bytes 0 is served as 16.
ISO_ALWAYS_INLINE constexpr unsigned size_class_of(std::size_t bytes) {
  if (ISO_LIKELY(bytes <= kClassTableMaxBytes)) return kSmallClassTable[(bytes + 15) >> 4];
  return size_class_by_formula(bytes);
}

constexpr std::uint32_t class_bytes_of(unsigned cls) {
  if (cls < 8) return (cls + 1) * 16;
  unsigned e = 7 + (cls - 8) / 4, sub = (cls - 8) % 4;
  return (1u << e) + ((sub + 1) << (e - 2));
}

struct SizeClassInfo {
  std::uint32_t chunk_bytes;
  std::uint32_t chunk_count;  // chunks in one zone's user pages
  // chunk_bytes = odd << odd_shift; odd_inverse * odd = 1 modulo 2^64 (see zone_chunk_at).
  std::uint64_t odd_inverse;
  std::uint8_t odd_shift;
};

// The inverse of an odd number modulo 2^64: Newton's iteration doubles the correct low bits
// (3 to start: m * m = 1 modulo 8 for odd m).
constexpr std::uint64_t inverse_mod_2_64(std::uint64_t odd) {
  std::uint64_t x = odd;
  for (int i = 0; i < 5; ++i) x *= 2 - odd * x;
  return x;
}

constexpr std::array<SizeClassInfo, kClassCount> make_class_table() {
  std::array<SizeClassInfo, kClassCount> t{};
  for (unsigned c = 0; c < kClassCount; ++c) {
    std::uint32_t b = class_bytes_of(c);
    t[c].chunk_bytes = b;
    t[c].chunk_count = static_cast<std::uint32_t>(kZoneUserBytes / b);
    t[c].odd_shift = static_cast<std::uint8_t>(__builtin_ctz(b));
    t[c].odd_inverse = inverse_mod_2_64(b >> t[c].odd_shift);
  }
  return t;
}

inline constexpr std::array<SizeClassInfo, kClassCount> kClasses = make_class_table();
static_assert(class_bytes_of(kClassCount - 1) == kMaxSmallBytes);
static_assert([] {
  for (const SizeClassInfo& c : kClasses)
    if ((c.chunk_bytes >> c.odd_shift) * c.odd_inverse != 1 || ((c.chunk_bytes >> c.odd_shift) & 1) == 0)
      return false;
  return true;
}(), "odd_inverse inverts each class's odd factor");
static_assert(size_class_of(kMaxSmallBytes) == kClassCount - 1);

// Whether `offset` (from a zone's first chunk) starts chunk idx < chunk_count, for chunks of
// odd << odd_shift bytes. For offset = idx * size, offset times odd's inverse modulo 2^64,
// rotated right by odd_shift, is idx; for any other 64-bit offset it is at least
// 2^64 / size, far past any chunk count (exact division by multiplication, Hacker's Delight
// 10-17). One multiply and one compare check the start and the range: no division.
ISO_ALWAYS_INLINE constexpr bool chunk_start(std::uint64_t offset, std::uint64_t odd_inverse,
                                             unsigned odd_shift, std::uint32_t chunk_count,
                                             std::uint32_t& idx) {
  std::uint64_t q = std::rotr(offset * odd_inverse, static_cast<int>(odd_shift));
  idx = static_cast<std::uint32_t>(q);
  return q < chunk_count;
}

}  // namespace iso
