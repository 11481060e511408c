# End to end: `protattn dist` with simulated ranks on the CPU (--engine cpu --ranks P): the plan,
# the halo exchange and the gather give bit-identical results to one cpu engine, the JSON report
# holds the plan, refusals are clear errors; the GPU launcher's failure path where it is built.
# Usage: bash dist.sh PROTATTN_BINARY DATA_DIR
set -euo pipefail
bin=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Spatial and heads, both mask modes, ragged sizes; --check fails the command unless bit-identical.
"$bin" dist --engine cpu --ranks 3 --mode spatial --workload globule:3000 --heads 2 --dim 16 --check \
  --json "$work/spatial.json" > "$work/spatial.txt"
grep -q "bit-identical (O and LSE)" "$work/spatial.txt"
"$bin" dist --engine cpu --ranks 4 --mode spatial --workload globule:2085 --mask atoms --heads 1 --dim 8 --dtype fp32 \
  --check > "$work/atoms.txt"
grep -q "bit-identical (O and LSE)" "$work/atoms.txt"
# --overlap: interior rows before the halo arrives, the boundary rows after: the same bits.
"$bin" dist --engine cpu --ranks 3 --mode spatial --workload globule:3000 --mask atoms --heads 2 --dim 16 --overlap \
  --check > "$work/overlap.txt"
grep -q "bit-identical (O and LSE)" "$work/overlap.txt"
"$bin" dist --engine cpu --ranks 3 --mode heads --workload w1 --heads 5 --dim 8 --check --json "$work/heads.json" \
  > "$work/heads.txt"
grep -q "bit-identical (O and LSE)" "$work/heads.txt"
if [ -f "$data/1ubq.pdb" ]; then
  "$bin" dist --engine cpu --ranks 7 --mode spatial --workload "$data/1ubq.pdb" --mask atoms --heads 2 --dim 16 --check \
    | grep -q "bit-identical (O and LSE)"
fi

# The plan alone on a larger globule: cost balanced, halo below an all-gather.
"$bin" dist --engine cpu --plan-only --ranks 4 --mode spatial --workload globule:60000 --overlap --json "$work/plan.json" \
  > /dev/null

python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
s = json.load(open(w + "/spatial.json"))
assert s["mode"] == "spatial" and s["ranks"] == 3 and s["atoms"] == 3000, s
assert s["check"]["bit_identical"] is True and s["check"]["max_abs_o"] == 0, s["check"]
tiles = sorted((r["tile_begin"], r["tile_end"]) for r in s["per_rank"])
assert tiles[0][0] == 0 and tiles[-1][1] == s["tiles"] and all(a[1] == b[0] for a, b in zip(tiles, tiles[1:])), tiles
# Bytes moved by the simulated exchange are exactly the planned halo bytes.
assert s["bytes_moved"] == s["halo_bytes"], (s["bytes_moved"], s["halo_bytes"])
h = json.load(open(w + "/heads.json"))
assert [(r["head_begin"], r["head_end"]) for r in h["per_rank"]] == [(0, 2), (2, 4), (4, 5)], h["per_rank"]
p = json.load(open(w + "/plan.json"))
assert 1.0 <= p["imbalance"] < 1.05, p["imbalance"]
assert p["halo_bytes"] < p["allgather_bytes"], (p["halo_bytes"], p["allgather_bytes"])
assert "check" not in p and "simulated_ranks" not in p
# --overlap: every rank's kept blocks are its interior ones plus its boundary ones, both present.
for r in p["per_rank"]:
    assert r["interior_blocks"] > 0 and r["boundary_blocks"] > 0, r
assert sum(r["interior_blocks"] + r["boundary_blocks"] for r in p["per_rank"]) == p["nnz_blocks"], p["per_rank"]
print(f"dist: spatial/heads bit-identical; 60k-atom plan: imbalance {p['imbalance']:.4f}, "
      f"halo {p['halo_bytes'] / 2**20:.1f} MiB vs all-gather {p['allgather_bytes'] / 2**20:.1f} MiB")
PY

# expect CODE TEXT -- ARGS...: exit CODE and "protattn: error: ...TEXT" on stderr.
expect() {
  local code=$1 text=$2
  shift 3
  set +e
  "$bin" "$@" > "$work/stdout" 2> "$work/stderr"
  local rc=$?
  set -e
  if [[ $rc -ne $code ]] || ! grep -q "^protattn: error: " "$work/stderr" || ! grep -qF -- "$text" "$work/stderr"; then
    echo "FAIL: protattn $* exited $rc (expected $code with '$text')"; cat "$work/stderr"; exit 1
  fi
}
expect 1 "8 heads over 9 ranks" -- dist --engine cpu --ranks 9 --mode heads --workload globule:500
expect 2 "--mode" -- dist --engine cpu --mode rows --workload globule:500
expect 2 "--gpus is for --engine fused" -- dist --engine cpu --gpus 2 --workload globule:500
RANK=1 WORLD_SIZE=1 expect 1 "RANK=1 is not below WORLD_SIZE=1" -- dist --engine cpu --workload globule:500

# The GPU launcher: on a machine without GPUs every rank fails and the launcher says so (exit 1);
# with GPUs the run passes. A build without NCCL refuses --engine fused.
set +e
timeout 120 "$bin" dist --engine fused --gpus 2 --workload globule:2000 --heads 2 --iters 1 --warmup 0 --timeout 20 \
  > "$work/gpu.txt" 2> "$work/gpu.err"
rc=$?
set -e
if grep -q "needs a build with CUDA and NCCL" "$work/gpu.err"; then
  echo "dist: no NCCL executor in this build (launcher not exercised)"
elif [[ $rc -eq 0 ]]; then
  echo "dist: the launcher ran 2 GPU ranks"
elif [[ $rc -eq 1 ]] && grep -q "^protattn: error: dist: rank [01] failed" "$work/gpu.err"; then
  echo "dist: the launcher reported its failed ranks: $(tail -1 "$work/gpu.err")"
else
  echo "FAIL: protattn dist --gpus 2 exited $rc"; cat "$work/gpu.err"; exit 1
fi
