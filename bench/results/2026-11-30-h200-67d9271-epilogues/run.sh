#!/usr/bin/env bash
# Session 9, run 2: every GPU test, the W1-sized model served (48/52/56 in flight, GPU busy share
# sampled), the loop; then offline forwards with the cuBLASLt epilogues against without
# (PROTATTN_MODEL_EPILOGUE=0), alternating, same binary.
set -uo pipefail
bash scripts/gpu-carry-run.sh TESTS_FIRST=1 ENCODER=only MODELS=encoder_w1 SIZES=4096 "CONCURRENCY=48 52 56" \
  LOOP_ITERS=1000 SERVE_ARGS=--allow-shared-memory RUN_LIMIT_S=380
export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64
p=.carry/bin/protattn
w=$(mktemp -d)
$p init-model $w/demo.safetensors > /dev/null
$p init-model $w/w1.safetensors --layers 1 --heads 1 --dim 64 --channels 64 > /dev/null
{
for m in w1 demo; do
  for c in 1 5 16; do
    for round in 1 2; do
      for e in 1 0; do
        r=$(PROTATTN_MODEL_EPILOGUE=$e $p embed tests/data/2hhb.pdb --model $w/$m.safetensors --engine fused --copies $c \
              --repeat 40 --out $w/x.npy 2>&1 | grep -E "more rounds" )
        echo "model $m copies $c epilogue $e round $round: $r"
      done
    done
  done
done
} 2>&1 | tee $OUT/epilogue_ab.txt
