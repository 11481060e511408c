#!/usr/bin/env bash
# Session 9: how the 1,000,000-atom globule's layout (Morton, 8 A, the bench's 1m workload) scales
# with threads on the GPU machine's host, and where its time goes at 16 threads (perf).
set -uo pipefail
tar -C .carry -xzf .carry/lib.tar.gz; tar -C .carry -xzf .carry/perf.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
p=.carry/bin/protattn
nproc; grep -m1 'model name' /proc/cpuinfo; lscpu | grep -E "Socket|NUMA|Thread|Core" | head -6
for t in 1 2 4 8 16; do
  for i in 1 2 3; do
    $p layout globule:1000000 --order morton --no-count --layout-threads $t --json 2>&1 | python3 -c "
import sys,json
t=sys.stdin.read(); i=t.index('{'); j=t.rindex('}'); d=json.loads(t[i:j+1]); s=d.get('stats',d); print('threads $t', {k:round(s[k],2) for k in ('order_ms','build_ms')})"
  done
done | tee $OUT/scaling.txt
PERF="env LD_LIBRARY_PATH=$PWD/.carry/perf:$LD_LIBRARY_PATH $PWD/.carry/perf/perf.bin"
$PERF record -F 4999 -g -o /tmp/p.data -- $p layout globule:1000000 --order morton --no-count --layout-threads 16 > /dev/null 2>&1
$PERF report -i /tmp/p.data --no-children --sort comm,symbol --stdio -g none --percent-limit 0.4 2>/dev/null | grep -v "^#" | head -50 > $OUT/perf_self.txt
$PERF report -i /tmp/p.data --children --sort symbol --stdio -g none --percent-limit 1 2>/dev/null | grep -v "^#" | head -60 > $OUT/perf_children.txt
head -40 $OUT/perf_self.txt
