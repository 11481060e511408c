# End to end: `protattn run --engine cpu` on real structures, checked against an independent
# float64 numpy reference computed here from the exported layout and the written Q, K, V.
# Usage: bash run_reference.sh PROTATTN_BINARY DATA_DIR
set -euo pipefail
bin=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# check.py OUT BOUND: dense masked softmax in float64 over the layout's kept tiles, the mask
# rule of meta.json (tiles / atoms: float32 d2 <= cutoff^2 or i == j / windows), rows moved to
# layout order by perm.npy and back; every element of o.npy and lse.npy is compared.
cat > "$work/check.py" <<'PY'
import json, sys
import numpy as np

out, bound = sys.argv[1], float(sys.argv[2])
lay = out + "/layout"
meta = json.load(open(lay + "/meta.json"))
n, tile = meta["n"], meta["tile"]
row_ptr, col_idx = np.load(lay + "/row_ptr.npy"), np.load(lay + "/col_idx.npy")
perm, coords = np.load(lay + "/perm.npy"), np.load(lay + "/coords.npy")  # coords in file order
q, k, v = (np.load(out + "/" + f + ".npy").astype(np.float64) for f in ("q", "k", "v"))
o, lse = np.load(out + "/o.npy").astype(np.float64), np.load(out + "/lse.npy").astype(np.float64)
H, N, D = q.shape
assert N == n and o.shape == (H, N, D) and lse.shape == (H, N), (q.shape, o.shape, lse.shape, n)

n_tiles = (n + tile - 1) // tile
kept = np.zeros((n_tiles, n_tiles), dtype=bool)
for r in range(n_tiles):
    kept[r, col_idx[row_ptr[r]:row_ptr[r + 1]]] = True
pos = np.arange(n)
allowed = kept[pos[:, None] // tile, pos[None, :] // tile]
if meta["mask"] == "atoms":
    c = coords[perm].astype(np.float32)
    dx = c[:, None, 0] - c[None, :, 0]
    dy = c[:, None, 1] - c[None, :, 1]
    dz = c[:, None, 2] - c[None, :, 2]
    d2 = dx * dx + dy * dy + dz * dz
    cut = np.float32(meta["cutoff"])
    allowed &= (d2 <= cut * cut) | np.eye(n, dtype=bool)
elif meta["mask"] == "windows":
    centre = (pos // 32) * 32 + 16
    allowed &= (pos[None, :] >= centre[:, None] - 64) & (pos[None, :] < centre[:, None] + 64)

scale = float(np.float32(1.0 / np.sqrt(D)))
ql, kl, vl = q[:, perm], k[:, perm], v[:, perm]
s = np.einsum("hid,hjd->hij", ql, kl) * scale
s[:, ~allowed] = -np.inf
m = s.max(axis=2)
empty = np.isneginf(m)
p = np.exp(s - np.where(empty, 0.0, m)[:, :, None])
total = p.sum(axis=2)
ref_o = np.where(empty[:, :, None], 0.0, (p @ vl) / np.where(empty, 1.0, total)[:, :, None])
ref_lse = np.where(empty, -np.inf, m + np.log(np.where(empty, 1.0, total)))
ref_o_file, ref_lse_file = np.empty_like(ref_o), np.empty_like(ref_lse)
ref_o_file[:, perm], ref_lse_file[:, perm] = ref_o, ref_lse

assert np.all(np.isfinite(o)), "non-finite O"
peak = np.abs(ref_o_file).max(axis=(1, 2))
rel = (np.abs(o - ref_o_file) / peak[:, None, None]).max()
assert rel <= bound, f"O relative error {rel:.3g} > {bound:.3g}"
assert np.array_equal(np.isneginf(lse), np.isneginf(ref_lse_file)), "LSE -inf rows differ"
fin = np.isfinite(ref_lse_file)
lse_err = (np.abs(lse[fin] - ref_lse_file[fin]) / np.maximum(np.abs(ref_lse_file[fin]), 1.0)).max()
assert lse_err <= 1e-6, f"LSE error {lse_err:.3g}"
print(f"{out}: {meta['mask']} mask, {int(allowed.sum())} pairs, O rel error {rel:.2e}, LSE {lse_err:.2e}")
PY

# Bounds relative to the largest |O| of each head: the engine accumulates in float64, so the
# error is the rounding of O to the dtype (2^-24 fp32, 2^-11 fp16, 2^-8 bf16) plus slack.
fp32_bound=1e-6
fp16_bound=5e-4

# 1UBQ, exact 8 A atom cutoff, fp32, 2 heads.
"$bin" run "$data/1ubq.pdb" --engine cpu --heads 2 --dim 16 --dtype fp32 --mask atoms --seed 3 --out "$work/a" > "$work/a.txt"
grep -q '^GFLOPS' "$work/a.txt"
for f in o.npy lse.npy q.npy k.npy v.npy layout/meta.json layout/perm.npy; do test -s "$work/a/$f"; done
python3 "$work/check.py" "$work/a" "$fp32_bound"

# 1UBI, knn layout (tiles mask), fp16, 3 heads, 1 thread.
"$bin" run "$data/1ubi.pdb" --builder knn --neighbours 16 --heads 3 --dim 32 --dtype fp16 --threads 1 --out "$work/b" > /dev/null
python3 "$work/check.py" "$work/b" "$fp16_bound"

# Crambin 1EJG with hydrogens, AF3-style windows in file order, fp32.
"$bin" run "$data/1ejg.pdb" --hydrogens --builder windows --heads 1 --dim 8 --dtype fp32 --out "$work/c" > /dev/null
python3 "$work/check.py" "$work/c" "$fp32_bound"

# Reproducible: the written inputs given back (and another thread count) give the same bytes.
"$bin" run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp32 --mask atoms --threads 1 \
  --q "$work/a/q.npy" --k "$work/a/k.npy" --v "$work/a/v.npy" --out "$work/a2" > /dev/null
cmp "$work/a/o.npy" "$work/a2/o.npy"
cmp "$work/a/lse.npy" "$work/a2/lse.npy"
test ! -e "$work/a2/q.npy"
echo "run_reference: ok"
