// Faults found in the caller's use of memory. Each aborts with one line on stderr
// naming the fault, the pointer and the zone: never silent corruption.
#pragma once
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

}  // namespace iso
