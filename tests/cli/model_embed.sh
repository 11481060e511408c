#!/usr/bin/env bash
# End to end: init-model, embed real structures, and the independent numpy forward agrees (it can fail: a control).
set -euo pipefail
BIN=$1
DATA=$2
REF=$(cd "$(dirname "$0")/.." && pwd)/model/reference_forward.py
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Model 1: the default configuration (2 layers, 4 heads x 64, C=128, mask atoms, cutoff 8 A).
"$BIN" init-model "$TMP/m1.safetensors" --seed 1 | tee "$TMP/init.log"
grep -q UNTRAINED "$TMP/init.log"
"$BIN" embed "$DATA/1ubq.pdb" --model "$TMP/m1.safetensors" --engine cpu --out "$TMP/1ubq.npy" \
  --save-inputs "$TMP/in_1ubq" 2> "$TMP/embed.err"
grep -q UNTRAINED "$TMP/embed.err"
python3 "$REF" "$TMP/m1.safetensors" "$TMP/in_1ubq" "$TMP/1ubq.npy"

# Model 2: mask tiles (whole kept tile pairs: the numpy side reads the exported layout), 3 layers,
# on haemoglobin (36 tiles, 754 of 1296 tile pairs kept).
"$BIN" init-model "$TMP/m2.safetensors" --mask tiles --layers 3 --seed 7
"$BIN" embed "$DATA/2hhb.pdb" --model "$TMP/m2.safetensors" --out "$TMP/2hhb.npy" \
  --save-inputs "$TMP/in_2hhb" --export-layout "$TMP/layout_2hhb" 2> /dev/null
python3 "$REF" "$TMP/m2.safetensors" "$TMP/in_2hhb" "$TMP/2hhb.npy" --layout "$TMP/layout_2hhb"

# Control: the embedding of another model (seed 2) must fail the check.
"$BIN" init-model "$TMP/m3.safetensors" --seed 2 > /dev/null
"$BIN" embed "$DATA/1ubq.pdb" --model "$TMP/m3.safetensors" --out "$TMP/other.npy" 2> /dev/null > /dev/null
if python3 "$REF" "$TMP/m1.safetensors" "$TMP/in_1ubq" "$TMP/other.npy"; then
  echo "FAIL: the reference accepted the embedding of another model" >&2
  exit 1
fi

# A ragged batch answers each structure as it answers it alone, bit for bit.
"$BIN" embed "$DATA/2hhb.pdb" "$DATA/1ubq.pdb" --model "$TMP/m1.safetensors" --out-dir "$TMP/batch" 2> /dev/null
cmp "$TMP/batch/1ubq.npy" "$TMP/1ubq.npy"

# Timed copies (offline batched timing): the first copy's embedding is the same bits, every round
# gives the same embeddings (embed checks), and the JSON counts every copy.
"$BIN" embed "$DATA/1ubq.pdb" --model "$TMP/m1.safetensors" --out "$TMP/copies.npy" --copies 3 --repeat 2 \
  --json "$TMP/copies.json" 2> /dev/null > /dev/null
cmp "$TMP/copies.npy" "$TMP/1ubq.npy"
python3 - "$TMP/copies.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["structures"] == 3 and j["rounds"] == 2 and len(j["round_ms"]) == 2, j
assert j["round_ms_median"] > 0 and j["structures_per_s"] > 0, j
PY

# A missing model file is an error naming the file.
if "$BIN" embed "$DATA/1ubq.pdb" --model "$TMP/absent.safetensors" --out "$TMP/x.npy" 2> "$TMP/err.log"; then
  echo "FAIL: embed succeeded without a model" >&2
  exit 1
fi
grep -q absent.safetensors "$TMP/err.log"
echo "model_embed: OK"
