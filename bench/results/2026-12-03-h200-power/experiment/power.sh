#!/usr/bin/env bash
# Power and SM clock under sustained runs: the fused engine, FlexAttention and dense cuDNN on W2
# and the 1M-atom globule, each ~6 s, idle gaps between; nvidia-smi sampled every 50 ms.
set -u
root=$(pwd)
for f in .carry/exp/*.gz; do gunzip -f "$f"; chmod +x "${f%.gz}"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH="$root/.carry/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
P=.carry/exp/protattn
L=/tmp/layouts
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,power.default_limit,power.max_limit,enforced.power.limit --format=csv > $OUT/gpu.txt 2>&1
nvidia-smi -q -d POWER,CLOCK,PERFORMANCE,TEMPERATURE > $OUT/smi_q_before.txt 2>&1
$P bench --engine fused --workload w2 1m --export-layouts $L --json $OUT/bench_std.json > $OUT/bench_std.log 2>&1
fields=timestamp,clocks.sm,power.draw.instant,power.draw.average,clocks_event_reasons.active,temperature.gpu
nvidia-smi --query-gpu=$fields --format=csv,noheader -c 1 > /dev/null 2>&1 || fields=timestamp,clocks.sm,power.draw,clocks_event_reasons.active,temperature.gpu
echo "$fields" > $OUT/smi.csv
nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits -lms 50 >> $OUT/smi.csv &
smi=$!
mark() { echo "$1 $(date +%Y/%m/%d\ %H:%M:%S.%N)" >> $OUT/phases.txt; }
sleep 2
for r in 1 2; do
mark fused_w2_start_$r
$P bench --engine fused --workload w2 --warmup 20 --iters 1700 --no-flush --json $OUT/fused_w2_$r.json > $OUT/fused_w2_$r.log 2>&1
mark fused_w2_end_$r; sleep 3
mark fused_1m_start_$r
$P bench --engine fused --workload 1m --warmup 3 --iters 140 --no-flush --json $OUT/fused_1m_$r.json > $OUT/fused_1m_$r.log 2>&1
mark fused_1m_end_$r; sleep 3
python3 - $L $OUT $r <<'PY' 2>&1 | grep -v Warning
import sys, time, json, math, os
sys.path.insert(0, "bench")
import torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention
from peers import kept_tiles, flex_block_mask
L, OUT, r = sys.argv[1], sys.argv[2], sys.argv[3]
def mark(s):
    open(f"{OUT}/phases.txt", "a").write(f"{s} {time.strftime('%Y/%m/%d %H:%M:%S', time.gmtime())}.{int((time.time()%1)*1e9):09d}\n")
res = {}
for name in ("w2", "1m"):
    folder = os.path.join(L, name)
    shape = json.load(open(os.path.join(folder, "bench.json")))
    heads, dim = int(shape["heads"]), int(shape["dim"])
    n, tile, kept = kept_tiles(folder)
    n_pad = math.ceil(n / tile) * tile
    kept = kept.cuda()
    q, k, v = (torch.randn(1, heads, n_pad, dim, dtype=torch.float16, device="cuda") for _ in range(3))
    torch._dynamo.reset()
    flex = torch.compile(flex_attention, dynamic=False)
    mask = flex_block_mask(kept, 1, heads, n_pad, tile)
    for _ in range(3): flex(q, k, v, block_mask=mask)
    torch.cuda.synchronize()
    def sustained(tag, fn, secs=6.0):
        # calibrate
        t0 = time.time(); fn(); torch.cuda.synchronize(); one = time.time() - t0
        reps = max(3, int(secs / max(one, 1e-4)))
        time.sleep(2)
        mark(f"{tag}_start_{r}")
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps): fn()
        e.record(); torch.cuda.synchronize()
        mark(f"{tag}_end_{r}")
        ms = s.elapsed_time(e) / reps
        res[tag] = {"reps": reps, "ms_per_call": ms, "nnz": int(kept.sum()), "heads": heads}
        print(tag, reps, f"{ms:.3f} ms/call", flush=True)
    sustained(f"flex_{name}", lambda: flex(q, k, v, block_mask=mask))
    if name == "w2":
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            sustained("cudnn_w2", lambda: F.scaled_dot_product_attention(q, k, v))
    del q, k, v, mask
    torch.cuda.empty_cache()
json.dump(res, open(f"{OUT}/peers_sustained_{r}.json", "w"), indent=1)
PY
sleep 2
done
kill $smi
nvidia-smi -q -d POWER,CLOCK,PERFORMANCE,TEMPERATURE > $OUT/smi_q_after.txt 2>&1
cd $OUT && tar czf /tmp/r.tgz . && find . -mindepth 1 -delete && mv /tmp/r.tgz .
