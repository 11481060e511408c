#!/usr/bin/env python3
"""Times the peers of protattn on exported layouts, on the GPU, in the same run as protattn:
PyTorch FlexAttention with a BlockMask holding exactly the layout's kept tiles, and dense
scaled-dot-product attention through the flash and cuDNN backends. Each is timed with
triton.testing.do_bench (CUDA events, L2 cleared before each call, median).

  peers.py LAYOUT_DIR [LAYOUT_DIR ...] [--json OUT] [--no-dense-above N]

Each folder is a `protattn layout --export` / `protattn bench --export-layouts` folder; its
bench.json (heads, dim, batch, dtype) says the shape, as protattn bench ran it.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention


def kept_tiles(folder):
    meta = json.load(open(os.path.join(folder, "meta.json")))
    row_ptr = np.load(os.path.join(folder, "row_ptr.npy")).astype(np.int64)
    cols = np.load(os.path.join(folder, "col_idx.npy")).astype(np.int64)
    n, tile = int(meta["n"]), int(meta["tile"])
    tiles = -(-n // tile)
    if len(row_ptr) != tiles + 1 or row_ptr[-1] != len(cols):
        raise SystemExit(f"{folder}: row_ptr/col_idx do not match n={n}, tile={tile}")
    kept = torch.zeros(tiles, tiles, dtype=torch.bool)
    kept[torch.from_numpy(np.repeat(np.arange(tiles), np.diff(row_ptr))), torch.from_numpy(cols)] = True
    return n, tile, kept


def flex_block_mask(kept, batch, heads, n_pad, tile):
    # Every kept tile is a full block (no per-pair mask function): the same blocks protattn computes.
    counts = kept.sum(1).to(torch.int32)
    order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True).to(torch.int32)
    def per(t):
        return t.view(1, 1, *t.shape).expand(batch, heads, *t.shape).contiguous()
    empty = torch.zeros_like(counts)
    return BlockMask.from_kv_blocks(per(empty), per(order), per(counts), per(order),
                                    BLOCK_SIZE=tile, seq_lengths=(n_pad, n_pad))


def time_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def load_case(folder):
    """The shape protattn bench ran (the folder's bench.json), the layout's kept tiles on the GPU
    and random Q, K, V of that shape."""
    shape = json.load(open(os.path.join(folder, "bench.json")))
    heads, dim, batch = int(shape["heads"]), int(shape["dim"]), int(shape.get("batch", 1))
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[shape.get("dtype", "fp16")]
    n, tile, kept = kept_tiles(folder)
    n_pad = math.ceil(n / tile) * tile
    kept = kept.cuda()
    q, k, v = (torch.randn(batch, heads, n_pad, dim, dtype=dtype, device="cuda") for _ in range(3))
    return shape, heads, dim, batch, n, tile, n_pad, kept, q, k, v


def measure(folder, dense_limit):
    shape, heads, dim, batch, n, tile, n_pad, kept, q, k, v = load_case(folder)
    nnz = int(kept.sum())
    flops = 4.0 * nnz * tile * tile * dim * heads * batch
    out = {"layout": os.path.basename(os.path.normpath(folder)), "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "triton": triton.__version__, "n": n, "nnz_blocks": nnz * batch,
           "batch": batch, "heads": heads, "dim": dim, "dtype": shape.get("dtype", "fp16")}
    # A fresh compile per layout: dynamo keeps compiled variants of flex_attention per process
    # and past its recompile limit runs it eagerly, which materialises all N^2 scores (W4, the
    # seventh layout of a run, asked for 3.5 TiB).
    torch._dynamo.reset()
    flex = torch.compile(flex_attention, dynamic=False)
    mask = flex_block_mask(kept, batch, heads, n_pad, tile)
    flex(q, k, v, block_mask=mask)
    t = time_ms(lambda: flex(q, k, v, block_mask=mask))
    out.update(flex_ms=t, flex_tflops=flops / t / 1e9)
    if n_pad <= dense_limit:
        dense_flops = 4.0 * n_pad * n_pad * dim * heads * batch
        for backend, key in ((SDPBackend.FLASH_ATTENTION, "sdpa_flash"), (SDPBackend.CUDNN_ATTENTION, "sdpa_cudnn")):
            try:
                with sdpa_kernel(backend):
                    t = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
                out[key + "_ms"] = t
                out[key + "_dense_tflops"] = dense_flops / t / 1e9
            except Exception as e:  # a backend may refuse a shape; say so in the results
                out[key + "_error"] = str(e)[:160]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layouts", nargs="+")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--no-dense-above", type=int, default=200_000, help="skip dense SDPA above this many atoms")
    a = ap.parse_args()
    results = []
    for folder in a.layouts:
        try:
            r = measure(folder, a.no_dense_above)
        except Exception as e:  # one layout's failure is recorded; the others are still timed
            r = {"layout": os.path.basename(os.path.normpath(folder)), "error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(json.dumps(r), flush=True)
        results.append(r)
        torch.cuda.empty_cache()
    if a.json:
        json.dump(results, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
