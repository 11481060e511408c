#!/bin/bash
# LSE and O of the fused engine against the cpu engine (same seeded inputs), a few cases.
B=$PWD/.carry/bin/protattn; T=$(mktemp -d)
for c in "globule:4113 --mask tiles" "globule:4113 --mask atoms" "globule:20000 --mask tiles" "globule:300 --builder dense --mask tiles"; do
  for dt in fp16 bf16; do
    for e in fused cpu; do $B run $c --dtype $dt --heads 2 --engine $e --out $T/$e > /dev/null 2>&1 || echo "fail $e $c"; done
    python3 - "$T" "$c $dt" <<'PY'
import numpy as np, sys
t, name = sys.argv[1], sys.argv[2]
lf, lc = np.load(t+'/fused/lse.npy').astype(np.float64), np.load(t+'/cpu/lse.npy').astype(np.float64)
m = np.isfinite(lc)
def f(x):
    a = np.load(x)
    return a.view(np.uint16) if a.dtype == np.uint16 else a
of, oc = np.load(t+'/fused/o.npy'), np.load(t+'/cpu/o.npy')
print(f"{name:45s} max|dLSE| {np.abs(lf[m]-lc[m]).max():.3e}  mean {np.abs(lf[m]-lc[m]).mean():.3e}  rows {m.sum()}  o dtype {of.dtype}")
PY
  done
done
