#!/bin/bash
# A/B of the counter-driven combine, GPU tests, then timelines with the trace builds
PROTEIN=1 BENCH_TIMEOUT=60 TESTS=1 TEST_TIMEOUT=260 GTEST_FILTER="${GTEST_FILTER:-EngineDtypeDim/*fused*:Fused*}" \
  SETS="${SETS:-A=1;BIN=protattn_head;PROTATTN_FUSED_KERNEL=ws;PROTATTN_FUSED_PDL=0}" WORKLOADS=w1,w1alt bash .carry/abp.sh
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
for T in protattn_trace; do for k in wgmma ws; do
  PROTATTN_FUSED_KERNEL=$k PROTATTN_FUSED_TRACE_FILE=$OUT/tr_${T#protattn_}_$k.bin timeout 60 .carry/bin/$T bench --engine fused --workload w1 --warmup 3 --iters 5 > $OUT/tr.log 2>&1 || tail -3 $OUT/tr.log
done; done
python3 .carry/trsum.py $OUT/tr_*.bin
