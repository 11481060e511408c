#!/usr/bin/env bash
# exploratory: ws vs wgmma on the batches below one query tile x head per SM
cd "$(dirname "$0")/.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
P=.carry/bin/protattn
D=.carry/data
run() {  # kernel label args...
  k=$1; shift
  PROTATTN_FUSED_KERNEL=$k $P bench --engine fused --iters 200 --json /tmp/x.json "$@" >/dev/null 2>/tmp/err.txt || { echo "FAIL $k $*"; tail -2 /tmp/err.txt; return; }
  python3 -c "
import json,sys;d=json.load(open('/tmp/x.json'))
print('$k', ' '.join('%s:%.2f'%(r.get('workload') or r.get('name') or '?', r['ms']*1e3) for r in d['results']), '| $*')"
}
cases=(
 "--workload w1 w1alt"
 "--structure $D/2hhb.pdb --heads 1 --dim 64"
 "--structure $D/2hhb.pdb --heads 2 --dim 64"
 "--structure $D/2hhb.pdb --heads 3 --dim 64"
 "--structure $D/2hhb.pdb --heads 2 --dim 64 --mask atoms"
 "--structure $D/2hhb.pdb --heads 2 --dim 128"
 "--structure $D/2hhb.pdb --heads 2 --dim 32"
 "--structure $D/2hhb.pdb --heads 2 --dim 64 --dtype bf16"
 "--structure $D/1ubq.pdb --heads 4 --dim 64"
 "--structure $D/1ubq.pdb --heads 16 --dim 64"
 "--structure $D/1tii.pdb --heads 2 --dim 64 --mask atoms"
 "--structure $D/1tii.pdb --heads 2 --dim 128 --mask atoms"
 "--structure $D/2hhb.pdb --heads 1 --dim 64 --batch 3"
)
for rep in 1 2; do
for c in "${cases[@]}"; do
  run wgmma $c
  run ws $c
done; done
