#!/usr/bin/env bash
# Experiment: ws kernel variants (d=64 build), alternating, same call.
set -u
root=$(pwd)
for f in .carry/exp/*.gz; do gunzip -f "$f"; chmod +x "${f%.gz}"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH="$root/.carry/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv > $OUT/gpu.txt
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv -lms 200 > $OUT/clocks.csv &
smi=$!
VARS=${VARS:-base pvfirst r240 pvfirst_r240}
for r in 1 2 3; do
  for v in $VARS; do
    .carry/exp/$v bench --engine fused --workload w2 w1b w4 1m --json $OUT/${v}_$r.json > $OUT/${v}_$r.log 2>&1 || echo "$v failed"
    python3 - "$OUT/${v}_$r.json" "$v" "$r" <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
out=[f"{x['workload']}={x['ms']*1000:.1f}us" for x in d['results']]
print(sys.argv[2], sys.argv[3], " ".join(out))
PY
  done
done
kill $smi; cd $OUT && tar czf /tmp/r.tgz . && find . -mindepth 1 -delete && mv /tmp/r.tgz .
