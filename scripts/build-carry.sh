#!/usr/bin/env bash
# Builds protattn with the CUDA engines here (no GPU needed) and stages the GPU binaries in
# .carry/bin (git-ignored) for the lent GPU machine: `scripts/gpu-bench.sh .carry/bin` there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -G Ninja -DPROTATTN_CUDA=ON >/dev/null
ninja -C "$build" -j"${JOBS:-2}" protattn_cli protattn_gpu_tests
mkdir -p "$root/.carry/bin"
cp "$build/tools/protattn" "$build/tests/protattn_gpu_tests" "$root/.carry/bin/"
dirty=""; [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty="-dirty"
echo "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty" >"$root/.carry/COMMIT"
du -sh "$root/.carry/bin"
