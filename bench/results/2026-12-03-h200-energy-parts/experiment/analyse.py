#!/usr/bin/env python3
"""Reads a call's smi.csv (nvidia-smi every 50 ms), phases.txt (start and end of each sustained
run) and the runs' JSON; prints per run: median SM clock, mean board power, the clock-event
reasons seen (0x4: software power cap), time per call, energy per kept tile (mean power x time
per call / kept tiles x heads) and SM cycles per tile (time x median clock x SMs used / tiles).
The first and last 15% of each run are left out (ramps).   analyse.py CALL_DIR"""
import glob, json, os, re, statistics as st, sys
from datetime import datetime

d = sys.argv[1]
def when(s): return datetime.strptime(s.strip()[:26], "%Y/%m/%d %H:%M:%S.%f").timestamp()
lines = open(f"{d}/smi.csv").read().splitlines()
fields = [f.strip() for f in lines[0].split(",")]
samples = []
for ln in lines[1:]:
    p = [x.strip() for x in ln.split(",")]
    if len(p) == len(fields):
        try: samples.append((when(p[0]), p))
        except ValueError: pass
clk_i, pow_i, why_i = fields.index("clocks.sm"), fields.index("power.draw"), fields.index("clocks_event_reasons.active")
marks = dict((ln.split(" ", 1)[0], when(ln.split(" ", 1)[1])) for ln in open(f"{d}/phases.txt"))

runs = {}  # name -> (ms per call, kept tiles x heads, SMs used)
for f in glob.glob(f"{d}/fused_*.json"):
    r = json.load(open(f))["results"][0]
    name = os.path.basename(f)[:-5]
    m = re.search(r"_g(\d+)_", name)
    runs[name] = (r["ms"], r["nnz_blocks"] * r["heads"], int(m.group(1)) if m else 132)
for f in glob.glob(f"{d}/peers_sustained_*.json"):
    rep = os.path.basename(f)[:-5].rsplit("_", 1)[1]
    for k, v in json.load(open(f)).items():
        runs[f"{k}_{rep}"] = (v["ms_per_call"], v["nnz"] * v["heads"], 132)

print(f"{'run':18} {'samples':>7} {'SM MHz':>6} {'W':>6} {'reasons':>8} {'ms/call':>8} {'uJ/tile':>7} {'cycles/tile':>11}")
for key in sorted(k for k in marks if "_start_" in k):
    base, rep = key.split("_start_")
    name = f"{base}_{rep}"
    s, e = marks[key], marks.get(f"{base}_end_{rep}")
    if e is None or name not in runs: continue
    a, b = s + 0.15 * (e - s), e - 0.15 * (e - s)
    sel = [p for t, p in samples if a <= t <= b]
    if len(sel) < 5:
        print(f"{name:18} {len(sel):7}  (run too short to sample)"); continue
    mhz = st.median(float(p[clk_i]) for p in sel)
    watts = st.mean(float(p[pow_i]) for p in sel)
    why = ",".join(sorted({hex(int(p[why_i], 16)) for p in sel}))
    ms, tiles, sms = runs[name]
    uj = watts * ms * 1e-3 / tiles * 1e6
    cyc = ms * 1e-3 * mhz * 1e6 * sms / tiles
    print(f"{name:18} {len(sel):7} {mhz:6.0f} {watts:6.1f} {why:>8} {ms:8.3f} {uj:7.2f} {cyc:11.0f}")
