#!/usr/bin/env bash
# key groups out of reach: GPU tests, then mask atoms with and without (PROTATTN_FUSED_KEY_GROUPS=0)
cd "$(dirname "$0")/.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p tests/data && cp .carry/data/*.pdb tests/data/ && gunzip -c .carry/data/6zu5.cif.gz > tests/data/6zu5.cif
export PROTATTN_TEST_DATA=$PWD/tests/data
P=$PWD/.carry/bin/protattn
D=tests/data
cat .carry/COMMIT
[ "${TESTS:-0}" = 1 ] && { timeout 300 .carry/bin/protattn_gpu_tests > $OUT/gpu_tests.log 2>&1; echo "gpu tests rc=$?"; }
grep -E "^\[  (PASSED|FAILED|SKIPPED) " $OUT/gpu_tests.log | head -20
show() { python3 -c "
import json;d=json.load(open('$2'))
print('%-6s'%'$1', ' '.join('%s:%.1f(kgo %s)'%(r['workload'], r['ms']*1e3, r.get('key_groups_out','-')) for r in d['results']))"; }
for rep in 1 2; do
 for kg in 1 0; do
  PROTATTN_FUSED_KEY_GROUPS=$kg $P bench --engine fused --mask atoms --workload w2 w4 --structure $D/2hhb.pdb $D/6zu5.cif --iters 100 --json $OUT/atoms_kg$kg.json >/dev/null 2>/tmp/err || cat /tmp/err; show kg=$kg $OUT/atoms_kg$kg.json
  PROTATTN_FUSED_KEY_GROUPS=$kg $P bench --engine fused --mask atoms --structure $D/2hhb.pdb --batch 16 --heads 4 --iters 100 --json $OUT/atoms16_kg$kg.json >/dev/null 2>/tmp/err || cat /tmp/err; show kg=$kg $OUT/atoms16_kg$kg.json
 done
done
$P bench --engine fused --workload w2 --structure $D/2hhb.pdb --iters 100 --json /tmp/x.json >/dev/null 2>&1; show tiles /tmp/x.json
$P bench --engine fused --mask atoms --structure $D/2hhb.pdb --heads 8 --dim 128 --iters 100 --json /tmp/x.json >/dev/null 2>&1; show d128 /tmp/x.json
PROTATTN_FUSED_KEY_GROUPS=0 $P bench --engine fused --mask atoms --structure $D/2hhb.pdb --heads 8 --dim 128 --iters 100 --json /tmp/x.json >/dev/null 2>&1; show d128kg0 /tmp/x.json
