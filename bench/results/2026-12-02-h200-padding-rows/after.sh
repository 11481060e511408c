#!/usr/bin/env bash
# the padding-row mask change: ragged sizes against multiples of 128, ws and wgmma
cd "$(dirname "$0")/.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
P=$PWD/.carry/bin/protattn
D=.carry/data
cat .carry/COMMIT
$P layout w1 --export /tmp/w1 >/dev/null
$P layout $D/2hhb.pdb --export /tmp/hb >/dev/null
python3 - <<'PY'
import json, os, shutil
def variant(src, dst, n):
    shutil.rmtree(dst, ignore_errors=True); os.makedirs(dst)
    for f in ('row_ptr.npy','col_idx.npy','kind.npy'): shutil.copy(f'{src}/{f}', dst)
    m = json.load(open(f'{src}/meta.json')); m['n'] = n; json.dump(m, open(f'{dst}/meta.json','w'))
variant('/tmp/w1', '/tmp/w1_4000', 4000)
variant('/tmp/hb', '/tmp/hb_4608', 4608)
PY
show() { python3 -c "
import json;d=json.load(open('/tmp/x.json'))
print('$1', ' '.join('%s:%.2f'%(r['workload'], r['ms']*1e3) for r in d['results']))"; }
for rep in 1 2; do for k in wgmma ws; do
PROTATTN_FUSED_KERNEL=$k $P bench --engine fused --layout /tmp/w1 /tmp/w1_4000 /tmp/hb /tmp/hb_4608 --heads 1 --dim 64 --iters 200 --json /tmp/x.json >/dev/null 2>/tmp/err || cat /tmp/err; show $k
done; done
cases=(
 "--structure $D/2hhb.pdb --heads 1 --dim 64"
 "--structure $D/2hhb.pdb --heads 2 --dim 64"
 "--structure $D/2hhb.pdb --heads 2 --dim 128"
 "--structure $D/2hhb.pdb --heads 2 --dim 32"
 "--structure $D/1ubq.pdb --heads 16 --dim 64"
 "--structure $D/1tii.pdb --heads 2 --dim 64 --mask atoms"
 "--structure $D/2hhb.pdb --heads 8 --dim 64"
 "--structure $D/2hhb.pdb --heads 8 --dim 64 --mask atoms"
)
for c in "${cases[@]}"; do for k in wgmma ws; do
  PROTATTN_FUSED_KERNEL=$k $P bench --engine fused --iters 200 --json /tmp/x.json $c >/dev/null 2>/tmp/err || cat /tmp/err; show "$k $c"
done; done
$P bench --engine fused --iters 100 --workload w1 w1alt w1b w2 1m --json /tmp/x.json >/dev/null 2>/tmp/err || cat /tmp/err; show default
