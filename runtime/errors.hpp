// Faults found in the caller's use of memory. Each aborts with one line on stderr
// naming the fault, the pointer and the zone: never silent corruption.
#pragma once
#include <cstddef>
#include <cstdint>

namespace iso {

enum class Fault : std::uint8_t {
  kDoubleFree,
  kInvalidFree,     // pointer isoshard does not own, or inside a chunk
  kCanaryOverwritten,
  kCorruptMetadata,
  kOutOfMetadata,
};

// zone_id < 0 means "no zone" (e.g. a pointer outside the reserved range).
[[noreturn]] void fatal(Fault fault, const void* ptr, long zone_id, unsigned chunk_bytes = 0);

// Not a fault: the one line saying why every allocation will fail with ENOMEM.
void report_no_address_space(std::size_t wanted_bytes, std::size_t limit_bytes);

}  // namespace iso
