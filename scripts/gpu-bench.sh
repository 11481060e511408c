#!/usr/bin/env bash
# The one GPU run: GPU tests, `protattn bench`, the peers on the same layouts, then a short
# table last. Results (JSON, logs, plot) go to $OUT (default ./out).
#   scripts/gpu-bench.sh [BIN_DIR]     BIN_DIR holds protattn and protattn_gpu_tests
#                                      (default: build/tools and build/tests; scripts/build-carry.sh
#                                      builds them on a machine without a GPU and stages them).
# Environment: WORKLOADS (default w1,w1alt,w1b,w2,w2d128,1m), ENGINES (default fused),
# STRUCTURES (default tests/data/6zu5.cif, the 165k-atom ribosome, when present), SKIP_TESTS=1,
# SERVE=0 (skip serving), PERF_ANALYZER (a perf_analyzer binary: also measure with it).
# The structures in tests/data must travel with the run (name tests/data in the device's carry).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-}
out=${OUT:-$root/out}
mkdir -p "$out"
find_bin() { for c in "$bin/$1" "$root/build/tools/$1" "$root/build/tests/$1"; do [ -x "$c" ] && { echo "$c"; return; }; done; }
protattn=$(find_bin protattn); gtests=$(find_bin protattn_gpu_tests)
[ -n "$protattn" ] || { echo "gpu-bench: no protattn binary (give BIN_DIR)" >&2; exit 1; }
workloads=${WORKLOADS:-w1,w1alt,w1b,w2,w2d128,1m}
engines=${ENGINES:-fused}
structures=${STRUCTURES-$( [ -f "$root/tests/data/6zu5.cif" ] && echo "$root/tests/data/6zu5.cif")}
export PROTATTN_TEST_DATA="$root/tests/data"
commit=$(cat "$root/.carry/COMMIT" 2>/dev/null || git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)

status=0
if [ "${SKIP_TESTS:-0}" != 1 ] && [ -n "$gtests" ]; then
  echo "== GPU tests"
  "$gtests" --gtest_brief=1 2>&1 | tee "$out/gpu_tests.log" | tail -40
  status=${PIPESTATUS[0]}
fi

echo "== protattn bench ($engines on $workloads)"
layouts=$(mktemp -d)
"$protattn" bench --engine "$engines" --workload "$workloads" ${structures:+--structure $structures} \
  --export-layouts "$layouts" --json "$out/bench.json" 2>&1 || status=1

echo "== peers (FlexAttention, SDPA flash, SDPA cuDNN) on the same layouts"
PYTHONUNBUFFERED=1 python3 "$root/bench/peers.py" "$layouts"/* --no-dense-above 120000 --json "$out/peers.json" 2>&1 | grep -v Warning | tail -20 || status=1

if [ "${SERVE:-1}" = 1 ] && [ -f "$root/tests/data/2hhb.pdb" ]; then
  echo "== serving: protattn serve --engine fused, model attention, 2HHB (4,558 atoms), 8 heads, d=64"
  sdir=$(mktemp -d)
  mkdir -p "$sdir/models" && cp -r "$root/models/attention" "$sdir/models/"
  "$protattn" layout "$root/tests/data/2hhb.pdb" --cutoff 8 --order hilbert --export "$sdir/layout" >/dev/null
  port=${SERVE_PORT:-18000}
  "$protattn" serve --models "$sdir/models" --engine fused --http-port "$port" --grpc-port $((port + 1)) --log-level warn \
    --max-batch-atoms 400000 --max-queue 256 &
  spid=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
  python3 "$root/bench/serve_load.py" --url "http://127.0.0.1:$port" --coords "$sdir/layout/coords.npy" --heads 8 --dim 64 \
    --concurrency 1,4,16,64 --seconds 4 --json "$out/serve.json" || status=1
  if [ -n "${PERF_ANALYZER:-}" ]; then
    # perf_analyzer's raw input folder: one file per input, the 2HHB coordinates and seeded fp16 Q/K/V.
    python3 - "$sdir" <<'PY'
import sys, numpy as np
d = sys.argv[1]
xyz = np.load(f"{d}/layout/coords.npy").astype(np.float32)
import os; os.makedirs(f"{d}/pa", exist_ok=True)
xyz.tofile(f"{d}/pa/COORDS")
rng = np.random.default_rng(1)
for name in ("Q", "K", "V"):
    rng.standard_normal((8, len(xyz), 64)).astype(np.float16).tofile(f"{d}/pa/{name}")
print(len(xyz))
PY
    n=$(python3 -c "import numpy as np; print(len(np.load('$sdir/layout/coords.npy')))")
    for proto in grpc http; do
      url="127.0.0.1:$port"; [ "$proto" = grpc ] && url="127.0.0.1:$((port + 1))"
      for c in 1 4; do  # at 16, as many as the server's default threads, gRPC refused and HTTP hung (issue 5 note)
        echo "-- perf_analyzer $proto concurrency $c"
        "$PERF_ANALYZER" -m attention -u "$url" -i "$proto" --input-data "$sdir/pa" --concurrency-range "$c:$c" \
          --measurement-interval 3000 --max-trials 6 --stability-percentage 30 -f "$sdir/pa_${proto}_$c.csv" \
          --shape "COORDS:$n,3" --shape "Q:8,$n,64" --shape "K:8,$n,64" --shape "V:8,$n,64" >/dev/null 2>"$sdir/pa.err" \
          && cat "$sdir/pa_${proto}_$c.csv" || { tail -5 "$sdir/pa.err"; status=1; }
      done
    done
  fi
  kill -TERM "$spid"; wait "$spid" || status=1
  echo "== offline batched runs of the same structure (served / offline throughput = serving efficiency)"
  "$protattn" bench --engine fused --structure "$root/tests/data/2hhb.pdb" --heads 8 --dim 64 --batch 16 \
    --json "$out/serve_offline.json" || status=1
fi

echo "== summary (same run, same GPU; ratios = peer time / protattn time)"
python3 "$root/bench/report.py" "$out/bench.json" "$out/peers.json" --out "$out/results.json" --plot "$out/plot.png" \
  --meta "commit=$commit" "nvidia_driver=$driver" || status=1
exit $status
