#!/usr/bin/env python3
"""The SM clock and board power under sustained runs of the fused engine and FlexAttention on the
same layouts, from nvidia-smi sampled every 50 ms (it only reads; no setting of the GPU changes).
Under a long kernel the GPU holds its power limit by lowering the SM clock, so two kernels of the
same work per clock cycle can differ in time by their power: this records, per layout and
kernel, the median SM clock, the mean power, nvidia-smi's clock-event reasons (0x4: software
power cap), the time per call, the energy per kept tile and the SM clock cycles per kept tile.

  power.py LAYOUT_DIR [LAYOUT_DIR ...] --protattn BIN [--seconds 6] [--json OUT]
           [--no-flex] [--grids 66,33] [--sms N]

Each folder is one exported by `protattn bench --export-layouts` whose name is the workload's
(w2, 1m, ...): the fused engine runs that workload (`protattn bench --workload NAME --no-flush`,
as many calls as fill --seconds), FlexAttention the folder's kept tiles as bench/peers.py does.
--grids also runs the fused engine's persistent blocks on that many SMs
(PROTATTN_FUSED_WS_GRID): on fewer SMs the GPU stays under its limit and runs at its top clock.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

FIELDS = "timestamp,clocks.sm,power.draw,clocks_event_reasons.active"


class Sampler:
    """nvidia-smi every 50 ms into a file, read back once it has stopped."""

    def __init__(self, path):
        self.path = path
        self.proc = subprocess.Popen(["nvidia-smi", f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits", "-lms", "50"],
                                     stdout=open(path, "w"), stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def read(self):
        """Every sample, as (seconds since the epoch, SM MHz, W, clock-event reasons); once stopped."""
        rows = []
        for line in open(self.path):
            p = [x.strip() for x in line.split(",")]
            if len(p) != 4:
                continue
            try:
                t = time.mktime(time.strptime(p[0][:19], "%Y/%m/%d %H:%M:%S")) + float("0." + p[0][20:])
                rows.append((t, float(p[1]), float(p[2]), int(p[3], 16)))
            except ValueError:
                continue
        return rows


def summarise(samples, start, end, ms, tiles, sms):
    """One run's figures from the samples between start and end, less the first and last 15%."""
    a, b = start + 0.15 * (end - start), end - 0.15 * (end - start)
    rows = [r for r in samples if a <= r[0] <= b]
    out = {"ms_per_call": ms, "kept_tiles_x_heads": tiles, "sms": sms, "samples": len(rows)}
    if len(rows) < 5:
        out["note"] = "too few samples (run shorter than about 1 s)"
        return out
    mhz = statistics.median(r[1] for r in rows)
    watts = statistics.mean(r[2] for r in rows)
    out.update(sm_mhz=mhz, watts=watts, reasons=sorted({hex(r[3]) for r in rows}),
               power_capped_share=sum(1 for r in rows if r[3] & 0x4) / len(rows),
               uj_per_tile=watts * ms * 1e-3 / tiles * 1e6, cycles_per_tile=ms * 1e-3 * mhz * 1e6 * sms / tiles)
    return out


def ratio_lines(rows):
    """FlexAttention / fused in time, SM cycles and energy, a line per layout with both (report.py too)."""
    by = {(r.get("layout"), r.get("engine"), r.get("grid")): r for r in rows if "cycles_per_tile" in r}
    lines = []
    for layout in sorted({k[0] for k in by}):
        f, x = by.get((layout, "fused", "all")), by.get((layout, "flex", "all"))
        if f and x:
            lines.append(f"{layout}: flex / fused {x['ms_per_call'] / f['ms_per_call']:.2f} in time, "
                         f"{x['cycles_per_tile'] / f['cycles_per_tile']:.2f} in SM cycles, "
                         f"{x['uj_per_tile'] / f['uj_per_tile']:.2f} in energy")
    return lines


def fused_runs(binary, name, seconds, grids, sms):
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # One short call first: the time per call, to size the sustained run.
        probe = os.path.join(tmp, "probe.json")
        subprocess.run([binary, "bench", "--engine", "fused", "--workload", name, "--warmup", "2", "--iters", "5",
                        "--json", probe], check=True, stdout=subprocess.DEVNULL)
        r0 = json.load(open(probe))["results"][0]
        tiles = int(r0["nnz_blocks"]) * int(r0["heads"])
        for grid in [None] + grids:
            ms0 = r0["ms"] * (sms / grid if grid else 1.0)
            iters = max(10, int(seconds * 1e3 / ms0))
            env = dict(os.environ)
            if grid:
                env["PROTATTN_FUSED_WS_GRID"] = str(grid)
            js = os.path.join(tmp, f"run_{grid}.json")
            time.sleep(2)  # idle first: the clock and power come back
            # The layout and plan are made before the timed calls: the window starts at the first
            # timed call, estimated from the end and the median time.
            subprocess.run([binary, "bench", "--engine", "fused", "--workload", name, "--warmup", "5", "--iters", str(iters),
                            "--no-flush", "--json", js], check=True, env=env, stdout=subprocess.DEVNULL)
            end = time.time()
            r = json.load(open(js))["results"][0]
            start = end - r["ms"] * 1e-3 * iters
            results.append({"layout": name, "engine": "fused", "kernel": r.get("kernel"), "grid": grid or "all",
                            "window": (start, end, r["ms"], tiles, grid or sms)})
            print(f"power.py: fused on {name}, {grid or sms} SMs: {r['ms']:.3f} ms a call", flush=True)
    return results


def flex_run(folder, seconds, sms):
    import torch
    from torch.nn.attention.flex_attention import flex_attention
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import flex_block_mask, load_case
    _, heads, _, batch, _, tile, n_pad, kept, q, k, v = load_case(folder)
    torch._dynamo.reset()
    flex = torch.compile(flex_attention, dynamic=False)
    mask = flex_block_mask(kept, batch, heads, n_pad, tile)
    for _ in range(3):
        flex(q, k, v, block_mask=mask)
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(3):
        flex(q, k, v, block_mask=mask)
    torch.cuda.synchronize()
    reps = max(10, int(seconds / ((time.time() - t0) / 3)))
    time.sleep(2)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start = time.time()
    s.record()
    for _ in range(reps):
        flex(q, k, v, block_mask=mask)
    e.record()
    torch.cuda.synchronize()
    end = time.time()
    ms = s.elapsed_time(e) / reps
    row = {"layout": os.path.basename(os.path.normpath(folder)), "engine": "flex", "grid": "all",
           "window": (start, end, ms, int(kept.sum()) * heads * batch, sms)}
    print(f"power.py: flex on {row['layout']}: {ms:.3f} ms a call", flush=True)
    del q, k, v, mask
    torch.cuda.empty_cache()
    return row


def sm_count():
    try:
        import torch
        return torch.cuda.get_device_properties(0).multi_processor_count
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layouts", nargs="+")
    ap.add_argument("--protattn", required=True, help="the protattn binary")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each sustained run")
    ap.add_argument("--grids", default="", help="also run the fused engine on this many SMs (comma-separated)")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--sms", type=int, help="the GPU's SM count (default: from PyTorch)")
    ap.add_argument("--json")
    a = ap.parse_args()
    sms = a.sms or sm_count()
    if not sms:
        raise SystemExit("power.py: no CUDA device visible to PyTorch (give --sms)")
    grids = [int(g) for g in a.grids.split(",") if g]
    samples = tempfile.NamedTemporaryFile(suffix=".csv", delete=False)
    samples.close()
    sampler = Sampler(samples.name)
    rows = []
    try:
        for folder in a.layouts:
            name = os.path.basename(os.path.normpath(folder))
            try:
                rows += fused_runs(a.protattn, name, a.seconds, grids, sms)
                if not a.no_flex:
                    rows.append(flex_run(folder, a.seconds, sms))
            except Exception as e:  # one layout's failure is recorded; the others still run
                rows.append({"layout": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        sampler.stop()  # nvidia-smi's output is complete only once it has stopped
    samples_read = sampler.read()
    for r in rows:
        if "window" in r:
            r.update(summarise(samples_read, *r.pop("window")))
    os.unlink(samples.name)
    print(f"{'layout':8} {'engine':6} {'SMs':>4} {'SM MHz':>6} {'W':>5} {'capped':>6} {'ms/call':>9} {'uJ/tile':>7} {'cycles/tile':>11}")
    for r in rows:
        if "sm_mhz" in r:
            print(f"{r['layout']:8} {r['engine']:6} {r['sms']:4} {r['sm_mhz']:6.0f} {r['watts']:5.0f} {r['power_capped_share']:6.0%} "
                  f"{r['ms_per_call']:9.3f} {r['uj_per_tile']:7.2f} {r['cycles_per_tile']:11.0f}")
    for line in ratio_lines(rows):
        print(line)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
