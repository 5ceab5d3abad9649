#!/usr/bin/env bash
# Builds isoshard and runs every test: the Release build with the malloc overrides (unit,
# API, hazard and LD_PRELOAD tests), then the runtime's unit tests (zones, root, shards,
# lock-free queue) under AddressSanitizer, UndefinedBehaviorSanitizer and ThreadSanitizer,
# built as a plain library without overrides.
#   SANITIZERS="asan ubsan tsan"  which sanitizer builds to run ("" for none)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install_deps.sh cmake ninja-build g++ libboost-dev libfmt-dev libgtest-dev \
  libbenchmark-dev python3 gzip coreutils

jobs=$(nproc)
build_and_test() {  # build dir, extra cmake args...
  local dir=$1; shift
  echo "==> build $dir $*"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

build_and_test build
for san in ${SANITIZERS-asan ubsan tsan}; do
  # RelWithDebInfo: sanitizer reports with lines, still optimised like the real thing.
  build_and_test "build-$san" -DISOSHARD_SANITIZER="$san" -DCMAKE_BUILD_TYPE=RelWithDebInfo
done
echo "==> all tests passed"
