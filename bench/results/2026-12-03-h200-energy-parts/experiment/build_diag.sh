set -e
cd /work/main
for n in 0 1 2 3 4; do
  sed -i "28s/.*/#define PROTATTN_DIAG $n/" src/cuda/fused/fused_ws_kernel.cuh
  ninja -C build-exp -j2 protattn_cli > /tmp/bd_$n.log 2>&1
  echo "diag $n: $(python3 /tmp/ru.py | tr '\n' ' ')"
  cp build-exp/tools/protattn .carry/exp/protattn_d$n
  gzip -f .carry/exp/protattn_d$n
done
sed -i "28s/.*/#define PROTATTN_DIAG 0/" src/cuda/fused/fused_ws_kernel.cuh
echo done
