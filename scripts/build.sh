#!/usr/bin/env bash
# Sets the machine up (scripts/setup.sh) and builds protattn into $BUILD_DIR (default build):
#   scripts/build.sh [ninja targets...]    (no target: everything)
# The CUDA engines are built whenever nvcc is found (on PATH or in /usr/local/cuda/bin).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
export PATH="/usr/local/cuda/bin:$PATH"
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja >/dev/null
start=$(date +%s)
ninja -C "$build" -j"${JOBS:-$(nproc)}" "$@"
echo "build: $build ready in $(( $(date +%s) - start )) s"
