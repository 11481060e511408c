# End to end: bad input gives "protattn: error: ..." naming the culprit and exit 1 (2 for
# usage errors), never a crash. Usage: bash errors.sh PROTATTN_BINARY DATA_DIR
set -uo pipefail
bin=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# expect CODE TEXT -- ARGS...: the command exits with CODE and its stderr names TEXT.
expect() {
  local code=$1 text=$2
  shift 3
  "$bin" "$@" > "$work/stdout" 2> "$work/stderr"
  local rc=$?
  if [[ $rc -ne $code ]]; then
    echo "FAIL: protattn $* exited $rc, expected $code"; cat "$work/stderr"; exit 1
  fi
  if ! grep -q "^protattn: error: " "$work/stderr" || ! grep -qF -- "$text" "$work/stderr"; then
    echo "FAIL: protattn $*: stderr lacks 'protattn: error: ' or '$text'"; cat "$work/stderr"; exit 1
  fi
  if grep -qiE "terminate|abort|core dumped" "$work/stderr"; then
    echo "FAIL: protattn $* crashed"; cat "$work/stderr"; exit 1
  fi
}

printf 'this is not a structure\n\x01\x02\x03\n' > "$work/garbage.pdb"
printf 'data_x\nloop_\n_atom_site.id\n' > "$work/garbage.cif"
expect 1 "$work/missing.pdb" -- info "$work/missing.pdb"
expect 1 "$work/missing.cif" -- layout "$work/missing.cif"
expect 1 "$work/garbage.pdb" -- info "$work/garbage.pdb"
expect 1 "$work/garbage.pdb" -- layout "$work/garbage.pdb" --export "$work/x"
expect 1 "$work/garbage.cif" -- run "$work/garbage.cif" --out "$work/y"
expect 1 "globule:abc" -- layout globule:abc

# Q/K/V files: missing, wrong dtype, wrong shape; each error names the file.
"$bin" run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp32 --out "$work/r" > /dev/null || { echo "FAIL: run"; exit 1; }
expect 1 "$work/nope.npy" -- run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp32 \
  --q "$work/nope.npy" --k "$work/r/k.npy" --v "$work/r/v.npy" --out "$work/r2"
expect 1 "$work/r/q.npy" -- run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp16 \
  --q "$work/r/q.npy" --k "$work/r/k.npy" --v "$work/r/v.npy" --out "$work/r2"
expect 1 "$work/r/lse.npy" -- run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp32 \
  --q "$work/r/q.npy" --k "$work/r/k.npy" --v "$work/r/lse.npy" --out "$work/r2"
expect 1 "$work/r/q.npy: shape [2, 602, 16], expected [1, 602, 16]" -- run "$data/1ubq.pdb" --heads 1 --dim 16 --dtype fp32 \
  --q "$work/r/q.npy" --k "$work/r/k.npy" --v "$work/r/v.npy" --out "$work/r2"
head -c 100 "$work/r/q.npy" > "$work/short.npy"
expect 1 "$work/short.npy" -- run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp32 \
  --q "$work/short.npy" --k "$work/r/k.npy" --v "$work/r/v.npy" --out "$work/r2"

# A folder where a file belongs: said so, for a structure, a tensor and a model.
expect 1 "$work: is a folder, not a file" -- info "$work"
expect 1 "$work: is a folder, not a file" -- run "$data/1ubq.pdb" --heads 2 --dim 16 --dtype fp32 \
  --q "$work" --k "$work/r/k.npy" --v "$work/r/v.npy" --out "$work/r2"
expect 1 "$work: is a folder, not a file" -- embed --model "$work" "$data/1ubq.pdb" --out "$work/e.npy"

# A GPU engine where no GPU is usable (CI's machines): the engine says what it needs and what runs
# instead, not a bare CUDA error; a build without CUDA says the engine is not in it. (On a GPU
# machine the run succeeds and there is nothing to check.)
if ! "$bin" run "$data/1ubq.pdb" --heads 2 --dim 16 --engine fused --out "$work/g" > /dev/null 2> "$work/stderr"; then
  { grep -qF "fused engine needs an NVIDIA GPU" "$work/stderr" && grep -qF -- "--engine cpu" "$work/stderr"; } ||
    grep -qF "engine 'fused' is not compiled into this build" "$work/stderr" ||
    { echo "FAIL: fused engine without a GPU:"; cat "$work/stderr"; exit 1; }
fi

# Usage errors: exit 2.
expect 2 "--k" -- run "$data/1ubq.pdb" --q "$work/r/q.npy" --out "$work/r3"
expect 2 "--out" -- run "$data/1ubq.pdb"
expect 2 "--bogus" -- info "$data/1ubq.pdb" --bogus
expect 2 "dtype" -- run "$data/1ubq.pdb" --dtype fp8 --out "$work/r3"
expect 2 "subcommand" --
expect 1 "warp" -- run "$data/1ubq.pdb" --engine warp --out "$work/r3"
# Numbers out of range name the option and the value (not CLI11's "not in range 0 to 1.79e308").
expect 2 "--iters: must be greater than 0, got 0" -- bench --iters 0
expect 2 "--warmup: must be 0 or more, got -1" -- bench --warmup -1
expect 2 "--tile: must be greater than 0, got 0" -- layout "$data/1ubq.pdb" --tile 0
expect 2 "--iters: expected a number, got 'many'" -- bench --iters many
if grep -q "not in range" "$work/stderr"; then echo "FAIL: CLI11's range message"; exit 1; fi

# --help works for every subcommand and exits 0.
for cmd in info layout run; do
  "$bin" "$cmd" --help | grep -q "Usage" || { echo "FAIL: $cmd --help"; exit 1; }
done
echo "errors: ok"
