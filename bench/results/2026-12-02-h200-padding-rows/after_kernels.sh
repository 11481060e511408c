#!/usr/bin/env bash
# ws against wgmma below one query tile x head per SM, after the padding-row change
cd "$(dirname "$0")/.."
for f in .carry/bin/*.gz; do gunzip -f "$f"; done
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
P=$PWD/.carry/bin/protattn
D=.carry/data
$P layout w1 --export /tmp/w1 >/dev/null
show() { python3 -c "
import json;d=json.load(open('/tmp/x.json'))
print('%-5s'%'$1', ' '.join('%s:%.2f'%(r['workload'], r['ms']*1e3) for r in d['results']), '|', '${2:-}')"; }
cases=()
for dim in 128 64 32; do
 cases+=("--layout /tmp/w1 --heads 1 --dim $dim" "--structure $D/2hhb.pdb --heads 1 --dim $dim" "--structure $D/2hhb.pdb --heads 3 --dim $dim"
         "--structure $D/1ubq.pdb --heads 4 --dim $dim" "--structure $D/1ubq.pdb --heads 20 --dim $dim" "--structure $D/1tii.pdb --heads 2 --dim $dim --mask atoms"
         "--structure $D/1ejg.pdb --heads 8 --dim $dim --dtype bf16")
done
for c in "${cases[@]}"; do for k in wgmma ws; do
  PROTATTN_FUSED_KERNEL=$k $P bench --engine fused --iters 200 --json /tmp/x.json $c >/dev/null 2>/tmp/err || cat /tmp/err; show $k "$c"
done; done
