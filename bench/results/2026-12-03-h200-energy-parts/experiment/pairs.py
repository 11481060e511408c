#!/usr/bin/env python3
"""Key tiles shared by query tiles 2i and 2i+1 of an exported layout (`protattn bench --workload w2
--export-layouts DIR`, any engine): what a cluster of two blocks multicasting the tiles they share
would copy, against one copy a kept tile.   pairs.py DIR/w2"""
import sys
import numpy as np

d = sys.argv[1]
rp, ci = np.load(f"{d}/row_ptr.npy"), np.load(f"{d}/col_idx.npy")
rows = [set(ci[rp[i]:rp[i + 1]].tolist()) for i in range(len(rp) - 1)]
kept = sum(len(r) for r in rows)
shared = union = 0
for i in range(0, len(rows) - 1, 2):
    shared += len(rows[i] & rows[i + 1])
    union += len(rows[i] | rows[i + 1])
print(f"query tiles {len(rows)}, kept {kept}; pairs {len(rows) // 2}: in both lists {shared}, "
      f"unions {union} = {union / kept:.3f} of the kept tiles")
