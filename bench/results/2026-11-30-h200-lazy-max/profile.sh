#!/bin/bash
# Source-level warp-stall sampling of the ws kernel on W2 (d=64 and d=128), and its SASS.
root=$PWD
tar -C .carry -xzf .carry/lib.tar.gz
export LD_LIBRARY_PATH=$root/.carry/lib:/usr/local/cuda/lib64
B=$root/.carry/bin/protattn
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader > $OUT/machine.txt
for wl in w2 w2d128; do
  ncu --clock-control none -k regex:fused_ws_kernel --launch-skip 3 --launch-count 1 \
    --section SourceCounters --section WarpStateStats --section SpeedOfLight -o $OUT/$wl \
    $B bench --engine fused --workload $wl --iters 5 > $OUT/$wl.log 2>&1; echo "$wl ncu rc $?"
  ncu -i $OUT/$wl.ncu-rep --page source --csv --print-source sass > $OUT/${wl}_sass.csv 2> $OUT/${wl}_sass.err; echo "$wl export rc $?"
  ls -la $OUT/${wl}_sass.csv
done
cuobjdump -sass -fun '_ZN8protattn5fused15fused_ws_kernelI6__halfLi64EEEvNS0_6ParamsE' $B > $OUT/ws_f16_d64.sass 2>&1
cuobjdump -sass -fun '_ZN8protattn5fused15fused_ws_kernelI6__halfLi128EEEvNS0_6ParamsE' $B > $OUT/ws_f16_d128.sass 2>&1
wc -l $OUT/*.sass
cd $OUT && tar -czf prof.tar.gz *.csv *.sass *.log machine.txt && ls -la
