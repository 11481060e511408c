#!/usr/bin/env bash
# Session 9: the 1M-atom globule's layout on the H200 host's 16 cores with parallel_chunks on the
# worker pool (this build) and with a thread started per part (the build before, ALT), alternating.
set -uo pipefail
tar -C .carry -xzf .carry/lib.tar.gz; tar -C .carry -xzf .carry/alt.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
echo "HEAD $(cat .carry/COMMIT), ALT $(cat .carry/ALT_COMMIT)"
for round in 1 2; do
  for b in protattn protattn_alt; do
    for i in 1 2; do
      .carry/bin/$b layout globule:1000000 --order morton --no-count --layout-threads 16 --json 2>&1 | python3 -c "
import sys,json
t=sys.stdin.read(); i=t.index('{'); j=t.rindex('}'); d=json.loads(t[i:j+1]); s=d.get('stats',d); print('$b', {k:round(s[k],2) for k in ('order_ms','build_ms')})"
    done
    .carry/bin/$b bench --engine fused --workload w2 1m --iters 5 --json $OUT/bench_${b}_r$round.json > /dev/null 2>&1
    python3 -c "
import json; d=json.load(open('$OUT/bench_${b}_r$round.json'))
for r in d['results']: print('$b', r['workload'], 'order+tiles cold', round(r['order_tile_ms'],2), 'warm', round(r['order_tile_warm_ms'],2), 'plan', round(r['plan_ms'],2), 'plan warm', round(r['plan_warm_ms'],2), 'attention ms', round(r['ms'],3))"
  done
done 2>&1 | tee $OUT/layout_ab.txt
