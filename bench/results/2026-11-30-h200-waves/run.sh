#!/bin/bash
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
cp .carry/data/*.pdb tests/data/; export PROTATTN_TEST_DATA=$root/tests/data
B=$root/.carry/bin/protattn
timeout 200 .carry/bin/protattn_gpu_tests --gtest_filter="FusedSplit*:EngineDtypeDim/EngineTest.*/fused*:ModelGpu.Matches*" > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/gpu_tests.log | head
for v in cut whole; do env $([ $v = whole ] && echo PROTATTN_FUSED_MAX_SPLITS=1) .carry/bin/protattn_gpu_tests --gtest_filter="ModelGpu.ForwardTimes" 2>&1 | grep "\[ model \]" | sed "s/^/$v /"; done
run() { # name heads args...
  local name=$1 h=$2; shift 2
  for v in cut whole; do
    env $([ $v = whole ] && echo PROTATTN_FUSED_MAX_SPLITS=1) $B bench --engine fused --mask atoms --heads $h --dim 64 "$@" --json $OUT/b.json > /dev/null 2>&1
    python3 -c "import json;r=json.load(open('$OUT/b.json'))['results'][0];print('%-8s h%d %-5s %8.1f us  items %4d split %3d  plan warm %.3f ms'%('$name',$h,'$v',r['ms']*1e3,r['items'],r['split_tiles'],r['plan_warm_ms']))"
  done
}
for r in 1 2; do
run 2hhb 4 --structure tests/data/2hhb.pdb
run 2hhb 8 --structure tests/data/2hhb.pdb
run 1tii 4 --structure tests/data/1tii.pdb
run g10000 8 --layout .carry/extra/lg10000
run g20000 4 --layout .carry/extra/lg20000
run g20000 8 --layout .carry/extra/lg20000
done
