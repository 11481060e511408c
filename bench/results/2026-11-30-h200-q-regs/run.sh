#!/bin/bash
# A/B/C: this build under SETS (';' between entries of VAR=value words; the word ALT runs the
# build of .carry/ALT_COMMIT), alternating, plus GPU tests.
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
[ -f .carry/alt.tar.gz ] && tar -C .carry -xzf .carry/alt.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
mkdir -p tests/data; cp .carry/data/*.pdb tests/data/; export PROTATTN_TEST_DATA=$root/tests/data
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/machine.txt
echo "build $(cat .carry/COMMIT), alt $(cat .carry/ALT_COMMIT 2>/dev/null)"
if [ "${TESTS:-1}" = 1 ]; then
  timeout ${TEST_TIMEOUT:-300} .carry/bin/protattn_gpu_tests --gtest_filter="${GTEST_FILTER:-*fused*:Fused*}" > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
  grep -E "^\[  (PASSED|FAILED) |FAILED  \]|tests ran" $OUT/gpu_tests.log | head -20
  grep -B2 -A6 "Failure" $OUT/gpu_tests.log | head -40
fi
IFS=';' read -ra sets <<< "${SETS:-PROTATTN_FUSED_LAZY_MAX=1;PROTATTN_FUSED_LAZY_MAX=0}"
for r in 1 2; do
  i=0
  for set in "${sets[@]}"; do
    i=$((i+1)); B=$root/.carry/bin/protattn; envs=$set
    [ "$set" = ALT ] && { B=$root/.carry/bin/protattn_alt; envs=""; }
    env $envs $B bench --engine fused --workload ${WORKLOADS:-w1,w1b,w2,w4,1m} --json $OUT/b_${i}_$r.json > $OUT/b_${i}_$r.log 2>&1 || tail -3 $OUT/b_${i}_$r.log
    for h in 1 2; do env $envs $B bench --engine fused --mask atoms --heads $h --structure tests/data/2hhb.pdb --json $OUT/q${h}_${i}_$r.json > /dev/null 2>&1; done
    env $envs $B bench --engine fused --mask atoms --heads 4 --structure tests/data/2hhb.pdb --batch 16 --json $OUT/p_${i}_$r.json > $OUT/p_${i}_$r.log 2>&1 || tail -3 $OUT/p_${i}_$r.log
  done
done
python3 - $OUT "${sets[@]}" <<'PY'
import json,sys
out,sets=sys.argv[1],sys.argv[2:]
rows={}
for i,s in enumerate(sets,1):
    for r in (1,2):
        for pre in ('b','p','q1','q2'):
            f=f"{out}/{pre}_{i}_{r}.json"
            try: res=json.load(open(f))['results']
            except Exception as e: print('missing',f,e); continue
            for x in res:
                k=(x['workload'] or x.get('structure',''))+('' if pre in ('b','p') else ' h'+pre[1])
                rows.setdefault(k,{}).setdefault(i,[]).append(x['ms']*1e3)
print('settings: '+'; '.join(f'[{i}] {s}' for i,s in enumerate(sets,1)))
print(f"{'workload':12} "+' '.join(f"{'['+str(i)+'] us (2 runs)':>20} {'/[1]':>6}" for i in range(1,len(sets)+1)))
for k,v in rows.items():
    line=f"{k[-12:]:12} "
    for i in range(1,len(sets)+1):
        x=v.get(i,[])
        line+=f"{' '.join('%9.1f'%y for y in x):>20} {min(x)/min(v[1]):6.3f} " if x and v.get(1) else f"{'-':>20} {'-':>6} "
    print(line)
PY
