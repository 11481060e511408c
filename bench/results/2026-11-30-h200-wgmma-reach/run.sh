#!/bin/bash
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
cp .carry/data/*.pdb tests/data/; export PROTATTN_TEST_DATA=$root/tests/data
B=$root/.carry/bin/protattn
timeout 150 .carry/bin/protattn_gpu_tests --gtest_filter="FusedReach*:FusedSplit*:EngineDtypeDim/EngineTest.*/fused_wgmma*:EngineDtypeDim/EngineTest.*/fused_f*:ModelGpu.Matches*:FusedGraph*" > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "^\[  (PASSED|FAILED) |FAILED  \]" $OUT/gpu_tests.log | head
run() { local name=$1 h=$2 m=$3; shift 3
  for v in reach none; do
    env $([ $v = none ] && echo PROTATTN_FUSED_REACH=0) $B bench --engine fused --mask $m --heads $h --dim 64 "$@" --json $OUT/b.json > /dev/null 2>&1
    python3 -c "import json;r=json.load(open('$OUT/b.json'))['results'][0];print('%-8s h%d %-5s %-6s %8.1f us %s'%('$name',$h,'$m','$v',r['ms']*1e3,r['kernel']))"
  done; }
for r in 1 2; do
run 2hhb 1 atoms --structure tests/data/2hhb.pdb
run 2hhb 2 atoms --structure tests/data/2hhb.pdb
run g4096 4 atoms --layout .carry/extra/lg4096
run 1tii 2 atoms --structure tests/data/1tii.pdb
done
for v in reach none; do env $([ $v = none ] && echo PROTATTN_FUSED_REACH=0) $B bench --engine fused --workload w1 2>&1 | grep "^w1 " | sed "s/^/$v /"; done
for v in reach none; do env $([ $v = none ] && echo PROTATTN_FUSED_REACH=0) .carry/bin/protattn_gpu_tests --gtest_filter="ModelGpu.ForwardTimes" 2>&1 | grep "1 x 4096\|1 x 20000" | sed "s/^/$v /"; done
