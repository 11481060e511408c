#!/usr/bin/env bash
# Sets up, builds the program and runs the main job: block-sparse attention over the atoms of
# haemoglobin (PDB 2HHB, 4,558 heavy atoms without waters): 8 A cutoff layout in Hilbert order, 8 heads of d=64,
# seeded random Q/K/V, on the fused GPU engine when a GPU is present, else on the CPU engine.
# Outputs land in out/demo (o.npy, lse.npy, q/k/v.npy and the layout export).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/build.sh protattn_cli
build=${BUILD_DIR:-build}
engine=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then engine=fused; fi
"$build/tools/protattn" info tests/data/2hhb.pdb
"$build/tools/protattn" layout tests/data/2hhb.pdb --cutoff 8 --order hilbert --mask atoms
"$build/tools/protattn" run tests/data/2hhb.pdb --engine "$engine" --heads 8 --dim 64 --mask atoms --seed 1 --out out/demo
