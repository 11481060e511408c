# Summary of the ws kernel's clock64 stamps (trace-and-variants.diff, PROTATTN_WS_TRACE_FILE):
# [block 8][role 3: producer thread 0, lane 0 of warps 4 and 8][tile 256][stamp 8], uint64.
# Consumer stamps per tile: 0 top, 1 stage full, 2 turn taken, 3 products issued, 4 S done,
# 5 softmax done, 6 P V done, 7 P packed. Producer: 0 before, 1 after the wait for a free stage.
# Per file: medians over tiles 2 .. n-2 of each block, then the mean over the 8 blocks.
import gzip, sys
import numpy as np

B, R, T, S = 8, 3, 256, 8
names = ["full", "turn", "issue", "S wait", "softmax", "PV wait", "pack"]
print(f"{'trace':28} {'wg':>2} {'period':>7} " + " ".join(f"{n:>8}" for n in names))
for f in sys.argv[1:]:
    a = np.frombuffer(gzip.open(f).read(), dtype=np.uint64).reshape(B, R, T, S).astype(np.int64)
    for r in (1, 2):
        per, parts = [], []
        for b in range(B):
            n = int(a[b, 0, T - 1, 3])
            it = np.arange(2, min(n, T - 1) - 1)
            if len(it) < 3:
                continue
            c = a[b, r, :n, :]
            per.append(np.median(c[it + 1, 0] - c[it, 0]))
            parts.append([np.median(c[it, k + 1] - c[it, k]) for k in range(7)])
        p = np.mean(parts, axis=0)
        print(f"{f.split('/')[-1][:28]:28} {r - 1:>2} {np.mean(per):7.0f} " + " ".join(f"{x:8.0f}" for x in p))
