// Single-thread malloc/free micro-benchmarks (Google Benchmark). Built against the system
// malloc and run under LD_PRELOAD for each allocator, as the other workloads are.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

namespace {

// One malloc then its free: the hot path of both, back to back.
void BM_MallocFreePair(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = std::malloc(size);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
}
BENCHMARK(BM_MallocFreePair)->Arg(16)->Arg(64)->Arg(512)->Arg(4096);

// A burst of allocations then their frees (LIFO): caches refill and drain.
void BM_Batch1000(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  std::vector<void*> ptrs(1000);
  for (auto _ : state) {
    for (auto& p : ptrs) {
      p = std::malloc(size);
      benchmark::DoNotOptimize(p);
    }
    for (auto it = ptrs.rbegin(); it != ptrs.rend(); ++it) std::free(*it);
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_Batch1000)->Arg(32)->Arg(256);

}  // namespace

BENCHMARK_MAIN();
