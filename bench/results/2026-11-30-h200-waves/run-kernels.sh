#!/bin/bash
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
cp .carry/data/*.pdb tests/data/
B=$root/.carry/bin/protattn
run() { # name heads mask args...
  local name=$1 h=$2 m=$3; shift 3
  for k in ws wgmma; do
    PROTATTN_FUSED_KERNEL=$k $B bench --engine fused --mask $m --heads $h --dim 64 "$@" --json $OUT/b.json > /dev/null 2>&1
    python3 -c "import json;r=json.load(open('$OUT/b.json'))['results'][0];print('%-8s h%d %-5s %-6s %8.1f us  items %4d split %3d'%('$name',$h,'$m','$k',r['ms']*1e3,r['items'],r['split_tiles']))"
  done
}
for r in 1 2; do
run 2hhb 1 atoms --structure tests/data/2hhb.pdb
run 2hhb 2 atoms --structure tests/data/2hhb.pdb
run 2hhb 4 atoms --structure tests/data/2hhb.pdb
run g4096 4 atoms --layout .carry/extra/lg4096
run 2hhb 2 tiles --structure tests/data/2hhb.pdb
run g10000 8 atoms --layout .carry/extra/lg10000
done
for k in ws wgmma; do PROTATTN_FUSED_KERNEL=$k $B bench --engine fused --workload w1 2>&1 | grep "^w1 " | sed "s/^/$k /"; done
