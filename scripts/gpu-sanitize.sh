#!/usr/bin/env bash
# compute-sanitizer over the GPU tests (on the GPU machine): memcheck (out-of-bounds and
# misaligned device accesses), racecheck (shared-memory hazards), synccheck (barriers used
# wrongly) and initcheck (device memory read before it was written), each over the GPU tests
# (initcheck over the fused engine's, racecheck over its smaller cases), then a line per tool.
#   scripts/gpu-sanitize.sh [BIN_DIR] [OUT_DIR]
# BIN_DIR holds protattn_gpu_tests (default build/tests); results (a log per tool, sanitize.json)
# go to OUT_DIR (default ./out/sanitize).
# Environment: SANITIZER (the compute-sanitizer binary; default: .carry/san, then PATH),
# SAN_TOOLS (default "memcheck synccheck initcheck racecheck"), SAN_TIMEOUT (seconds a tool,
# default 480), SAN_OPTIONS (more compute-sanitizer options for every tool, e.g.
# "--kernel-name-exclude kns=softmax_kernel"), SAN_PRINT_LIMIT (reports printed a tool, default
# 5000), SAN_FILTER_<TOOL> (a gtest filter replacing the tool's default below).
# scripts/build-carry.sh stages the sanitizer (PyPI nvidia-cuda-sanitizer-api) in .carry/san.tar.gz.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/tests}
out=${2:-${OUT:-$root/out}/sanitize}
mkdir -p "$out"
gtests=$bin/protattn_gpu_tests
[ -x "$gtests" ] || { echo "gpu-sanitize: no $gtests" >&2; exit 2; }
san=${SANITIZER:-}
[ -z "$san" ] && [ -x "$root/.carry/san/compute-sanitizer" ] && san=$root/.carry/san/compute-sanitizer
[ -z "$san" ] && san=$(command -v compute-sanitizer || true)
[ -n "$san" ] || { echo "gpu-sanitize: no compute-sanitizer (scripts/build-carry.sh stages one; or set SANITIZER)" >&2; exit 2; }
export PROTATTN_TEST_DATA=${PROTATTN_TEST_DATA:-$root/tests/data}
"$san" --version | tail -1

# Every GPU test but the several-GPU ones and those that time many repeats: each fused kernel
# (ws, wgmma, mma_sync; fp16 and bf16; d = 32, 64, 128), the split key ranges and their combine
# kernel, TMA and cp.async, persistent blocks, graph capture, bad shapes; the grouped engine; the
# atom_encoder model's GPU forward.
all_gpu='-DistGpu*:GroupedBench*:Grouped.StageTimes:ModelGpu.ForwardTimes'
# initcheck: the fused engine's tests only. It takes the grouped engine's reads of S and of the
# P V partials for reads of memory never written (2026-12-02, compute-sanitizer 2026.3: the
# softmax and reduce kernels, on results the tests check against the float64 reference): both are
# written by CUTLASS's epilogue with TMA stores, which the tool seems not to count as writes. And
# the model's GPU forward under it outlasts the device tool's 10 minutes.
all_fused='EngineDtypeDim/EngineTest.*/fused*:FusedDim32/EngineTest.*/fused*:Fused*'
# racecheck follows every shared-memory access of every thread: the smaller cases of each
# kernel, fp16 and bf16 at d=64, fp16 at d=128 and d=32, and the split key ranges.
race='EngineDtypeDim/EngineTest.RaggedBatch/fused_*_d64:EngineDtypeDim/EngineTest.EmptyRowsOneTileAllTiles/fused_*_fp16_d64'
race+=':EngineDtypeDim/EngineTest.RaggedBatch/fused_*_fp16_d128:FusedDim32/EngineTest.RaggedBatch/fused_*_fp16_d32'
race+=':EngineDtypeDim/EngineTest.W1SplitKeyRange/fused_fp16_d64:FusedSplitGpu.*:FusedPersistent.*'
filter_for() {
  local var="SAN_FILTER_${1^^}"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  case "$1" in racecheck) echo "$race" ;; initcheck) echo "$all_fused" ;; *) echo "$all_gpu" ;; esac
}
options_for() {
  case "$1" in
    # The ws kernel synchronises through raw PTX mbarriers (fused_ws_kernel.cuh: Q, a full and an
    # empty barrier per stage of at most 8, Q free: 18 a block), which the compiler does not count
    # as cuda::barrier objects: their number is given in case the tool sizes its tracking by it
    # (on b873efa's kernel the reports were the same with and without it).
    racecheck) echo "--racecheck-report hazard --num-cuda-barriers ${SAN_BARRIERS:-18}" ;;
    *) echo "" ;;
  esac
}

# One tool's run; its line goes to $out/<tool>.line, its log to $out/<tool>.log.
run_tool() {
  local tool=$1 filter log start rc secs tests failed errors verdict limit
  filter=$(filter_for "$tool")
  log=$out/$tool.log
  limit=${SAN_TIMEOUT:-480}
  start=$(date +%s)
  # --error-exitcode: any error the tool reports fails the run, whatever the tests said.
  timeout "$limit" "$san" --tool "$tool" $(options_for "$tool") ${SAN_OPTIONS:-} --error-exitcode 97 --print-limit "${SAN_PRINT_LIMIT:-5000}" \
    --show-backtrace device \
    "$gtests" --gtest_filter="$filter" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  tests=$(grep -c '^\[       OK \]' "$log")
  failed=$(grep -c '^\[  FAILED  \] [A-Za-z].*(' "$log")
  errors=$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY)' "$log" | tail -1 | sed 's/^========= //')
  case "$rc" in
    0) verdict=clean ;;
    97) verdict="errors reported" ;;
    124) verdict="timed out after $limit s (last test: $(grep '^\[ RUN' "$log" | tail -1 | sed 's/^\[ RUN *\] //'))" ;;
    *) verdict="exit $rc" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$verdict" "$tests" "$failed" "$secs" "${errors:-}" "$rc" > "$out/$tool.line"
  sites "$log" > "$out/$tool.sites.txt"
}

# The reports of a log grouped by kind and source lines (numbers and addresses left out), with
# their count and the first tests they came from.
sites() {
  python3 - "$1" <<'PY'
import re, sys
test, key, groups = "-", None, {}
def close():
    global key
    if key:
        g = groups.setdefault(tuple(key), [0, []])
        g[0] += 1
        if test not in g[1]: g[1].append(test)
    key = None
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    m = re.match(r"\[ RUN +\] (.*)", line)
    if m:
        close(); test = m.group(1); continue
    if not line.startswith("========= "): continue
    body = line[10:]
    if not body.strip(): continue
    if not body.startswith(" "):  # a report's first line (or a summary)
        close()
        if re.match(r"(ERROR|RACECHECK) SUMMARY|COMPUTE-SANITIZER|Target application", body): continue
        key = [re.sub(r"0x[0-9a-f]+|\(\d+,\d+,\d+\)|\b\d+\b", "#", body)]
    elif key is not None:
        m = re.search(r"^ +(Read|Write|at|by|Device Frame:)?.*? in ([^ ]+:\d+)$", body)
        if m and "Host Frame" not in body and len(key) < 4:
            key.append((m.group(1) or "at") + " " + m.group(2))
close()
for k, (n, tests) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
    print(f"{n:7d}  " + " | ".join(k))
    print("         tests: " + ", ".join(tests[:4]) + (f" and {len(tests) - 4} more" if len(tests) > 4 else ""))
if not groups: print("no reports")
PY
}

# The tools run side by side (each its own process on the one GPU; the cases are small), so that
# the slow ones (racecheck, memcheck) get the whole time limit; SAN_PARALLEL=0 runs them in turn.
tools=${SAN_TOOLS:-memcheck synccheck initcheck racecheck}
for tool in $tools; do
  echo "== compute-sanitizer --tool $tool ($(filter_for "$tool"))"
  rm -f "$out/$tool.line"
  if [ "${SAN_PARALLEL:-1}" = 1 ]; then run_tool "$tool" & else run_tool "$tool"; fi
done
wait
status=0
summary="$out/summary.tsv"
: > "$summary"
for tool in $tools; do
  line=$(cat "$out/$tool.line" 2>/dev/null || printf '%s\tno result\t0\t0\t0\t\t1' "$tool")
  echo "$line" >> "$summary"
  [ "$(echo "$line" | cut -f7)" = 0 ] && continue
  status=1
  echo "-- $tool: $(echo "$line" | cut -f2); reports by kind and place ($tool.sites.txt):"
  head -30 "$out/$tool.sites.txt" 2>/dev/null
done
python3 - "$summary" "$out/sanitize.json" "$("$san" --version | tail -1)" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
json.dump({"sanitizer": sys.argv[3],
           "tools": [{"tool": r[0], "verdict": r[1], "tests_passed": int(r[2]), "tests_failed": int(r[3]),
                      "seconds": int(r[4]), "summary": r[5]} for r in rows]},
          open(sys.argv[2], "w"), indent=2)
PY
echo "== compute-sanitizer summary"
table() { if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi; }
{ printf 'tool\tverdict\ttests passed\tfailed\tseconds\tsanitizer summary\n'; cut -f1-6 "$summary"; } | table
exit $status
