#!/usr/bin/env python3
"""Joins `protattn bench --json` results with `bench/peers.py --json` results measured in the
same run, prints a short table of times and ratios (peer time / protattn time), and writes the
joined JSON (and a PNG plot when matplotlib is there).

  report.py BENCH_JSON PEERS_JSON [--out results.json] [--plot plot.png] [--meta k=v ...]
            [--power power.json]

--power adds bench/power.py's sustained runs (SM clock, power, energy and SM cycles per kept
tile of the fused engine and FlexAttention) above the table and into the joined JSON.
"""
import argparse
import json
import sys

from power import ratio_lines  # bench/power.py, beside this file

# Targets of the issues, recorded beside the measurement (never asserted).
TARGETS = {
    "w1": "fused <= 10 us",
    "w1b": "flex/fused >= 1.3",
    "w2": "flex/fused >= 1.5",
    "w2d128": "flex/fused >= 1.5",
    "1m": "flex/fused >= 1.5",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench")
    ap.add_argument("peers")
    ap.add_argument("--out")
    ap.add_argument("--plot")
    ap.add_argument("--meta", nargs="*", default=[], help="key=value pairs recorded in the output (commit, driver...)")
    ap.add_argument("--power", help="bench/power.py's JSON from the same run")
    a = ap.parse_args()
    bench = json.load(open(a.bench))
    peers = {p["layout"]: p for p in json.load(open(a.peers))}
    rows = []
    for r in bench["results"]:
        if "error" in r:
            print(f"report: {r['engine']} on {r['workload']}: {r['error']}")
            continue
        p = peers.get(r["workload"], {})
        if "error" in p:
            print(f"report: the peers on {r['workload']}: {p['error']}")
        row = dict(r)
        row["peers"] = p
        us = r["ms"] * 1e3
        for key in ("flex", "sdpa_flash", "sdpa_cudnn"):
            if key + "_ms" in p:
                row[key + "_over_ours"] = p[key + "_ms"] / r["ms"]
        row["target"] = TARGETS.get(r["workload"], "")
        rows.append(row)
    if a.power:
        power = json.load(open(a.power))
        runs = {(r.get("layout"), r.get("engine"), r.get("grid")): r for r in power if "cycles_per_tile" in r}
        print("sustained runs (bench/power.py): median SM clock and mean board power under each")
        for (layout, engine, grid), r in sorted(runs.items(), key=lambda kv: str(kv[0])):
            print(f"  {layout:6} {engine:6} on {r['sms']:3} SMs: {r['sm_mhz']:5.0f} MHz {r['watts']:4.0f} W, "
                  f"{r['ms_per_call']:8.3f} ms, {r['uj_per_tile']:5.2f} uJ and {r['cycles_per_tile']:5.0f} SM cycles a kept tile")
        for line in ratio_lines(power):
            print("  " + line)
    print(f"{'workload':9} {'engine':7} {'ours us':>9} {'TFLOPS':>7} {'flex us':>9} {'flexTF':>7} {'flex/ours':>9} "
          f"{'flash us':>9} {'cudnn us':>9}  target")
    for r in rows:
        p = r["peers"]
        f = lambda k: f"{p[k] * 1e3:9.1f}" if k in p else f"{'-':>9}"
        ratio = f"{r['flex_over_ours']:9.2f}" if "flex_over_ours" in r else f"{'-':>9}"
        ftf = f"{p['flex_tflops']:7.0f}" if "flex_tflops" in p else f"{'-':>7}"
        print(f"{r['workload']:9} {r['engine']:7} {r['ms'] * 1e3:9.1f} {r['tflops']:7.0f} {f('flex_ms')} {ftf} {ratio} "
              f"{f('sdpa_flash_ms')} {f('sdpa_cudnn_ms')}  {r['target']}")
    meta = dict(kv.split("=", 1) for kv in a.meta)
    out = {"env": {**bench.get("env", {}), **meta}, "results": rows}
    if a.power:
        out["power"] = power
    if a.out:
        json.dump(out, open(a.out, "w"), indent=2)
    if a.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("report: matplotlib missing, no plot", file=sys.stderr)
            return 0
        fused = [r for r in rows if r["engine"] == "fused" and "flex_ms" in r["peers"]]
        names = [r["workload"] for r in fused]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        x = range(len(names))
        w = 0.38
        ax1.bar([i - w / 2 for i in x], [r["tflops"] for r in fused], w, label="protattn fused")
        ax1.bar([i + w / 2 for i in x], [r["peers"]["flex_tflops"] for r in fused], w, label="FlexAttention")
        ax1.set_xticks(list(x), names)
        ax1.set_ylabel("TFLOPS (computed blocks only)")
        ax1.legend()
        ax2.bar([i - w / 2 for i in x], [r["ms"] * 1e3 for r in fused], w, label="protattn fused")
        ax2.bar([i + w / 2 for i in x], [r["peers"]["flex_ms"] * 1e3 for r in fused], w, label="FlexAttention")
        ax2.set_yscale("log")
        ax2.set_xticks(list(x), names)
        ax2.set_ylabel("time (us, log)")
        ax2.legend()
        env = out["env"]
        fig.suptitle(f"{env.get('gpu', '?')}, driver {env.get('nvidia_driver', env.get('cuda_driver', '?'))}, "
                     f"commit {env.get('commit', '?')}, {env.get('date', '?')[:10]}")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
