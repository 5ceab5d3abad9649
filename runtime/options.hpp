// Runtime settings: each one an ISOSHARD_* environment variable, read once at init without
// allocating. The table in options.cpp is the one list of them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "runtime/config.hpp"

namespace iso {

struct Options {
  // An empty zone keeps its pages this long (for reuse by any class) before a slow path
  // returns them to the OS. ISOSHARD_RETAIN_MS.
  std::uint32_t retain_ms = 250;
  // At most this much of a shard's empty zones stays committed. ISOSHARD_RETAIN_MB.
  std::size_t retain_bytes = std::size_t{512} << 20;
  // A thread's first allocations of each class, up to this many, come from the common shard
  // (0: every thread makes its own zones at once). ISOSHARD_LIGHT_ALLOCS.
  std::uint8_t light_allocs = 64;
  // Stripes of the common shard, each with its own lock and zones; a thread allocates from
  // the one of the CPU it first allocated on (0: half the CPUs the process may use, at
  // least 1). ISOSHARD_COMMON_STRIPES.
  std::uint8_t common_stripes = 0;
};

extern Options g_options ISO_HIDDEN;
// Reads the environment; called by root_init before anything uses the options.
void options_load();

}  // namespace iso
