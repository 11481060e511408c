#!/usr/bin/env bash
# mask tiles: keys past a structure's end by one comparison a score, against 4b35e61, same call
cd "$(dirname "$0")/.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
tar -C .carry -xzf .carry/alt.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p tests/data && cp .carry/data/*.pdb tests/data/
export PROTATTN_TEST_DATA=$PWD/tests/data
echo "new $(cat .carry/COMMIT), alt $(cat .carry/ALT_COMMIT)"
timeout 200 .carry/bin/protattn_gpu_tests --gtest_filter='*fused*:Fused*' > $OUT/gpu_tests_fused.log 2>&1; echo "fused GPU tests rc=$?"
grep -E "^\[  (PASSED|FAILED) " $OUT/gpu_tests_fused.log | head -5
D=tests/data
.carry/bin/protattn layout w1 --export /tmp/w1 >/dev/null
python3 - <<'PY'
import json, os, shutil
shutil.rmtree('/tmp/w1_4000', ignore_errors=True); os.makedirs('/tmp/w1_4000')
for f in ('row_ptr.npy','col_idx.npy','kind.npy'): shutil.copy(f'/tmp/w1/{f}', '/tmp/w1_4000')
m = json.load(open('/tmp/w1/meta.json')); m['n'] = 4000; json.dump(m, open('/tmp/w1_4000/meta.json','w'))
PY
cases=(
 "--structure $D/2hhb.pdb $D/1ubq.pdb $D/1ejg.pdb $D/1tii.pdb --heads 1"
 "--structure $D/2hhb.pdb $D/1ubq.pdb $D/1tii.pdb --heads 8"
 "--structure $D/2hhb.pdb $D/1tii.pdb --heads 2 --dim 128"
 "--structure $D/2hhb.pdb --heads 2 --dim 32"
 "--layout /tmp/w1 /tmp/w1_4000 --heads 1"
 "--workload w4"
)
for rep in 1 2; do
 for c in "${cases[@]}"; do
  for b in protattn protattn_alt; do
   .carry/bin/$b bench --engine fused --iters 200 $c --json /tmp/x.json >/dev/null 2>/tmp/err || { cat /tmp/err; continue; }
   python3 -c "
import json;d=json.load(open('/tmp/x.json'))
print('%-12s'%'$b', ' '.join('%s:%.2f(%s)'%(r['workload'], r['ms']*1e3, r.get('kernel')) for r in d['results']), '| $c')"
  done
 done
done | tee $OUT/ab.txt
