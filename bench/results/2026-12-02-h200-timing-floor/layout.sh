#!/usr/bin/env bash
# W2's layout on 1 and 16 threads, interleaved, with the tile boxes at the atom passes' grain.
cd "$(dirname "$0")/../.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
for n in 100000 1000000; do for r in 1 2 3 4 5; do for t in 1 16 2; do
  .carry/bin/protattn layout globule:$n --order morton --no-count --json --layout-threads $t 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('layout', $n, 'threads', $t, 'order_ms %.2f build_ms %.2f' % (d['order_ms'], d['build_ms']))"
done; done; done 2>&1 | tee $OUT/layout_threads_898bc4f.txt
