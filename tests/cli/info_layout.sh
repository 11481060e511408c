# End to end: `protattn info` and `protattn layout --export` on real structures (tests/data).
# Usage: bash info_layout.sh PROTATTN_BINARY DATA_DIR
set -euo pipefail
bin=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Ubiquitin 1UBQ: 602 heavy atoms of the protein (660 with waters), 76 residues, 1 chain
# (counts from the PDB entry's ATOM records).
"$bin" info "$data/1ubq.pdb" > "$work/info.txt"
grep -Eq '^atoms +602$' "$work/info.txt"
grep -Eq '^residues +76$' "$work/info.txt"
grep -Eq '^chains +1$' "$work/info.txt"
"$bin" info "$data/1ubq.pdb" --waters --json > "$work/info.json"
python3 - "$work/info.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["atoms"] == 660, j
assert j["chains"] == 1 and j["waters"] is True, j
lo, hi = j["box"]["lo"], j["box"]["hi"]
assert all(a < b for a, b in zip(lo, hi)), j
PY
# Haemoglobin 2HHB: the atom count is checked against an independent count of the file's
# ATOM/HETATM records of the first model (no waters, no hydrogens, first alternate location).
"$bin" info "$data/2hhb.pdb" --json > "$work/hhb.json"
python3 - "$work/hhb.json" "$data/2hhb.pdb" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
count = 0
for line in open(sys.argv[2]):
    if line.startswith("ENDMDL"):
        break
    if not line.startswith(("ATOM  ", "HETATM")):
        continue
    element = line[76:78].strip() or line[12:14].strip()
    if line[17:20] == "HOH" or element in ("H", "D") or line[16] not in " A":
        continue
    count += 1
assert j["atoms"] == count, (j["atoms"], count)
assert j["chains"] >= 4, j
PY

# Layout of 1ubq with the exact atom cutoff, exported.
"$bin" layout "$data/1ubq.pdb" --cutoff 8 --order hilbert --mask atoms --export "$work/ubq" > "$work/layout.txt"
grep -Eq '^atoms +602$' "$work/layout.txt"
grep -q 'useful fraction' "$work/layout.txt"
for f in row_ptr.npy col_idx.npy kind.npy perm.npy coords.npy meta.json; do
  test -s "$work/ubq/$f" || { echo "missing $work/ubq/$f"; exit 1; }
done
python3 - "$work/ubq" <<'PY'
import json, sys
import numpy as np
d = sys.argv[1]
m = json.load(open(d + "/meta.json"))
assert m["n"] == 602 and m["tile"] == 128 and m["n_tiles"] == 5, m
assert m["mask"] == "atoms" and m["order"] == "hilbert" and m["builder"] == "cutoff", m
assert abs(m["cutoff"] - 8.0) < 1e-6, m
row_ptr, col_idx, perm = np.load(d + "/row_ptr.npy"), np.load(d + "/col_idx.npy"), np.load(d + "/perm.npy")
assert row_ptr.dtype == np.int32 and col_idx.dtype == np.int32 and perm.dtype == np.int32
assert row_ptr.shape == (6,) and row_ptr[0] == 0 and row_ptr[-1] == len(col_idx) == m["nnz"], (row_ptr, m)
assert sorted(perm.tolist()) == list(range(602))
assert np.load(d + "/coords.npy").shape == (602, 3)
PY

# The JSON statistics of a knn layout agree with its export.
"$bin" layout "$data/1ubi.pdb" --builder knn --k 16 --json --export "$work/ubi" > "$work/ubi.json"
python3 - "$work/ubi.json" "$work/ubi" <<'PY'
import json, sys
import numpy as np
j = json.load(open(sys.argv[1]))
m = json.load(open(sys.argv[2] + "/meta.json"))
assert j["builder"] == "knn" and m["builder"] == "knn", (j, m)
assert j["nnz"] == m["nnz"] == len(np.load(sys.argv[2] + "/col_idx.npy")), (j, m)
assert 0 < j["density"] <= 1, j
PY

# The W1 pattern and a synthetic globule.
"$bin" layout w1 --json | python3 -c 'import json,sys; j=json.load(sys.stdin); assert (j["atoms"], j["tiles"], j["nnz"]) == (4096, 32, 800), j'
"$bin" layout globule:5000 --order morton --json | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["atoms"] == 5000 and j["order"] == "morton", j'
echo "info_layout: ok"
