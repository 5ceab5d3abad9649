// Internal to the root: statistics of big allocations (root lock held).
#pragma once
#include <cstddef>
#include <cstdint>

namespace iso {
void big_stats_locked(std::uint32_t& live, std::size_t& cached_bytes);
}
