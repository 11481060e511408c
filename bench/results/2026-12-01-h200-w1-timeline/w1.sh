#!/bin/bash
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
for z in .carry/bin/*.gz; do gunzip -f "$z"; done; chmod +x .carry/bin/*
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
mkdir -p tests/data; cp .carry/data/*.pdb tests/data/
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/machine.txt
P=.carry/bin/protattn; T=.carry/bin/protattn_trace
b() { local tag=$1; shift; env "$@" | true; }
one() { local tag="$1"; shift; local envs="$1"; shift
  env $envs timeout 60 $P bench --engine fused "$@" --json $OUT/x.json > $OUT/x.log 2>&1 || tail -2 $OUT/x.log
  python3 -c "import json;r=json.load(open('$OUT/x.json'))['results'];print('%-34s'%'$tag', ' '.join('%s %.2f us (%s, items %s, split %s)'%(x['workload'] or x.get('structure',''), x['ms']*1e3, x.get('kernel'), x.get('items'), x.get('split_tiles')) for x in r))"
}
for r in 1 2; do
one "w1 default" "" --workload w1
one "w1 ws" "PROTATTN_FUSED_KERNEL=ws" --workload w1
one "w1 pdl0" "PROTATTN_FUSED_PDL=0" --workload w1
one "w1 noflush" "" --workload w1 --no-flush
one "w1 maxsplit4" "PROTATTN_FUSED_MAX_SPLITS=4" --workload w1
one "w1 maxsplit8" "PROTATTN_FUSED_MAX_SPLITS=8" --workload w1
one "w1 nosplit" "PROTATTN_FUSED_MAX_SPLITS=1" --workload w1
one "w1 ws maxsplit8" "PROTATTN_FUSED_KERNEL=ws PROTATTN_FUSED_MAX_SPLITS=8" --workload w1
one "w1 ws maxsplit16 pdl0" "PROTATTN_FUSED_KERNEL=ws PROTATTN_FUSED_PDL=0" --workload w1
one "1ubq 1 head tiles" "" --structure tests/data/1ubq.pdb --heads 1
one "1ubq 1 head tiles nosplit" "PROTATTN_FUSED_MAX_SPLITS=1" --structure tests/data/1ubq.pdb --heads 1
done
for k in wgmma ws; do
  PROTATTN_FUSED_KERNEL=$k PROTATTN_FUSED_TRACE_FILE=$OUT/tr_w1_$k.bin timeout 60 $T bench --engine fused --workload w1 --warmup 3 --iters 5 > $OUT/tr_$k.log 2>&1 || tail -3 $OUT/tr_$k.log
  grep "^w1 " $OUT/tr_$k.log
done
PROTATTN_FUSED_TRACE_FILE=$OUT/tr_w1_noflush.bin timeout 60 $T bench --engine fused --workload w1 --warmup 3 --iters 5 --no-flush > /dev/null 2>&1
PROTATTN_FUSED_TRACE_FILE=$OUT/tr_1ubq.bin timeout 60 $T bench --engine fused --structure tests/data/1ubq.pdb --heads 1 --warmup 3 --iters 5 > /dev/null 2>&1
python3 .carry/trsum.py $OUT/tr_*.bin
