#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds everything (the CUDA engines too when nvcc is there:
# they compile and link without a GPU) and runs the tests that need no GPU: the C++ unit
# tests, the program end to end on real structures, the benchmark smoke runs and the server's
# black-box tests. GPU tests (ctest label gpu) run with scripts/gpu-bench.sh on a GPU machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/build.sh
build=${BUILD_DIR:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
ctest --test-dir "$build" -LE gpu --output-on-failure -j"${JOBS:-$(nproc)}"
if [ -d tests/server ] && ls tests/server/test_*.py >/dev/null 2>&1; then
  PROTATTN_BINARY="$build/tools/protattn" python3 -m pytest -q tests/server
fi
# The GPU run's reporting scripts (bench/), with stand-ins for nvidia-smi and the binary.
python3 -m pytest -q tests/bench
