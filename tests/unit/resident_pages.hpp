// Residency as the kernel reports it (mincore): what tests of memory given back look at.
#pragma once
#include <sys/mman.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/config.hpp"

namespace iso {

// Pages of [p, p + n) resident in memory (p and n page-aligned).
inline std::size_t resident_pages(std::uintptr_t p, std::size_t n) {
  std::vector<unsigned char> v(n / kPageBytes);
  EXPECT_EQ(mincore(reinterpret_cast<void*>(p), n, v.data()), 0);
  return static_cast<std::size_t>(
      std::count_if(v.begin(), v.end(), [](unsigned char c) { return (c & 1) != 0; }));
}

}  // namespace iso
