#!/usr/bin/env bash
# libFuzzer on the file readers (tests/fuzz/*.cpp), with ASan and UBSan, clang from Debian
# (installed here with apt-get when missing):
#   scripts/fuzz.sh [TARGET] [SECONDS]     TARGET: npy (default); SECONDS a target (default 120)
# Seeds: five small .npy files written here on the first run; the corpus grows in build-fuzz/;
# a crash leaves its input in build-fuzz/ and fails the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-npy}
secs=${2:-120}
out=$root/build-fuzz
mkdir -p "$out/corpus-$target"
cxx=${CXX_FUZZ:-clang++}
if ! command -v "$cxx" >/dev/null && [ -z "${CXX_FUZZ:-}" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "fuzz: installing clang (Debian)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null
fi
command -v "$cxx" >/dev/null || { echo "fuzz: no $cxx" >&2; exit 2; }
case "$target" in
  npy) sources=("$root/src/io/npy.cpp") ;;
  *) echo "fuzz: unknown target $target" >&2; exit 2 ;;
esac
"$cxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I "$root/include" -I "$root/src" "$root/tests/fuzz/fuzz_$target.cpp" "${sources[@]}" -o "$out/fuzz_$target"
if [ "$target" = npy ] && [ -z "$(ls -A "$out/corpus-npy")" ]; then
  python3 - "$out/corpus-npy" <<'PY'
import sys, numpy as np
d = sys.argv[1]
for i, (a, name) in enumerate([(np.arange(6, dtype="<f4").reshape(2, 3), "f4"), (np.zeros((0, 3), "<f2"), "f2"),
                               (np.array(3.5, "<f8"), "f8"), (np.arange(4, dtype="<i8"), "i8"),
                               (np.ones((2, 2, 2), "|u1"), "u1")]):
    np.save(f"{d}/seed{i}_{name}.npy", a)
PY
fi
cd "$out"
"$out/fuzz_$target" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "$out/corpus-$target"
