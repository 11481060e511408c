#!/usr/bin/env bash
# The one GPU run: GPU tests, `protattn bench`, the peers on the same layouts, then a short
# table last. Results (JSON, logs, plot) go to $OUT (default ./out).
#   scripts/gpu-bench.sh [BIN_DIR]     BIN_DIR holds protattn and protattn_gpu_tests
#                                      (default: build/tools and build/tests; scripts/build-carry.sh
#                                      builds them on a machine without a GPU and stages them).
# Environment: WORKLOADS (default w1,w1alt,w1b,w2,w2d128,w2d32,w4,1m), ENGINES (default fused),
# STRUCTURES (default tests/data/6zu5.cif, the 165k-atom ribosome, and 2hhb.pdb, haemoglobin's
# 4,558 heavy atoms, a served protein's size: those present; 8 heads, d=64), SKIP_TESTS=1,
# SERVE=0 (skip serving), POWER=0 (skip the SM clock and power under sustained runs, bench/power.py;
# POWER_GRIDS: the fused engine also on that many SMs, default 66), PERF_ANALYZER (a perf_analyzer binary: also measure with it).
# The structures in tests/data must travel with the run (name tests/data in the device's carry).
# Several GPUs (docs/dist.md): DIST=1 adds `protattn dist` runs after the rest, DIST=only runs them
# alone (on nvidia-h200-x2 / -x4); DIST_GPUS (default: every GPU) caps the GPU counts tried.
# atom_encoder serving (issue 6, scripts/serve-encoder-bench.sh, needs PERF_ANALYZER): ENCODER=1
# adds it after the rest, ENCODER=only runs it alone (about 4 minutes; results in $OUT/encoder;
# TESTS_FIRST=1 runs the GPU tests before it; ENCODER_ALT_ARGS adds server configurations, ';' between).
# PROFILE=1 adds scripts/gpu-profile.sh (Nsight Compute, results in $OUT/prof), PROFILE=only runs it alone.
# SANITIZE=1 adds scripts/gpu-sanitize.sh (compute-sanitizer's four tools over the GPU tests,
# results in $OUT/sanitize) after the GPU tests; SANITIZE=only runs it alone.
# FUSED_ALT="PROTATTN_FUSED_KERNEL=wgmma PROTATTN_FUSED_ORDER=layout,PROTATTN_FUSED_KERNEL=wgmma":
# the fused engine under other settings (entries of VAR=value joined by ',') also runs the fused
# GPU tests (not with ALT_TESTS=0) and `protattn bench` (bench_<entry>.json), and a table
# compares them with the default; the entry ALT_BIN is the build of another commit (ALT_REF in
# scripts/build-carry.sh), so two kernels' commits compare in one run.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-}
out=${OUT:-$root/out}
mkdir -p "$out"
find_bin() { for c in "$bin/$1" "$root/build/tools/$1" "$root/build/tests/$1"; do [ -x "$c" ] && { echo "$c"; return; }; done; }
protattn=$(find_bin protattn); gtests=$(find_bin protattn_gpu_tests)
[ -n "$protattn" ] || { echo "gpu-bench: no protattn binary (give BIN_DIR)" >&2; exit 1; }
workloads=${WORKLOADS:-w1,w1alt,w1b,w2,w2d128,w2d32,w4,1m}
engines=${ENGINES:-fused}
structures=${STRUCTURES-$(for f in 6zu5.cif 2hhb.pdb; do [ -f "$root/tests/data/$f" ] && echo "$root/tests/data/$f"; done)}
structures=$(echo $structures)  # one line
export PROTATTN_TEST_DATA="$root/tests/data"
commit=$(cat "$root/.carry/COMMIT" 2>/dev/null || git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
# The host's CPUs as this process sees them (the host side's times, layouts and plans, move with
# them from one lent machine to the next): host.txt.
{ echo "nproc $(nproc), online $(getconf _NPROCESSORS_ONLN), cgroup cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo -)"
  lscpu 2>/dev/null | grep -E '^(Model name|CPU\(s\)|On-line CPU|Thread|Socket|NUMA node\(s\))'
  echo "kernel $(uname -r), transparent hugepages $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo -)"
  echo "loadavg $(cat /proc/loadavg)"; } > "$out/host.txt"
cat "$out/host.txt"

status=0
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off: it can take a shared host's GPUs down
if [ -z "${PROTATTN_NCCL_LIB:-}" ]; then  # PyTorch's NCCL when the toolkit has none
  nccl_lib=$(python3 -c "import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], 'lib', 'libnccl.so.2'))" 2>/dev/null)
  [ -f "$nccl_lib" ] && export PROTATTN_NCCL_LIB=$nccl_lib
fi

# Several GPUs through NCCL: head-parallel on W2 and spatial on W2 and the 1M-atom globule, on
# 1, 2, 4, ... GPUs, each checked on rank 0 against one GPU (which also gives the scaling
# baseline); JSON per run in $out/dist_*.json, then a table.
run_dist() {
  local gpus=${DIST_GPUS:-$(nvidia-smi -L | grep -c '^GPU')}
  echo "== dist: $gpus GPU(s), ${PROTATTN_NCCL_LIB:-libnccl.so.2 on the loader path}"
  if [ "${SKIP_TESTS:-0}" != 1 ] && [ -n "$gtests" ] && [ "${DIST:-0}" = only ]; then  # else with the GPU tests
    timeout "${TEST_TIMEOUT:-420}" "$gtests" --gtest_filter='DistGpu*' 2>&1 | tee "$out/dist_gpu_tests.log" | grep -v '^\[ *\(RUN\|OK\) ' | tail -20
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  fi
  local g=1
  while [ "$g" -le "$gpus" ]; do
    # The spatial runs also with --overlap (the exchange beside the rows that need no halo).
    for run in "heads w2 50" "spatial w2 50" "spatial 1m 20" "spatial w2 50 --overlap" "spatial 1m 20 --overlap"; do
      set -- $run
      local name="$1${4:+-overlap}"
      echo "-- dist --gpus $g --mode $1 --workload $2 ${4:-}"
      timeout "${DIST_TIMEOUT:-240}" "$protattn" dist --gpus "$g" --mode "$1" --workload "$2" --heads 8 --dim 64 --iters "$3" --check \
        ${4:-} --json "$out/dist_${name}_$2_g$g.json" 2>&1 | tail -12 || status=1
    done
    g=$((g * 2))
  done
  python3 - "$out" <<'PY' || status=1
import glob, json, sys
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/dist_*_g*.json")):
    j = json.load(open(f))
    rows.append((j["mode"] + ("+ov" if j.get("overlap") else ""), j["workload"], j.get("world", 0), j.get("step_ms", 0), j.get("single_gpu_ms", 0),
                 j.get("scaling_efficiency", 0), j.get("halo_bytes", 0) / 2**20, j.get("allgather_bytes", 0) / 2**20,
                 j.get("check", {}).get("max_rel_o", float("nan")), j.get("check", {}).get("bit_identical")))
print(f"{'mode':8} {'workload':8} {'gpus':>4} {'step ms':>9} {'1 GPU ms':>9} {'eff':>6} {'halo MiB':>9} {'allgath MiB':>11} {'max rel':>8} bits")
for r in sorted(rows):
    print(f"{r[0]:8} {r[1]:8} {r[2]:4d} {r[3]:9.3f} {r[4]:9.3f} {100 * r[5]:5.1f}% {r[6]:9.1f} {r[7]:11.1f} {r[8]:8.1e} {r[9]}")
PY
}
# The GPU test suite. Every test's start and end go to the log (a hang shows where); failures and
# the summary are printed. When tests fail, they run again with the device-memory cache off
# (PROTATTN_DEVICE_CACHE=0); if they pass then, the cache is what broke them: the rest of the run
# goes without it, and the log says so.
run_gpu_tests() {
  echo "== GPU tests"
  timeout "${TEST_TIMEOUT:-420}" "$gtests" 2>&1 | tee "$out/gpu_tests.log" | grep -v '^\[ *\(RUN\|OK\) ' | tail -40
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] && return
  status=1
  [ "$rc" = 124 ] && echo "gpu-bench: the GPU tests ran past ${TEST_TIMEOUT:-420} s; the last started: $(grep '^\[ RUN' "$out/gpu_tests.log" | tail -1)"
  local failed
  failed=$(grep '^\[  FAILED  \] [A-Za-z]' "$out/gpu_tests.log" | awk '{print $4}' | sort -u | paste -sd: -)
  if [ -n "$failed" ] && [ "${PROTATTN_DEVICE_CACHE:-1}" != 0 ]; then
    echo "== GPU tests that failed, again with PROTATTN_DEVICE_CACHE=0: $failed"
    if PROTATTN_DEVICE_CACHE=0 timeout "${TEST_TIMEOUT:-420}" "$gtests" --gtest_filter="$failed" > "$out/gpu_tests_nocache.log" 2>&1; then
      echo "gpu-bench: they pass without the device-memory cache: the rest of this run goes without it"
      export PROTATTN_DEVICE_CACHE=0
    else
      grep -v '^\[ *\(RUN\|OK\) ' "$out/gpu_tests_nocache.log" | tail -10
    fi
  fi
}
run_encoder() {
  echo "== atom_encoder serving (scripts/serve-encoder-bench.sh, fused)"
  PERF_ANALYZER=${PERF_ANALYZER:-} bash "$root/scripts/serve-encoder-bench.sh" "$(dirname "$protattn")" "$out/encoder" fused \
    || status=1
  # Other configurations of the server (ENCODER_ALT_ARGS, e.g. "--devices 0,0": two inference
  # threads on one GPU; several separated by ';'), ENCODER_ALT_MODELS on ENCODER_ALT_SIZES atoms at
  # ENCODER_ALT_CONCURRENCY, without the loop; results in encoder_alt, encoder_alt2, ...
  if [ -n "${ENCODER_ALT_ARGS:-}" ]; then
    local i=1 alt dir
    IFS=';' read -ra alts <<< "$ENCODER_ALT_ARGS"
    for alt in "${alts[@]}"; do
      dir="$out/encoder_alt"; [ "$i" -gt 1 ] && dir="$out/encoder_alt$i"
      i=$((i + 1))
      echo "== atom_encoder serving, serve $alt"
      SERVE_ARGS="$alt" SIZES="${ENCODER_ALT_SIZES:-4096}" CONCURRENCY="${ENCODER_ALT_CONCURRENCY:-16 64 128}" \
        MODELS="${ENCODER_ALT_MODELS:-encoder_w1}" \
        LOOP_ITERS=0 PERF_ANALYZER=${PERF_ANALYZER:-} \
        bash "$root/scripts/serve-encoder-bench.sh" "$(dirname "$protattn")" "$dir" fused || status=1
    done
  fi
}
# Nsight Compute: GPU time per kernel of one encoder forward and of W1 (scripts/gpu-profile.sh).
run_profile() {
  echo "== profile (scripts/gpu-profile.sh)"
  OUT="$out/prof" bash "$root/scripts/gpu-profile.sh" "$(dirname "$protattn")" || status=1
}
# compute-sanitizer over the GPU tests (scripts/gpu-sanitize.sh).
run_sanitize() {
  [ -n "$gtests" ] || { echo "gpu-bench: SANITIZE needs protattn_gpu_tests"; status=1; return; }
  bash "$root/scripts/gpu-sanitize.sh" "$(dirname "$gtests")" "$out/sanitize" || status=1
}
if [ "${PROFILE:-0}" = only ]; then
  run_profile
  exit $status
fi
if [ "${SANITIZE:-0}" = only ]; then
  run_sanitize
  exit $status
fi
if [ "${ENCODER:-0}" = only ]; then
  # The tests first (TESTS_FIRST=1): they check the binaries the serving numbers come from.
  [ "${TESTS_FIRST:-0}" = 1 ] && [ "${SKIP_TESTS:-0}" != 1 ] && [ -n "$gtests" ] && run_gpu_tests
  run_encoder
  exit $status
fi
if [ "${DIST:-0}" = only ]; then
  run_dist
  exit $status
fi

if [ "${SKIP_TESTS:-0}" != 1 ] && [ -n "$gtests" ]; then
  run_gpu_tests
fi
[ "${SANITIZE:-0}" = 1 ] && run_sanitize

echo "== protattn bench ($engines on $workloads)"
layouts=$(mktemp -d)
"$protattn" bench --engine "$engines" --workload "$workloads" ${structures:+--structure $structures} \
  --export-layouts "$layouts" --json "$out/bench.json" 2>&1 || status=1

for alt in ${FUSED_ALT:-}; do
  # An entry is one or more VAR=value settings joined by ','; it names its files. The entry
  # ALT_BIN runs instead the protattn and protattn_gpu_tests built from another commit
  # (scripts/build-carry.sh with ALT_REF=<commit> stages them as .carry/bin/*_alt).
  tag=$(echo "$alt" | tr -c 'A-Za-z0-9_=\n' '_')
  envs=$(echo "$alt" | tr ',' ' ')
  p_bin=$protattn; t_bin=$gtests
  if [ "$alt" = ALT_BIN ]; then
    p_bin=$(find_bin protattn_alt); t_bin=$(find_bin protattn_gpu_tests_alt); envs=""
    [ -n "$p_bin" ] || { echo "gpu-bench: FUSED_ALT names ALT_BIN but no protattn_alt was staged"; status=1; continue; }
    echo "== the other build: $(cat "$root/.carry/ALT_COMMIT" 2>/dev/null || echo unknown commit)"
  fi
  if [ "${SKIP_TESTS:-0}" != 1 ] && [ "${ALT_TESTS:-1}" = 1 ] && [ -n "$t_bin" ]; then
    echo "== fused GPU tests with ${envs:-$alt}"
    env $envs timeout "${TEST_TIMEOUT:-420}" "$t_bin" --gtest_filter='*fused*:Fused*' > "$out/gpu_tests_$tag.log" 2>&1 \
      || { status=1; grep -v '^\[ *\(RUN\|OK\) ' "$out/gpu_tests_$tag.log" | tail -20; }
    grep '^\[  PASSED\|^\[  FAILED' "$out/gpu_tests_$tag.log" | head -3
  fi
  echo "== protattn bench, fused engine with ${envs:-$alt}"
  env $envs "$p_bin" bench --engine fused --workload "$workloads" ${structures:+--structure $structures} \
    --json "$out/bench_$tag.json" > "$out/bench_$tag.log" 2>&1 || { status=1; tail -3 "$out/bench_$tag.log"; }
done
if [ -n "${FUSED_ALT:-}" ]; then
  python3 - "$out" ${FUSED_ALT} <<'PY' || status=1
import json, re, sys
out, alts = sys.argv[1], sys.argv[2:]
def load(path):
    return {(r["workload"], r.get("structure", "")): r for r in json.load(open(path))["results"] if r["engine"] == "fused"}
base = load(f"{out}/bench.json")
others = {a: load(f"{out}/bench_{re.sub('[^A-Za-z0-9_=]', '_', a)}.json") for a in alts}
print("fused engine, default settings against: " + "; ".join(f"[{i}] {a}" for i, a in enumerate(alts)))
print(f"{'workload':14} {'default us':>11} {'TFLOPS':>7} " + " ".join(f"{f'[{i}] us':>10} {'ratio':>6}" for i in range(len(alts))))
for key, r in base.items():
    line = f"{key[0] or key[1]:14} {1e3 * r['ms']:11.1f} {r['tflops']:7.0f} "
    for a in alts:
        o = others[a].get(key)
        line += f"{1e3 * o['ms']:10.1f} {o['ms'] / r['ms']:6.2f} " if o else f"{'-':>10} {'-':>6} "
    print(line)
PY
fi

echo "== peers (FlexAttention, SDPA flash, SDPA cuDNN) on the same layouts"
PYTHONUNBUFFERED=1 python3 "$root/bench/peers.py" "$layouts"/* --no-dense-above 120000 --json "$out/peers.json" 2>&1 | grep -v Warning | tail -20 || status=1

# The SM clock and power under sustained runs of W2 and the 1M-atom globule (about 100 s): the
# GPU holds its power limit by lowering the clock, so time ratios are read beside these.
power_json=""
if [ "${POWER:-1}" = 1 ]; then
  power_layouts=$(for w in w2 1m; do [ -d "$layouts/$w" ] && echo "$layouts/$w"; done)
  if [ -n "$power_layouts" ]; then
    echo "== SM clock and power under sustained runs (bench/power.py)"
    PYTHONUNBUFFERED=1 python3 "$root/bench/power.py" $power_layouts --protattn "$protattn" --grids "${POWER_GRIDS:-66}" \
      --json "$out/power.json" 2>&1 | grep -v Warning | tail -12 || status=1
    [ -f "$out/power.json" ] && power_json=$out/power.json
  fi
fi

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
      for c in 1 4 16; do
        echo "-- perf_analyzer $proto concurrency $c"
        "$PERF_ANALYZER" -m attention -u "$url" -i "$proto" --input-data "$sdir/pa" --concurrency-range "$c:$c" \
          --measurement-interval 3000 --max-trials 6 --stability-percentage 30 -f "$out/perf_analyzer_${proto}_$c.csv" \
          --shape "COORDS:$n,3" --shape "Q:8,$n,64" --shape "K:8,$n,64" --shape "V:8,$n,64" >/dev/null 2>"$sdir/pa.err" \
          && cat "$out/perf_analyzer_${proto}_$c.csv" || { tail -5 "$sdir/pa.err"; status=1; }
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
  --meta "commit=$commit" "nvidia_driver=$driver" ${power_json:+--power "$power_json"} || status=1
[ "${ENCODER:-0}" = 1 ] && run_encoder
[ "${DIST:-0}" = 1 ] && run_dist
[ "${PROFILE:-0}" = 1 ] && run_profile
exit $status
