#!/usr/bin/env bash
# The fused engine's persistent blocks on fewer SMs (PROTATTN_FUSED_WS_GRID): SM clock, power and
# time per call under sustained runs of W2 and the 1M-atom globule; nvidia-smi every 50 ms.
set -u
root=$(pwd)
for f in .carry/exp/*.gz; do gunzip -f "$f"; chmod +x "${f%.gz}"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH="$root/.carry/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
P=.carry/exp/protattn
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv > $OUT/gpu.txt 2>&1
fields=timestamp,clocks.sm,power.draw,clocks_event_reasons.active,temperature.gpu
echo "$fields" > $OUT/smi.csv
nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits -lms 50 >> $OUT/smi.csv &
smi=$!
mark() { echo "$1 $(date +%Y/%m/%d\ %H:%M:%S.%N)" >> $OUT/phases.txt; }
sleep 2
for r in 1 2; do
  for g in 132 99 66 33; do
    it=$(( 1600 * g / 132 ))
    mark fused_w2_g${g}_start_$r
    PROTATTN_FUSED_WS_GRID=$g $P bench --engine fused --workload w2 --warmup 10 --iters $it --no-flush --json $OUT/fused_w2_g${g}_$r.json > $OUT/fused_w2_g${g}_$r.log 2>&1
    mark fused_w2_g${g}_end_$r; sleep 3
  done
  for g in 132 66; do
    it=$(( 130 * g / 132 ))
    mark fused_1m_g${g}_start_$r
    PROTATTN_FUSED_WS_GRID=$g $P bench --engine fused --workload 1m --warmup 3 --iters $it --no-flush --json $OUT/fused_1m_g${g}_$r.json > $OUT/fused_1m_g${g}_$r.log 2>&1
    mark fused_1m_g${g}_end_$r; sleep 3
  done
done
kill $smi
for f in $OUT/fused_*.json; do python3 -c "
import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(sys.argv[1].split('/')[-1], r['kernel'], r['ms'])" $f; done
cd $OUT && tar czf /tmp/r.tgz . && find . -mindepth 1 -delete && mv /tmp/r.tgz .
