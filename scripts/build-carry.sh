#!/usr/bin/env bash
# Builds protattn with the CUDA engines here (no GPU needed) and stages in .carry/ (git-ignored)
# what the lent GPU machine needs, which reaches no registry:
#   .carry/bin   protattn and protattn_gpu_tests (cudart linked statically), gzipped
#   .carry/alt.tar.gz  with ALT_REF=<commit>: that commit's build, bin/protattn_alt and
#                bin/protattn_gpu_tests_alt (.carry/ALT_COMMIT names it)
#   .carry/lib.tar.gz  the shared libraries protattn needs beyond glibc, the CUDA driver and
#                toolkit (gRPC, protobuf, gemmi, fmt, ... from this machine's Debian packages)
#   .carry/data  the small test structures and the gzipped 6ZU5 ribosome
#   .carry/pa.tar.gz  perf_analyzer (from scripts/setup-server.sh) with libcudart.so.12, libb64;
#                WITH_PA=0 leaves it out (only the serving runs use it)
#   .carry/san.tar.gz  compute-sanitizer (PyPI nvidia-cuda-sanitizer-api, installed by this script
#                under ~/.cache/protattn) for scripts/gpu-sanitize.sh; WITH_SANITIZER=0 leaves it out
# (compressed: the device tool carries 64 MiB in all, the working tree's files included; the
# script says so when .carry and the tree come to more).
#   .carry/COMMIT
# Then, on the GPU machine (the device tool's command; `carry` names .carry):
#   bash scripts/gpu-carry-run.sh [VAR=value ...]     e.g. ENCODER=only, DIST=only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
carry=$root/.carry
cmake -S "$root" -B "$build" -G Ninja -DPROTATTN_CUDA=ON >/dev/null
ninja -C "$build" -j"${JOBS:-2}" protattn_cli protattn_gpu_tests
rm -rf "$carry/bin" "$carry/lib" "$carry/data" "$carry/pa" "$carry/lib.tar.gz" "$carry/pa.tar.gz" "$carry/alt.tar.gz"
mkdir -p "$carry/bin" "$carry/lib" "$carry/data" "$carry/pa"
cp "$build/tools/protattn" "$build/tests/protattn_gpu_tests" "$carry/bin/"
# ALT_REF=<commit>: also the build of that commit (a git worktree in build-alt/), staged as
# protattn_alt and protattn_gpu_tests_alt, for `gpu-carry-run.sh FUSED_ALT=ALT_BIN` comparisons.
rm -f "$carry/ALT_COMMIT"
if [ -n "${ALT_REF:-}" ]; then
  alt_src=$root/build-alt/src
  git -C "$root" worktree remove --force "$alt_src" 2>/dev/null || rm -rf "$alt_src"
  git -C "$root" worktree prune
  git -C "$root" worktree add --detach "$alt_src" "$ALT_REF" >/dev/null
  cmake -S "$alt_src" -B "$root/build-alt/build" -G Ninja -DPROTATTN_CUDA=ON >/dev/null
  ninja -C "$root/build-alt/build" -j"${JOBS:-2}" protattn_cli protattn_gpu_tests
  # Compressed (the device tool carries 64 MiB in all); gpu-carry-run.sh unpacks it into bin/.
  mkdir -p "$root/build-alt/stage/bin"
  cp "$root/build-alt/build/tools/protattn" "$root/build-alt/stage/bin/protattn_alt"
  cp "$root/build-alt/build/tests/protattn_gpu_tests" "$root/build-alt/stage/bin/protattn_gpu_tests_alt"
  tar -C "$root/build-alt/stage" -czf "$carry/alt.tar.gz" bin
  git -C "$alt_src" rev-parse --short HEAD > "$carry/ALT_COMMIT"
fi

# Libraries the loader resolves here, less those every Linux has (glibc's), the driver's and the
# CUDA toolkit's (the GPU machine has its own, found through /usr/local/cuda).
stage_libs() {
  ldd "$1" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$lib" in /usr/local/cuda*) continue ;; esac
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libnvidia*) ;;
      *) cp -L -n "$lib" "$carry/lib/" ;;
    esac
  done
}
stage_libs "$carry/bin/protattn"
stage_libs "$carry/bin/protattn_gpu_tests"

# The structures the GPU tests and the benchmark read (a fresh checkout has none: they come out of
# Debian packages); without them ten GPU tests fail and 6ZU5 / 2HHB drop out of the benchmark.
bash "$root/scripts/fetch-data.sh"
for f in "$root"/tests/data/*.pdb; do [ -f "$f" ] && cp "$f" "$carry/data/"; done
[ -f "$root/tests/data/6zu5.cif" ] && gzip -c "$root/tests/data/6zu5.cif" > "$carry/data/6zu5.cif.gz"

pa_dir=${PERF_ANALYZER_DIR:-$HOME/.cache/protattn/perf_analyzer}
if [ "${WITH_PA:-1}" != 1 ]; then
  :
elif [ -x "$pa_dir/perf_analyzer.bin" ]; then
  cp "$pa_dir/perf_analyzer.bin" "$carry/pa/"
  cudart=$(python3 -c "import nvidia.cuda_runtime as m, os; print(os.path.join(list(m.__path__)[0], 'lib', 'libcudart.so.12'))" 2>/dev/null || true)
  [ -f "$cudart" ] && cp -L "$cudart" "$carry/pa/"
  b64=$(ldd "$pa_dir/perf_analyzer.bin" | awk '/libb64/ { print $3 }')
  [ -n "$b64" ] && cp -L "$b64" "$carry/pa/"
else
  echo "build-carry: no perf_analyzer in $pa_dir (scripts/setup-server.sh installs it): serving runs without it" >&2
fi

# WITH_PERF=1: this machine's perf (Debian linux-perf, not a project dependency; for profiling
# the server on the GPU machine, which has none) with the libraries it loads, as .carry/perf.tar.gz.
rm -f "$carry/perf.tar.gz"
if [ "${WITH_PERF:-0}" = 1 ]; then
  perf_bin=$(command -v perf || true)
  if [ -n "$perf_bin" ]; then
    mkdir -p "$carry/perf"
    cp -L "$perf_bin" "$carry/perf/perf.bin"
    ldd "$perf_bin" | awk '/=> \// { print $3 }' | while read -r lib; do
      case "$(basename "$lib")" in libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;; *) cp -L -n "$lib" "$carry/perf/" ;; esac
    done
    tar -C "$carry" -czf "$carry/perf.tar.gz" perf && rm -rf "$carry/perf"
  else
    echo "build-carry: WITH_PERF=1 but no perf here (apt-get install linux-perf)" >&2
  fi
fi

# compute-sanitizer for scripts/gpu-sanitize.sh (SANITIZE=1 in gpu-carry-run.sh), from PyPI's
# nvidia-cuda-sanitizer-api: 13.4 is the first of its wheels with the whole tool (the process
# launcher beside the binary); its folder less the docs and headers.
rm -f "$carry/san.tar.gz"
if [ "${WITH_SANITIZER:-1}" = 1 ]; then
  san_version=${SANITIZER_VERSION:-13.4.92}
  san_dir=$HOME/.cache/protattn/sanitizer-$san_version
  if [ ! -x "$san_dir/nvidia/cu13/compute-sanitizer/TreeLauncherSubreaper" ]; then
    echo "build-carry: installing nvidia-cuda-sanitizer-api==$san_version into $san_dir"
    rm -rf "$san_dir"
    python3 -m pip install -q --disable-pip-version-check --target "$san_dir" "nvidia-cuda-sanitizer-api==$san_version"
  fi
  mkdir -p "$carry/san"
  cp -r "$san_dir/nvidia/cu13/compute-sanitizer/." "$carry/san/"
  rm -rf "$carry/san/docs" "$carry/san/include"
  tar -C "$carry" -czf "$carry/san.tar.gz" san && rm -rf "$carry/san"
fi

tar -C "$carry" -czf "$carry/lib.tar.gz" lib && rm -rf "$carry/lib"
if [ -n "$(ls -A "$carry/pa")" ]; then tar -C "$carry" -czf "$carry/pa.tar.gz" pa; fi
rm -rf "$carry/pa"

# The binaries gzipped too (gpu-carry-run.sh unpacks them).
gzip -f "$carry"/bin/protattn "$carry"/bin/protattn_gpu_tests

dirty=""; [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty="-dirty"
echo "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty" >"$carry/COMMIT"
du -sh "$carry"/* | sed 's/^/build-carry: /'
# The device tool carries the working tree (tracked files and untracked ones git does not ignore)
# with .carry, 64 MiB in all.
tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null |
  awk -F'\t' '$2 == "total" { s += $1 } END { print s + 0 }')
total=$(( $(du -sb "$carry" | cut -f1) + tree ))
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "build-carry: .carry and the working tree come to $((total / 1048576)) MiB, over the device tool's 64 MiB:" \
    "WITH_PA=0 (no serving runs), WITH_SANITIZER=0 (no SANITIZE runs) or no ALT_REF makes it smaller" >&2
fi
