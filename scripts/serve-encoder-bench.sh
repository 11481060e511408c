#!/usr/bin/env bash
# The atom_encoder serving numbers of issue 6, in one run: `protattn serve` with two models, the
# W1-sized one (1 layer, 1 head, d=64) and the default demo model (2 layers, 4 heads, d=64, 8 A),
# driven by perf_analyzer over gRPC on the same machine; the offline batched forward of the same
# model and inputs (`protattn embed --copies C --repeat R`), which gives the serving efficiency
# (served / offline at the same batch); and `protattn loop` on a 4,096-atom structure. Writes
# $OUT/encoder_serving.json and prints a table last.
#
#   scripts/serve-encoder-bench.sh BIN_DIR OUT [ENGINE]      (ENGINE: fused, the default, or cpu)
#
# Inputs: the first 4,096 atoms of 2HHB and the first 20,000 atoms of 6ZU5 in file order (the
# default selection: heavy atoms, no waters), written as PDB files so that every tool reads the
# same atoms. The weights are seeded random (UNTRAINED): timings only.
# Environment: PERF_ANALYZER (else PATH or ~/.cache/protattn/perf_analyzer), CONCURRENCY
# ("1 4 16 64"), WINDOW_MS (3000), LOOP_ITERS (1000; 0: no loop), SIZES ("4096 20000"),
# MODELS ("encoder_w1 atom_encoder"), PORT (18200), THREADS (cpu engine threads, 0 = all),
# SERVE_ARGS (more `protattn serve` options, e.g. "--devices 0,0" for two inference threads on one
# GPU; NAME=value words among them are set in the server's environment). When SERVE_ARGS has
# --allow-shared-memory, perf_analyzer passes inputs and outputs through system shared memory
# (--shared-memory system) instead of the gRPC messages.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:?usage: serve-encoder-bench.sh BIN_DIR OUT [ENGINE]}
out=${2:?usage: serve-encoder-bench.sh BIN_DIR OUT [ENGINE]}
engine=${3:-fused}
protattn=$bin/protattn
[ -x "$protattn" ] || { echo "serve-encoder-bench: no protattn in $bin" >&2; exit 2; }
pa=${PERF_ANALYZER:-$(command -v perf_analyzer || echo "$HOME/.cache/protattn/perf_analyzer/perf_analyzer")}
[ -x "$pa" ] || { echo "serve-encoder-bench: perf_analyzer not found (set PERF_ANALYZER)" >&2; exit 2; }
conc=${CONCURRENCY:-1 4 16 64}
window=${WINDOW_MS:-3000}
iters=${LOOP_ITERS:-1000}
sizes=${SIZES:-4096 20000}
models=${MODELS:-encoder_w1 atom_encoder}
port=${PORT:-18200}
threads=${THREADS:-0}
# A server that allows shared memory is measured through it (perf_analyzer and a second loop).
shm=0
[[ " ${SERVE_ARGS:-} " == *" --allow-shared-memory "* ]] && shm=1
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

echo "== inputs and models ($engine)"
"$protattn" init-model "$work/m0.safetensors" --layers 0 > /dev/null || exit 1
for f in 2hhb.pdb 6zu5.cif; do
  [ -f "$root/tests/data/$f" ] || continue
  "$protattn" embed "$root/tests/data/$f" --model "$work/m0.safetensors" --out "$work/x.npy" \
    --save-inputs "$work/in_${f%%.*}" > /dev/null 2>&1 || { echo "embed --save-inputs $f failed" >&2; exit 1; }
done
python3 - "$work" $sizes <<'PY' || exit 1
import os, sys
import numpy as np
work, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
symbols = ("X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
           "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba").split()
for n in sizes:
    src = "in_2hhb" if n <= 4558 else "in_6zu5"
    if not os.path.isdir(os.path.join(work, src)):
        sys.exit(f"no structure with {n} atoms (tests/data lacks {src[3:]})")
    xyz = np.load(os.path.join(work, src, "coords.npy")).astype(np.float32)
    el = np.load(os.path.join(work, src, "elements.npy")).astype(np.int32)
    if len(xyz) < n:
        sys.exit(f"{src[3:]} has {len(xyz)} atoms, fewer than {n}")
    xyz, el = np.ascontiguousarray(xyz[:n]), np.ascontiguousarray(el[:n])
    d = os.path.join(work, f"pa_{n}")
    os.makedirs(d, exist_ok=True)
    xyz.tofile(os.path.join(d, "COORDS"))
    el.tofile(os.path.join(d, "ELEMENTS"))
    with open(os.path.join(work, f"s{n}.pdb"), "w") as f:
        for i, ((x, y, z), e) in enumerate(zip(xyz, el)):
            sym = symbols[e] if 0 < e < len(symbols) else "C"
            name = sym.upper()[:2]
            f.write(f"ATOM  {(i + 1) % 100000:5d} {name:<4s} UNK A{(i // 10) % 10000:4d}    "
                    f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {sym.upper():>2s}\n")
        f.write("END\n")
PY
mkdir -p "$work/models/atom_encoder" "$work/models/encoder_w1"
for m in atom_encoder encoder_w1; do
  printf '{"name": "%s", "backend": "protattn", "type": "atom_encoder", "parameters": {"weights": {"string_value": "model.safetensors"}}}\n' \
    "$m" > "$work/models/$m/config.json"
done
"$protattn" init-model "$work/models/atom_encoder/model.safetensors" > /dev/null || exit 1
"$protattn" init-model "$work/models/encoder_w1/model.safetensors" --layers 1 --heads 1 --dim 64 --channels 64 > /dev/null || exit 1

echo "== offline batched forwards (protattn embed --copies C --repeat R)"
for m in $models; do
  for n in $sizes; do
    for c in $conc; do
      rounds=20; [ "$engine" = cpu ] && rounds=2
      "$protattn" embed "$work/s$n.pdb" --model "$work/models/$m/model.safetensors" --engine "$engine" --threads "$threads" \
        --out "$work/x.npy" --copies "$c" --repeat "$rounds" --json "$out/offline_${m}_${n}_c$c.json" 2>/dev/null | tail -1 \
        || status=1
    done
  done
done

echo "== serving: protattn serve --engine $engine, perf_analyzer over gRPC"
# SERVE_ARGS: server options; words NAME=value among them go to its environment instead.
serve_env=() serve_opts=()
for a in ${SERVE_ARGS:-}; do
  case "$a" in
    -*) serve_opts+=("$a") ;;
    [A-Z]*=*) serve_env+=("$a") ;;
    *) serve_opts+=("$a") ;;
  esac
done
env "${serve_env[@]}" "$protattn" serve --models "$work/models" --engine "$engine" --threads "$threads" \
  --http-port "$port" --grpc-port $((port + 1)) --log-level warn --max-queue 256 --max-batch-requests 64 \
  --max-batch-atoms 2000000 "${serve_opts[@]}" &
spid=$!
# Snapshots for the CPU accounting: machine busy and idle ticks, the server's user + system
# ticks; and the requests the server has answered (its metrics).
cpu_snapshot() {
  local busy idle
  read -r busy idle < <(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
  echo "$busy $idle $(awk '{ print $14 + $15 }' "/proc/$spid/stat")"
}
# Per thread of the server: "tid name ticks" (user + system), for the CPU by thread name.
thread_snapshot() {
  local t s rest
  for t in /proc/"$spid"/task/*; do
    s=$(cat "$t/stat" 2>/dev/null) || continue
    rest=${s##*) }
    set -- $rest
    echo "${t##*/} $(tr -c 'A-Za-z0-9_.\n-' '_' < "$t/comm") $((${12} + ${13}))"
  done
}
requests_answered() {
  curl -s "http://127.0.0.1:$port/metrics" | awk '/^protattn_requests_total/ { s += $2 } END { print s + 0 }'
}
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null || { echo "server did not become ready" >&2; kill "$spid"; exit 1; }
for m in $models; do
  for n in $sizes; do
    for c in $conc; do
      echo "-- $m, $n atoms, concurrency $c"
      shm_args=()  # output region: room for n x 128 fp16 channels (the widest model here)
      [ "$shm" = 1 ] && shm_args=(--shared-memory system --output-shared-memory-size $((n * 128 * 2)))
      # Where the CPU goes over the perf_analyzer run: the machine's busy share (/proc/stat), the
      # server's CPU seconds (/proc/PID/stat) per request answered, and perf_analyzer's own.
      thread_snapshot > "$work/threads0.txt"
      cpu0=$(cpu_snapshot); req0=$(requests_answered)
      # PERF_BIN (a perf binary): a CPU profile of the whole machine (server and perf_analyzer,
      # by thread name) over 4 s of the highest concurrency.
      perf_pid=""
      if [ -n "${PERF_BIN:-}" ] && [ "$c" = "${conc##* }" ]; then
        ( sleep 2; "$PERF_BIN" record -a -F 499 -g -o "$work/perf.data" -- sleep 4 ) > "$work/perf_record.log" 2>&1 &
        perf_pid=$!
      fi
      # The GPU's busy share over the run (nvidia-smi's utilization.gpu: the time a kernel ran),
      # sampled every 200 ms: whether the rate is bound by the device or by the host.
      smi_pid=""
      if [ "$engine" != cpu ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$work/gpu_util.txt" 2>/dev/null &
        smi_pid=$!
      fi
      TIMEFORMAT='%R %U %S'
      { time "$pa" -m "$m" -u "127.0.0.1:$((port + 1))" -i grpc --input-data "$work/pa_$n" --concurrency-range "$c:$c" \
        "${shm_args[@]}" \
        --shape "COORDS:$n,3" --shape "ELEMENTS:$n" --measurement-interval "$window" --max-trials 6 \
        --stability-percentage 30 --percentile 99 -f "$out/pa_${m}_${n}_c$c.csv" > "$work/pa.log" 2>&1 \
        || { tail -3 "$work/pa.log"; status=1; } ; } 2> "$work/pa_time.txt"
      echo "$cpu0 $(cpu_snapshot) $req0 $(requests_answered) $(cat "$work/pa_time.txt")" > "$out/cpu_${m}_${n}_c$c.txt"
      if [ -n "$smi_pid" ]; then
        kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null
        cp "$work/gpu_util.txt" "$out/gpu_util_${m}_${n}_c$c.txt"
        awk '$1 ~ /^[0-9]+$/ { s += $1; n++ } END { if (n) printf "  GPU busy (nvidia-smi utilization.gpu, %d samples): mean %.0f%%\n", n, s / n }' \
          "$work/gpu_util.txt"
      fi
      thread_snapshot > "$work/threads1.txt"
      if [ -n "$perf_pid" ]; then
        wait "$perf_pid"
        if [ -s "$work/perf.data" ]; then
          trim() { sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'; }
          "$PERF_BIN" report -i "$work/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | trim \
            > "$out/perf_threads_${m}_${n}_c$c.txt"
          "$PERF_BIN" report -i "$work/perf.data" --no-children --sort comm,dso,symbol --stdio --percent-limit 0.3 -g none \
            2>/dev/null | trim > "$out/perf_self_${m}_${n}_c$c.txt"
          "$PERF_BIN" report -i "$work/perf.data" --children --sort symbol --stdio --percent-limit 2 -g none 2>/dev/null | trim \
            > "$out/perf_children_${m}_${n}_c$c.txt"
          echo "  perf profile of the server at $c in flight: perf_self_${m}_${n}_c$c.txt"
        else
          echo "  perf record failed: $(tail -2 "$work/perf_record.log")"
        fi
      fi
      # The server's CPU by thread name over the run (threads that ended in it: "(ended)").
      python3 - "$work/threads0.txt" "$work/threads1.txt" "$out/cpu_${m}_${n}_c$c.txt" \
        > "$out/threads_${m}_${n}_c$c.json" <<'PY' || status=1
import json, os, sys
def load(f):
    d = {}
    for line in open(f):
        tid, name, ticks = line.split()
        d[tid] = (name, int(ticks))
    return d
t0, t1 = load(sys.argv[1]), load(sys.argv[2])
v = open(sys.argv[3]).read().split()
hz = os.sysconf("SC_CLK_TCK")
server_ticks = float(v[5]) - float(v[2])
requests = max(1.0, float(v[7]) - float(v[6]))
by = {}
live = 0
for tid, (name, ticks) in t1.items():
    d = ticks - t0.get(tid, (name, 0))[1]
    by.setdefault(name, [0, 0])
    by[name][0] += d
    by[name][1] += 1
    live += d
by["(ended)"] = [server_ticks - live, 0]
rows = sorted(({"name": k, "threads": n, "cpu_s": t / hz, "us_per_request": 1e6 * t / hz / requests}
               for k, (t, n) in by.items()), key=lambda r: -r["cpu_s"])
json.dump(rows, sys.stdout, indent=1)
PY
    done
  done
done
curl -s "http://127.0.0.1:$port/metrics" > "$out/encoder_metrics.txt"

if [ "$iters" -gt 0 ] && echo " $sizes " | grep -q " 4096 "; then
  loops=(loop); [ "$shm" = 1 ] && loops+=(loop_shm)  # loop_shm: tensors through shared memory
  for l in "${loops[@]}"; do
    echo "== protattn loop ($l): $iters iterations, one client, 4,096 atoms, the demo model"
    "$protattn" loop --server "http://127.0.0.1:$port" --model atom_encoder --iterations "$iters" \
      --structure "$work/s4096.pdb" $([ "$l" = loop_shm ] && echo --shared-memory) > "$out/$l.txt" 2>&1 || status=1
    cat "$out/$l.txt"
  done
fi
kill -TERM "$spid"; wait "$spid" || status=1

# Where it ran: the GPU and its driver, the host's processor, the date; the commit of the binaries
# (build-carry.sh stages it beside them) or of this tree.
{
  echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  command -v nvidia-smi > /dev/null && echo "gpu $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  echo "cpu $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "commit $(cat "$bin/../COMMIT" 2>/dev/null || git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$out/machine.txt"

python3 - "$out" "$engine" "$conc" "$sizes" "$models" <<'PY' || status=1
import csv, glob, json, os, re, sys
out, engine, conc, sizes, models = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), sys.argv[5].split()
machine = dict(line.rstrip("\n").split(" ", 1) for line in open(os.path.join(out, "machine.txt")) if " " in line)
rows = []
for m in models:
    for n in sizes:
        for c in conc:
            r = {"model": m, "atoms": int(n), "concurrency": int(c)}
            f = os.path.join(out, f"pa_{m}_{n}_c{c}.csv")
            if os.path.exists(f):
                with open(f) as fh:
                    row = next(csv.DictReader(fh), None)
                if row:
                    r["infer_per_s"] = float(row["Inferences/Second"])
                    r["p50_ms"] = float(row["p50 latency"]) / 1e3
                    r["p99_ms"] = float(row["p99 latency"]) / 1e3
            f = os.path.join(out, f"cpu_{m}_{n}_c{c}.txt")
            if os.path.exists(f):
                v = open(f).read().split()
                if len(v) == 11:
                    b0, i0, s0, b1, i1, s1, q0, q1 = (float(x) for x in v[:8])
                    wall, pa_user, pa_sys = (float(x) for x in v[8:])
                    hz = os.sysconf("SC_CLK_TCK")
                    r["machine_busy"] = (b1 - b0) / max(1.0, (b1 - b0) + (i1 - i0))
                    r["server_cpu_s"] = (s1 - s0) / hz
                    r["client_cpu_s"] = pa_user + pa_sys
                    r["window_s"] = wall
                    if q1 > q0:
                        r["server_cpu_us_per_request"] = 1e6 * r["server_cpu_s"] / (q1 - q0)
                        r["client_cpu_us_per_request"] = 1e6 * r["client_cpu_s"] / (q1 - q0)
            f = os.path.join(out, f"gpu_util_{m}_{n}_c{c}.txt")
            if os.path.exists(f):
                u = [float(x) for x in open(f).read().split() if x.isdigit()]
                if u:
                    r["gpu_busy"] = sum(u) / len(u) / 100
            f = os.path.join(out, f"threads_{m}_{n}_c{c}.json")
            if os.path.exists(f):
                r["server_threads"] = json.load(open(f))
            f = os.path.join(out, f"offline_{m}_{n}_c{c}.json")
            if os.path.exists(f):
                off = json.load(open(f))
                r["offline_per_s"] = off["structures_per_s"]
                r["offline_batch_ms"] = off["round_ms_median"]
                if r.get("infer_per_s") and off["structures_per_s"]:
                    r["served_over_offline"] = r["infer_per_s"] / off["structures_per_s"]
            rows.append(r)
def read_loop(name):
    lf = os.path.join(out, name)
    if not os.path.exists(lf):
        return None
    t = open(lf).read()
    m1 = re.search(r"(\d+) iterations in ([\d.]+) s", t)
    m2 = re.search(r"p50 ([\d.]+)\s+p90 ([\d.]+)\s+p99 ([\d.]+)", t)
    if not m1:
        return None
    r = {"iterations": int(m1.group(1)), "wall_s": float(m1.group(2))}
    if m2:
        r.update(p50_ms=float(m2.group(1)), p90_ms=float(m2.group(2)), p99_ms=float(m2.group(3)))
    return r
loop, loop_shm = read_loop("loop.txt"), read_loop("loop_shm.txt")
json.dump({"machine": machine, "engine": engine, "rows": rows, "loop": loop, "loop_shared_memory": loop_shm,
           "targets": {"encoder_w1_4096_infer_per_s": 21550, "encoder_w1_4096_p99_ms": 5,
                       "served_over_offline": 0.8, "loop_1000_wall_s_original_claim": 0.46}},
          open(os.path.join(out, "encoder_serving.json"), "w"), indent=2)
print(f"{'model':13} {'atoms':>6} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'offline/s':>10} {'served/off':>10}"
      f" {'busy':>5} {'gpu':>5} {'srv us/req':>10} {'cli us/req':>10}")
for r in rows:
    g = lambda k, f="{:.1f}": f.format(r[k]) if k in r else "-"
    print(f"{r['model']:13} {r['atoms']:6d} {r['concurrency']:4d} {g('infer_per_s'):>9} {g('p50_ms', '{:.2f}'):>8} "
          f"{g('p99_ms', '{:.2f}'):>8} {g('offline_per_s'):>10} {g('served_over_offline', '{:.2f}'):>10}"
          f" {g('machine_busy', '{:.2f}'):>5} {g('gpu_busy', '{:.2f}'):>5} {g('server_cpu_us_per_request', '{:.0f}'):>10} {g('client_cpu_us_per_request', '{:.0f}'):>10}")
for r in rows:
    if r.get("server_threads"):
        top = ", ".join(f"{t['name']} x{t['threads']} {t['us_per_request']:.0f}" for t in r["server_threads"][:5])
        print(f"  c{r['concurrency']} server CPU us/request by thread: {top}")
if loop:
    print(f"loop: {loop}")
if loop_shm:
    print(f"loop through shared memory: {loop_shm}")
print("targets: encoder_w1 at 4096 atoms >= 21,550 infer/s with p99 <= 5 ms; served/offline >= 0.8; "
      "loop 1000 iterations (original claim 0.46 s)")
PY
exit $status
