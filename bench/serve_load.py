#!/usr/bin/env python3
"""Closed-loop load on a running `protattn serve` (KServe v2 over HTTP, binary tensors),
using only numpy and requests, so it runs where tritonclient and perf_analyzer are not
installed (the lent GPU machine). For each concurrency C, C client processes each send
requests back to back for --seconds; prints and writes throughput and latency percentiles.

  serve_load.py --url http://127.0.0.1:8000 --model attention --atoms 4096 --heads 8 --dim 64 \
                --concurrency 1,4,16 --seconds 5 [--json OUT]

Each request carries the coordinates of --coords (an [N,3] float32 .npy, e.g. the coords.npy
of a `protattn layout FILE --export DIR`) or else a synthetic globule of --atoms atoms, and
seeded random fp16 Q/K/V: the same body for every request (the server does all its work per
request).
"""
import argparse
import json
import multiprocessing
import sys
import time

import numpy as np
import requests

DENSITY = 0.058  # atoms per cubic Angstrom, protein heavy atoms


def globule(n, seed):
    rng = np.random.default_rng(seed)
    radius = (3.0 * n / (4.0 * np.pi * DENSITY)) ** (1.0 / 3.0)
    pts = rng.normal(size=(n, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    pts *= radius * rng.random((n, 1)) ** (1.0 / 3.0)
    return pts.astype(np.float32)


def request_body(coords, heads, dim, seed):
    rng = np.random.default_rng(seed)
    n = len(coords)
    tensors = [("COORDS", "FP32", [n, 3], coords)]
    for name in ("Q", "K", "V"):
        tensors.append((name, "FP16", [heads, n, dim], rng.standard_normal((heads, n, dim)).astype(np.float16)))
    header = {"inputs": [{"name": name, "datatype": dt, "shape": shape,
                          "parameters": {"binary_data_size": arr.nbytes}} for name, dt, shape, arr in tensors],
              "outputs": [{"name": "O", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    return head, head + b"".join(arr.tobytes() for _, _, _, arr in tensors)


# The request every client sends, set before the clients are forked (copy-on-write, not pickled).
_REQUEST = {}


def client(window):
    """One client process: waits for the common start, then sends requests back to back until
    the stop time; returns its latencies (s), its failed requests and when its last one ended."""
    start, stop = window
    url, model, head, body = (_REQUEST[k] for k in ("url", "model", "head", "body"))
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    session = requests.Session()
    lat, bad = [], 0
    time.sleep(max(0.0, start - time.perf_counter()))
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        try:
            r = session.post(f"{url}/v2/models/{model}/infer", data=body, headers=headers, timeout=60)
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
        if ok:
            lat.append(time.perf_counter() - t0)
        else:
            bad += 1
    return lat, bad, time.perf_counter()


def run_level(url, model, head, body, concurrency, seconds):
    # A process per request in flight: threads of one interpreter take turns on its lock, and
    # with 19 MB a request through it 16 threads got fewer answers a second than 4 (2026-12-02,
    # the lent H200's host).
    _REQUEST.update(url=url, model=model, head=head, body=body)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(concurrency) as pool:
        start = time.perf_counter() + 0.5  # every client forked and ready by then
        done = pool.map(client, [(start, start + seconds)] * concurrency, chunksize=1)
    lat = [x for mine, _, _ in done for x in mine]
    errors = sum(bad for _, bad, _ in done)
    wall = max(end for _, _, end in done) - start
    ms = np.array(lat) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "seconds": wall,
            "infer_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p90_ms": float(np.percentile(ms, 90)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="attention")
    ap.add_argument("--atoms", type=int, default=4096)
    ap.add_argument("--coords", help="[N,3] float32 .npy of the structure to send")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    coords = np.load(a.coords).astype(np.float32) if a.coords else globule(a.atoms, a.seed)
    head, body = request_body(coords, a.heads, a.dim, a.seed)
    results = []
    print(f"{'conc':>5} {'infer/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for c in (int(x) for x in a.concurrency.split(",")):
        r = run_level(a.url, a.model, head, body, c, a.seconds)
        results.append(r)
        p = lambda k: f"{r[k]:8.2f}" if r[k] is not None else f"{'-':>8}"
        print(f"{c:5d} {r['infer_per_s']:9.1f} {p('p50_ms')} {p('p90_ms')} {p('p99_ms')} {r['errors']:6d}", flush=True)
    out = {"model": a.model, "atoms": len(coords), "coords": a.coords, "heads": a.heads, "dim": a.dim, "body_bytes": len(body), "levels": results}
    if a.json:
        json.dump(out, open(a.json, "w"), indent=2)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
