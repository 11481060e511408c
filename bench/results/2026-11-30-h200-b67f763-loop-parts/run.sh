#!/bin/bash
# Session 9, run 5: where a loop round trip goes now (2HHB, demo model, serve --log-level debug's
# batch lines), as bench/results/2026-11-30-h200-loop-parts did at 3299198; and the cold and warm
# layout times of the W2 and 1M-atom globules (protattn bench, order_tile_ms / order_tile_warm_ms).
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
mkdir -p tests/data; cp .carry/data/*.pdb tests/data/
B=$root/.carry/bin/protattn; W=/tmp/w; mkdir -p $W/m/atom_encoder
cp models/atom_encoder/config.json $W/m/atom_encoder/
$B init-model $W/m/atom_encoder/model.safetensors >/dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
S=tests/data/2hhb.pdb
$B serve --models $W/m --engine fused --http-port 8100 --grpc-port 8101 --allow-shared-memory --log-level debug > $OUT/serve.log 2>&1 &
spid=$!
sleep 6
$B loop --server http://127.0.0.1:8100 --structure $S --iterations 1000 --shared-memory 2>&1 | tail -2
$B loop --server http://127.0.0.1:8100 --structure $S --iterations 1000 2>&1 | tail -2
kill $spid; wait $spid
python3 - $OUT/serve.log <<'PY'
import json,sys,statistics as st
b=[];r=[]
for line in open(sys.argv[1]):
    try: j=json.loads(line)
    except Exception: continue
    (b if j.get("event")=="batch" else r if j.get("event")=="request" else []).append(j)
def med(xs,k):
    v=[x[k] for x in xs if k in x]; return f"{k} p50 {st.median(v):.3f} p90 {sorted(v)[int(.9*len(v))]:.3f}" if v else k+" -"
print("batches",len(b)); [print(" ",med(b,k)) for k in ("compute_ms","layouts_ms","plan_ms","launch_ms","finish_ms")]
print("requests",len(r)); [print(" ",med(r,k)) for k in ("ms","queue_ms","compute_ms")]
PY
gzip $OUT/serve.log
$B bench --engine fused --workload w2 1m --iters 20 --json $OUT/bench.json 2>&1 | tail -4
python3 -c "
import json; d=json.load(open('$OUT/bench.json'))
for r in d['results']: print(r['workload'], 'order+tiles cold', round(r['order_tile_ms'],2), 'warm', round(r['order_tile_warm_ms'],2), 'plan', round(r['plan_ms'],2), 'plan warm', round(r['plan_warm_ms'],2), 'attention ms', round(r['ms'],3))"
