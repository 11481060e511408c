#!/usr/bin/env bash
# The host code under AddressSanitizer and UndefinedBehaviorSanitizer: builds protattn without the
# CUDA engines in its own folder (default build-asan) with -fsanitize=address,undefined and runs
# the tests that need no GPU (ctest -LE gpu: the unit tests and the program end to end). Any
# report fails the run (UBSan does not recover). Not part of CI (it doubles the build).
#   scripts/check-asan.sh            JOBS=N sets the build's and ctest's parallelism
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-asan}
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$root" -B "$build" -G Ninja -DPROTATTN_CUDA=OFF -DPROTATTN_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
ninja -C "$build" -j"${JOBS:-$(nproc)}"
export PROTATTN_TEST_DATA=${PROTATTN_TEST_DATA:-$root/tests/data}
# detect_leaks: the program's exits are checked too; halt_on_error: the first report fails the test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" -LE gpu --output-on-failure -j"${JOBS:-$(nproc)}"
