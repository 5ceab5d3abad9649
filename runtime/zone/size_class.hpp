// Size classes: 16-byte steps up to 128 bytes, then four classes per power of two up to
// 256 KiB, so internal waste stays under 25 %. Every class size is a multiple of 16, and
// every power of two in range is a class (aligned allocations rely on that).
#pragma once
#include <array>
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

// Requests up to 1 KiB (most of them) find their class with one table load.
inline constexpr std::size_t kClassTableMaxBytes = 1024;
constexpr std::array<std::uint8_t, kClassTableMaxBytes / 16 + 1> make_small_class_table() {
  std::array<std::uint8_t, kClassTableMaxBytes / 16 + 1> t{};
  for (std::size_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<std::uint8_t>(size_class_by_formula(i * 16));
  return t;
}
inline constexpr auto kSmallClassTable = make_small_class_table();

// Class of a request of `bytes` (0..kMaxSmallBytes); bytes 0 is served as 16.
ISO_ALWAYS_INLINE constexpr unsigned size_class_of(std::size_t bytes) {
  if (bytes <= kClassTableMaxBytes) return kSmallClassTable[(bytes + 15) >> 4];
  return size_class_by_formula(bytes);
}

constexpr std::uint32_t class_bytes_of(unsigned cls) {
  if (cls < 8) return (cls + 1) * 16;
  unsigned e = 7 + (cls - 8) / 4, sub = (cls - 8) % 4;
  return (1u << e) + ((sub + 1) << (e - 2));
}

// chunk index = (offset * recip) >> kRecipShift, exact for every offset inside a zone:
// recip = ceil(2^40 / size) errs by e < size <= 2^18, and offset * e < 2^22 * 2^18 = 2^40.
inline constexpr unsigned kRecipShift = 40;
static_assert(kZoneSlotBytes <= (std::size_t{1} << 22), "reciprocal sized for 4 MiB zones");
static_assert(kMaxSmallBytes <= (std::size_t{1} << 18), "reciprocal sized for 256 KiB chunks");

struct SizeClassInfo {
  std::uint32_t chunk_bytes;
  std::uint32_t chunk_count;  // chunks in one zone's user pages
  std::uint64_t recip;
};

constexpr std::array<SizeClassInfo, kClassCount> make_class_table() {
  std::array<SizeClassInfo, kClassCount> t{};
  for (unsigned c = 0; c < kClassCount; ++c) {
    std::uint32_t b = class_bytes_of(c);
    t[c].chunk_bytes = b;
    t[c].chunk_count = static_cast<std::uint32_t>(kZoneUserBytes / b);
    t[c].recip = ((std::uint64_t{1} << kRecipShift) + b - 1) / b;
  }
  return t;
}

inline constexpr std::array<SizeClassInfo, kClassCount> kClasses = make_class_table();
static_assert(class_bytes_of(kClassCount - 1) == kMaxSmallBytes);
static_assert(size_class_of(kMaxSmallBytes) == kClassCount - 1);

ISO_ALWAYS_INLINE constexpr std::uint32_t chunk_index_of(std::uint64_t offset, unsigned cls) {
  return static_cast<std::uint32_t>((offset * kClasses[cls].recip) >> kRecipShift);
}

}  // namespace iso
