#!/usr/bin/env bash
# On the lent GPU machine: where the GPU time of one atom_encoder forward goes, kernel by kernel,
# with Nsight Compute (ncu, installed there) timing each kernel once (no clock control, no other
# counters). Prints a table per model (total time per kernel name, calls, share) and writes the
# raw CSV under $OUT.
#   bash scripts/gpu-profile.sh [BIN_DIR]    (default build/tools)
# With binaries staged by scripts/build-carry.sh, run it through `bash scripts/gpu-carry-run.sh
# PROFILE=only`, which unpacks their libraries and the structures first.
# Environment: COPIES (64: structures per batch), STRUCTURE (tests/data/2hhb.pdb).
# KERNEL_PROFILE="w2" (workloads, ',' between) profiles instead the fused engine's attention
# kernel alone on `protattn bench` (one launch after warm-up; throughput, pipes, memory, stall
# reasons), once per setting in KERNEL_SETTINGS (entries of VAR=value joined by ','; '-' for the
# defaults), and prints the chosen metrics side by side.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
protattn=${1:-$root/build/tools}/protattn
[ -x "$protattn" ] || { echo "gpu-profile: no $protattn" >&2; exit 2; }
out=${OUT:-$root/out}
mkdir -p "$out"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -x "$ncu" ] || { echo "gpu-profile: no ncu" >&2; exit 2; }
if [ -n "${KERNEL_PROFILE:-}" ]; then
  status=0
  settings=${KERNEL_SETTINGS:--}
  for wl in ${KERNEL_PROFILE//,/ }; do
    for setting in $settings; do
      tag=$(echo "$wl $setting" | tr -c 'A-Za-z0-9_=\n' '_')
      envs=""; [ "$setting" != - ] && envs=$(echo "$setting" | tr ',' ' ')
      env $envs "$ncu" --clock-control none -k regex:'fused_ws_kernel|fused_attention_kernel' --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section Occupancy --section SchedulerStats --page raw --csv --print-units base \
        "$protattn" bench --engine fused --workload "$wl" --iters 5 > "$out/ncu_kernel_$tag.csv" 2> "$out/ncu_kernel_$tag.err" \
        || { tail -5 "$out/ncu_kernel_$tag.err"; status=1; }
    done
  done
  python3 - "$out" <<'PY' || status=1
import csv, glob, io, sys
want = ["gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
        "sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active",
        "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
        "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active", "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active",
        "smsp__issue_active.avg.pct_of_peak_sustained_active", "lts__t_sector_hit_rate.pct",
        "dram__throughput.avg.pct_of_peak_sustained_elapsed", "dram__bytes_read.sum", "lts__throughput.avg.pct_of_peak_sustained_elapsed",
        "l1tex__throughput.avg.pct_of_peak_sustained_active", "sm__warps_active.avg.pct_of_peak_sustained_active",
        "smsp__warps_eligible.avg.per_cycle_active", "launch__registers_per_thread", "launch__occupancy_limit_registers"]
cols = {}
for f in sorted(glob.glob(sys.argv[1] + "/ncu_kernel_*.csv")):
    lines = [l for l in open(f) if l.startswith('"')]
    if len(lines) < 3:
        continue
    rows = list(csv.reader(io.StringIO("".join(lines))))
    head, vals = rows[0], rows[-1]
    d = dict(zip(head, vals))
    tag = f.split("ncu_kernel_")[1][:-4]
    cols[tag] = d
if not cols:
    sys.exit("gpu-profile: no kernel profile came back")
names = list(cols)
print("metric".ljust(70) + "".join(n[:26].rjust(28) for n in names))
any_d = next(iter(cols.values()))
stalls = sorted(k for k in any_d if "issue_stalled" in k and not k.endswith("not_issued"))
for m in want + stalls:
    if not any(m in c for c in cols.values()):
        continue
    print(m[:70].ljust(70) + "".join(str(c.get(m, "-"))[:26].rjust(28) for c in cols.values()))
PY
  exit $status
fi
structure=${STRUCTURE:-$root/tests/data/2hhb.pdb}
copies=${COPIES:-64}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
"$protattn" init-model "$work/demo.safetensors" > /dev/null || exit 1
"$protattn" init-model "$work/w1.safetensors" --layers 1 --heads 1 --dim 64 --channels 64 > /dev/null || exit 1
summarize() {
  python3 - "$1" <<'PY' || status=1
import csv, sys, collections
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
t = collections.defaultdict(float); n = collections.Counter()
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].split("(")[0].split("<")[0][:60]
    t[name] += float(r["Metric Value"].replace(",", "")) / 1e3  # ns -> us (thousands separated)
    n[name] += 1
total = sum(t.values())
print(f"{'kernel':60} {'calls':>5} {'us':>10} {'share':>6}")
for k, v in sorted(t.items(), key=lambda kv: -kv[1]):
    print(f"{k:60} {n[k]:5d} {v:10.1f} {100 * v / total:5.1f}%")
print(f"{'all kernels':60} {sum(n.values()):5d} {total:10.1f}")
PY
}
for m in w1 demo; do
  echo "== ncu: protattn embed $(basename "$structure") --copies $copies, model $m (plan, one forward, fetch; then one more round)"
  "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    "$protattn" embed "$structure" --model "$work/$m.safetensors" --engine fused --out "$work/x.npy" \
    --copies "$copies" --repeat 1 > "$out/ncu_$m.csv" 2> "$work/ncu.err" || { tail -5 "$work/ncu.err"; status=1; }
  summarize "$out/ncu_$m.csv"
done
echo "== ncu: protattn bench --engine fused --workload w1 (the first 8 kernels)"
"$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --launch-count 8 \
  "$protattn" bench --engine fused --workload w1 > "$out/ncu_bench_w1.csv" 2> "$work/ncu.err" || { tail -5 "$work/ncu.err"; status=1; }
summarize "$out/ncu_bench_w1.csv"
exit $status
