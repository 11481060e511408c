#!/usr/bin/env bash
# The d=64 kernel less one piece at a time (timing and power only; wrong results): SM clock, power
# and time per call under sustained runs of W2 on all SMs and on 66; nvidia-smi every 50 ms.
#   d0 as committed, d1 no K/V copies after the ring's first round (stale tiles), d2 FMUL for every
#   exp2, d3 no S products after an item's first tile, d4 no P V products.
set -u
root=$(pwd)
for f in .carry/exp/*.gz; do gunzip -f "$f"; chmod +x "${f%.gz}"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH="$root/.carry/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
fields=timestamp,clocks.sm,power.draw,clocks_event_reasons.active,temperature.gpu
echo "$fields" > $OUT/smi.csv
nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits -lms 50 >> $OUT/smi.csv &
smi=$!
mark() { echo "$1 $(date +%Y/%m/%d\ %H:%M:%S.%N)" >> $OUT/phases.txt; }
sleep 2
for r in ${ROUNDS:-1}; do
  for v in 0 1 2 3 4; do
    for g in 132 66; do
      it=$(( 1500 * g / 132 ))
      name=fused_d${v}_g${g}
      mark ${name}_start_$r
      PROTATTN_FUSED_WS_GRID=$g .carry/exp/protattn_d$v bench --engine fused --workload w2 --warmup 10 --iters $it --no-flush --json $OUT/${name}_$r.json > $OUT/${name}_$r.log 2>&1
      mark ${name}_end_$r; sleep 2
    done
  done
done
kill $smi
for f in $OUT/fused_*.json; do python3 -c "
import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(sys.argv[1].split('/')[-1], r['kernel'], r['ms'])" $f; done
tail -3 $OUT/fused_d0_g132_1.log
cd $OUT && tar czf /tmp/r.tgz . && find . -mindepth 1 -delete && mv /tmp/r.tgz .
