#!/usr/bin/env bash
# On the lent GPU machine: unpacks what scripts/build-carry.sh staged in .carry and runs
# scripts/gpu-bench.sh with it, results under $OUT. Arguments are VAR=value settings passed on
# (ENGINES=fused,grouped, ENCODER=only, DIST=only, SERVE=0, ...).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for f in .carry/bin/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
[ -x .carry/bin/protattn ] || { echo "gpu-carry-run: .carry/bin/protattn missing (run scripts/build-carry.sh and carry .carry)" >&2; exit 2; }
for t in lib pa alt perf san; do [ -f ".carry/$t.tar.gz" ] && tar -C .carry -xzf ".carry/$t.tar.gz"; done
mkdir -p tests/data
cp .carry/data/*.pdb tests/data/ 2>/dev/null
[ -f .carry/data/6zu5.cif.gz ] && gunzip -c .carry/data/6zu5.cif.gz > tests/data/6zu5.cif
export LD_LIBRARY_PATH="$root/.carry/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -x .carry/pa/perf_analyzer.bin ]; then
  cat > .carry/pa/perf_analyzer <<SH
#!/bin/sh
LD_LIBRARY_PATH="$root/.carry/pa:\$LD_LIBRARY_PATH" exec "$root/.carry/pa/perf_analyzer.bin" "\$@"
SH
  chmod +x .carry/pa/perf_analyzer
  export PERF_ANALYZER="$root/.carry/pa/perf_analyzer"
fi
if [ -x .carry/perf/perf.bin ]; then  # WITH_PERF=1 in build-carry.sh: the build machine's perf
  cat > .carry/perf/perf <<SH
#!/bin/sh
LD_LIBRARY_PATH="$root/.carry/perf:\$LD_LIBRARY_PATH" exec "$root/.carry/perf/perf.bin" "\$@"
SH
  chmod +x .carry/perf/perf
  export PERF_BIN="$root/.carry/perf/perf"
fi
echo "gpu-carry-run: binaries of $(cat .carry/COMMIT 2>/dev/null || echo unknown)"
for kv in "$@"; do export "$kv"; done
out=${OUT:-$root/out}
# Ends inside the device tool's 10-minute limit, so that the archive below is still made.
OUT=$out timeout "${RUN_LIMIT_S:-560}" bash scripts/gpu-bench.sh .carry/bin
status=$?
# The device tool returns at most 8 files from $OUT: everything goes back as one archive.
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ]; then
  tar -C "$out" -czf /tmp/results.tar.gz . && find "$out" -mindepth 1 -delete && mv /tmp/results.tar.gz "$out/"
fi
exit $status
