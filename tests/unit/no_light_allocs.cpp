// The component tests look at what a thread's own zones hold: here every thread owns its
// zones from its first allocation (no light allocations from the common shard), unless a
// test sets g_options.light_allocs itself (common_shard_test.cpp). Threads read it at bind.
#include <gtest/gtest.h>

#include "runtime/options.hpp"

namespace {

class NoLightAllocs : public testing::Environment {
 public:
  void SetUp() override { iso::g_options.light_allocs = 0; }
};

const testing::Environment* const g_no_light = testing::AddGlobalTestEnvironment(new NoLightAllocs);

}  // namespace
