#!/usr/bin/env python3
"""Independent float64 numpy implementation of the atom_encoder forward (docs/model.md), checked
against the embeddings written by `protattn embed`.

It shares no code with the C++: it parses the safetensors file itself, builds the attention mask
itself (mask "atoms": every pair with |xi - xj|^2 <= cutoff^2, plus each atom with itself, from the
coordinates alone; mask "tiles": every atom pair whose 128-atom tiles are kept in the exported
layout), and runs dense masked softmax attention in the input atom order.

Usage: reference_forward.py MODEL.safetensors INPUTS_DIR EMBEDDING.npy [--layout DIR]
INPUTS_DIR holds coords.npy [N,3] float32 and elements.npy [N] int32 (`embed --save-inputs`).
Exit status 0 when every element is within the bound, 1 otherwise.

Bound (every element): |cpp - ref| <= FP16_REL * |ref| + ABS_TOL. The C++ CPU forward computes in
float32 and rounds the result to fp16 once: the rounding costs at most half an fp16 ulp, i.e.
2^-11 relative (FP16_REL); ABS_TOL covers the float32 arithmetic before it (measured: at most
9.1e-7 beyond the rounding on 1ubq and 2hhb, 2 and 3 layers, C=128) and the fp16 subnormal spacing.
"""
import argparse
import json
import struct
import sys

import numpy as np

FP16_REL = 2.0 ** -11
ABS_TOL = 1e-5
LN_EPS = 1e-5
GELU_CUBIC = 0.044715
# Pairs this close to the cutoff (in A^2) could fall either side in float32: the check refuses them.
BOUNDARY_MARGIN = 1e-4
DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen])
    data = raw[8 + hlen :]
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[b:end], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        tensors[name] = arr.astype(np.float64)
    return meta, tensors


def layer_norm(x, g, b):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * g + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + GELU_CUBIC * x**3)))


def linear(t, name, x):
    return x @ t[name + ".weight"].T + t[name + ".bias"]


def atoms_mask(coords, cutoff):
    xyz = coords.astype(np.float64)
    d2 = ((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(axis=2)
    c2 = float(cutoff) ** 2
    near = np.abs(d2 - c2) < BOUNDARY_MARGIN
    np.fill_diagonal(near, False)
    if near.any():
        sys.exit(f"reference: {int(near.sum())} atom pairs lie within {BOUNDARY_MARGIN} A^2 of the cutoff; "
                 "float32 and float64 may disagree about them, pick another structure")
    mask = d2 <= c2
    np.fill_diagonal(mask, True)
    return mask


def tiles_mask(layout_dir, n):
    meta = json.load(open(f"{layout_dir}/meta.json"))
    tile = int(meta["tile"])
    row_ptr = np.load(f"{layout_dir}/row_ptr.npy")
    col_idx = np.load(f"{layout_dir}/col_idx.npy")
    perm = np.load(f"{layout_dir}/perm.npy")
    assert int(meta["n"]) == n and sorted(perm.tolist()) == list(range(n)), "layout does not match the inputs"
    n_tiles = len(row_ptr) - 1
    kept = np.zeros((n_tiles, n_tiles), dtype=bool)
    for r in range(n_tiles):
        kept[r, col_idx[row_ptr[r] : row_ptr[r + 1]]] = True
    tile_of = np.empty(n, dtype=np.int64)
    tile_of[perm] = np.arange(n) // tile  # file atom perm[p] sits at new position p
    return kept[tile_of[:, None], tile_of[None, :]]


def forward(meta, t, coords, elements, mask):
    H, d, L = int(meta["heads"]), int(meta["head_dim"]), int(meta["layers"])
    n = len(elements)
    x = t["embed.weight"][elements]
    scale = 1.0 / np.sqrt(d)
    for l in range(L):
        p = f"layers.{l}."
        xn = layer_norm(x, t[p + "norm1.weight"], t[p + "norm1.bias"])
        q = linear(t, p + "attn.q", xn).reshape(n, H, d)
        k = linear(t, p + "attn.k", xn).reshape(n, H, d)
        v = linear(t, p + "attn.v", xn).reshape(n, H, d)
        o = np.empty((n, H, d))
        for h in range(H):
            s = np.where(mask, (q[:, h] @ k[:, h].T) * scale, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            o[:, h] = (s / s.sum(axis=1, keepdims=True)) @ v[:, h]
        x = x + linear(t, p + "attn.out", o.reshape(n, H * d))
        xn = layer_norm(x, t[p + "norm2.weight"], t[p + "norm2.bias"])
        x = x + linear(t, p + "mlp.fc2", gelu_tanh(linear(t, p + "mlp.fc1", xn)))
    return layer_norm(x, t["final_norm.weight"], t["final_norm.bias"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("embedding")
    ap.add_argument("--layout", help="exported layout (needed for mask tiles)")
    a = ap.parse_args()
    meta, t = read_safetensors(a.model)
    coords = np.load(f"{a.inputs}/coords.npy")
    elements = np.load(f"{a.inputs}/elements.npy").astype(np.int64)
    got = np.load(a.embedding)
    n, C = len(elements), int(meta["channels"])
    assert got.dtype == np.float16 and got.shape == (n, C), f"embedding is {got.dtype} {got.shape}, expected float16 {(n, C)}"
    if meta["mask"] == "atoms":
        mask = atoms_mask(coords, meta["cutoff"])
    elif meta["mask"] == "tiles":
        if not a.layout:
            sys.exit("reference: mask tiles needs --layout")
        mask = tiles_mask(a.layout, n)
    else:
        sys.exit(f"reference: unknown mask {meta['mask']}")
    ref = forward(meta, t, coords, elements, mask)
    err = np.abs(got.astype(np.float64) - ref)
    bound = FP16_REL * np.abs(ref) + ABS_TOL
    excess = err - FP16_REL * np.abs(ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    print(f"reference: {n} atoms, C={C}, mask {meta['mask']}, {int(mask.sum())} attending pairs "
          f"(mean {mask.sum() / n:.1f} keys per atom), |ref| max {np.abs(ref).max():.3f} std {ref.std():.3f}")
    print(f"reference: max |err| {err.max():.3e}; max (|err| - 2^-11 |ref|) {excess.max():.3e} (ABS_TOL {ABS_TOL:.0e}); "
          f"worst atom {worst[0]} channel {worst[1]}: cpp {got[worst]:.6f} ref {ref[worst]:.6f}")
    bad = int((err > bound).sum())
    if bad:
        print(f"reference: FAIL, {bad} of {err.size} elements outside |err| <= 2^-11 |ref| + {ABS_TOL}")
        return 1
    print(f"reference: OK, all {err.size} elements within |err| <= 2^-11 |ref| + {ABS_TOL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
