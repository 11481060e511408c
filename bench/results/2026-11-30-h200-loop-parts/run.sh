#!/bin/bash
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz; [ -f .carry/perf.tar.gz ] && tar -C .carry -xzf .carry/perf.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
cp .carry/data/*.pdb tests/data/
perf() { LD_LIBRARY_PATH=$root/.carry/perf:$LD_LIBRARY_PATH $root/.carry/perf/perf.bin "$@"; }
B=$root/.carry/bin/protattn; W=/tmp/w; mkdir -p $W/m/atom_encoder
cp models/atom_encoder/config.json $W/m/atom_encoder/
$B init-model $W/m/atom_encoder/model.safetensors >/dev/null
ls /usr/local/cuda/bin | grep -i "nsys\|ncu"; which nsys ncu; ls /opt/nvidia 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
lscpu | grep -i "model name"
S=tests/data/2hhb.pdb
echo "== embed 1 copy x100"
$B embed $S --model $W/m/atom_encoder/model.safetensors --engine fused --copies 1 --repeat 100 --out $W/x.npy --json $OUT/embed1.json 2>&1 | tail -3
echo "== serve + loop"
$B serve --models $W/m --engine fused --http-port 8100 --grpc-port 8101 --allow-shared-memory --log-level debug ${SERVE_ARGS:-} > $OUT/serve.log 2>&1 &
spid=$!
sleep 6
$B loop --server http://127.0.0.1:8100 --structure $S --iterations 1000 --shared-memory 2>&1 | tail -2
$B loop --server http://127.0.0.1:8100 --structure $S --iterations 1000 2>&1 | tail -2
if [ -x .carry/perf/perf.bin ]; then
  perf record -F 2000 -g -p $spid -o $OUT/perf.srv.data -- sleep 2 >/dev/null 2>&1 &
  ppid=$!
  perf record -F 2000 -g -o $OUT/perf.cli.data -- $B loop --server http://127.0.0.1:8100 --structure $S --iterations 2000 --shared-memory 2>&1 | tail -2
  wait $ppid
  for t in protattn-http protattn-infer; do perf report -i $OUT/perf.srv.data --comm $t --no-children --sort dso,sym -g none 2>/dev/null | grep -v '^$' | head -60 > $OUT/perf_srv_$t.txt; done
  perf report -i $OUT/perf.srv.data --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head > $OUT/perf_srv_threads.txt
  perf report -i $OUT/perf.cli.data --no-children --sort dso,sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 > $OUT/perf_cli.txt
  rm -f $OUT/perf.*.data
fi
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
cat $OUT/perf_srv_threads.txt 2>/dev/null
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
if [ -n "$NSYS" ]; then
  echo "== nsys: $NSYS"
  $NSYS profile -t cuda -o $W/emb --force-overwrite true $B embed $S --model $W/m/atom_encoder/model.safetensors --engine fused --copies 1 --repeat 30 --out $W/x.npy > /dev/null 2>&1
  $NSYS stats --report cuda_gpu_kern_sum --report cuda_api_sum --format csv --output $OUT/nsys $W/emb.nsys-rep > /dev/null 2>&1
  $NSYS stats --report cuda_gpu_trace --format csv --output $OUT/nsys $W/emb.nsys-rep > /dev/null 2>&1
  ls $OUT
fi
