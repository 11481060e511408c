#!/usr/bin/env bash
# exploratory: W1 pattern vs 2HHB pattern, n a multiple of 128 or not
cd "$(dirname "$0")/.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
P=$PWD/.carry/bin/protattn
D=.carry/data
$P layout w1 --export /tmp/w1 >/dev/null
$P layout $D/2hhb.pdb --export /tmp/hb >/dev/null
python3 - <<'PY'
import json, os, shutil, numpy as np
def variant(src, dst, n=None, mutate=None):
    shutil.rmtree(dst, ignore_errors=True); os.makedirs(dst)
    for f in ('row_ptr.npy','col_idx.npy','kind.npy'): shutil.copy(f'{src}/{f}', dst)
    m = json.load(open(f'{src}/meta.json'))
    if n: m['n'] = n
    m['mask'] = 'tiles'
    if mutate:
        rp, ci = mutate(np.load(f'{src}/row_ptr.npy'), np.load(f'{src}/col_idx.npy'))
        np.save(f'{dst}/row_ptr.npy', rp.astype(np.int32)); np.save(f'{dst}/col_idx.npy', ci.astype(np.int32))
        np.save(f'{dst}/kind.npy', np.zeros(len(ci), np.uint8)); m['nnz'] = int(len(ci))
    json.dump(m, open(f'{dst}/meta.json','w'))
variant('/tmp/w1', '/tmp/w1_4000', 4000)
variant('/tmp/hb', '/tmp/hb_4608', 4608)
variant('/tmp/hb', '/tmp/hb_same', None)
# hb pattern transposed (columns become rows)
def transpose(rp, ci):
    n = len(rp) - 1; rows = np.repeat(np.arange(n), np.diff(rp)); order = np.lexsort((rows, ci))
    return np.concatenate([[0], np.cumsum(np.bincount(ci, minlength=n))]), rows[order]
variant('/tmp/hb', '/tmp/hb_T', 4608, transpose)
PY
show() { python3 -c "
import json;d=json.load(open('/tmp/x.json'))
for r in d['results']: print('  %-8s %.2f us items %s split %s kernel %s'%(r['workload'], r['ms']*1e3, r.get('items'), r.get('split_tiles'), r.get('kernel')))"; }
for rep in 1 2; do
$P bench --engine fused --layout /tmp/w1 /tmp/w1_4000 /tmp/hb_same /tmp/hb_4608 /tmp/hb_T --heads 1 --dim 64 --iters 200 --json /tmp/x.json >/dev/null 2>/tmp/err || cat /tmp/err; show
done
ncu=/usr/local/cuda/bin/ncu
for L in /tmp/w1 /tmp/hb_same /tmp/hb_4608; do
  echo "== ncu $L"
  $ncu --clock-control none -k regex:'fused_' --launch-skip 10 --launch-count 6 --metrics gpu__time_duration.sum,sm__cycles_active.max \
    --csv --page raw --print-units base $P bench --engine fused --layout $L --heads 1 --dim 64 --iters 10 --warmup 5 2>/dev/null > /tmp/ncu.csv
  python3 - <<'PY'
import csv
lines=open('/tmp/ncu.csv').read().splitlines()
i=[k for k,l in enumerate(lines) if 'Kernel Name' in l]
if not i: print(lines[:5]); raise SystemExit
rows = list(csv.DictReader(lines[i[0]:]))
for r in rows[1:]:
    print('  ', r['Kernel Name'][:40], r['gpu__time_duration.sum'], 'ns', r.get('sm__cycles_active.max'))
PY
done
