"""bench/power.py and bench/report.py --power without a GPU: nvidia-smi and protattn replaced by
stand-ins that print a known clock and power and sleep for the calls they are asked for, so the
sampling windows, the arithmetic per kept tile and the report's lines are checked."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_exe(path, text):
    with open(path, "w") as f:
        f.write(textwrap.dedent(text).lstrip())
    os.chmod(path, 0o755)


@pytest.fixture
def stand_ins(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # nvidia-smi -lms 50: a line every 50 ms, 1,500 MHz and 600 W, the software power cap on.
    write_exe(bin_dir / "nvidia-smi", f"""
        #!{sys.executable}
        import sys, time
        while True:
            t = time.time()
            sys.stdout.write(time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t)) + ".%03d, 1500, 600.0, 0x0000000000000004\\n" % int((t % 1) * 1000))
            sys.stdout.flush()
            time.sleep(0.05)
        """)
    # protattn bench: 2 ms a call on all 132 SMs (4 ms on 66), sleeping through the calls.
    write_exe(bin_dir / "protattn", f"""
        #!{sys.executable}
        import json, os, sys, time
        a = sys.argv
        iters = int(a[a.index("--iters") + 1])
        ms = 2.0 * 132 / int(os.environ.get("PROTATTN_FUSED_WS_GRID", "132"))
        time.sleep(ms * iters / 1000)
        json.dump({{"results": [{{"ms": ms, "nnz_blocks": 1000, "heads": 4, "kernel": "ws"}}]}}, open(a[a.index("--json") + 1], "w"))
        """)
    layout = tmp_path / "layouts" / "w2"
    layout.mkdir(parents=True)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir, layout, env


def test_power_windows_and_per_tile_figures(stand_ins, tmp_path):
    bin_dir, layout, env = stand_ins
    out = tmp_path / "power.json"
    subprocess.run([sys.executable, f"{ROOT}/bench/power.py", str(layout), "--protattn", str(bin_dir / "protattn"),
                    "--seconds", "1.5", "--no-flex", "--sms", "132", "--grids", "66", "--json", str(out)],
                   check=True, env=env, timeout=120)
    rows = json.load(open(out))
    assert [(r["engine"], r["grid"], r["sms"]) for r in rows] == [("fused", "all", 132), ("fused", 66, 66)]
    for r in rows:
        assert r["samples"] >= 5
        assert r["sm_mhz"] == 1500 and r["watts"] == 600.0
        assert r["reasons"] == ["0x4"] and r["power_capped_share"] == 1.0
        tiles = 1000 * 4
        assert r["kept_tiles_x_heads"] == tiles
        assert r["cycles_per_tile"] == pytest.approx(r["ms_per_call"] * 1e-3 * 1500e6 * r["sms"] / tiles)
        assert r["uj_per_tile"] == pytest.approx(600.0 * r["ms_per_call"] * 1e-3 / tiles * 1e6)
    # Half the SMs at twice the time: the same cycles per tile.
    assert rows[0]["cycles_per_tile"] == pytest.approx(rows[1]["cycles_per_tile"])

    # The report prints the runs above its table and keeps them in the joined JSON.
    bench = tmp_path / "bench.json"
    peers = tmp_path / "peers.json"
    json.dump({"results": [{"workload": "w2", "engine": "fused", "ms": 2.0, "tflops": 100.0}]}, open(bench, "w"))
    json.dump([{"layout": "w2", "flex_ms": 3.0, "flex_tflops": 66.0}], open(peers, "w"))
    joined = tmp_path / "results.json"
    text = subprocess.run([sys.executable, f"{ROOT}/bench/report.py", str(bench), str(peers), "--out", str(joined),
                           "--power", str(out)], check=True, capture_output=True, text=True).stdout
    lines = text.splitlines()
    assert lines[0].startswith("sustained runs")
    assert any("on 132 SMs:  1500 MHz  600 W" in line for line in lines)
    assert lines[-1].startswith("w2") and "1.50" in lines[-1]
    assert json.load(open(joined))["power"] == rows


def test_power_says_when_a_run_is_too_short(stand_ins, tmp_path):
    bin_dir, layout, env = stand_ins
    out = tmp_path / "power.json"
    subprocess.run([sys.executable, f"{ROOT}/bench/power.py", str(layout), "--protattn", str(bin_dir / "protattn"),
                    "--seconds", "0.1", "--no-flex", "--sms", "132", "--json", str(out)], check=True, env=env, timeout=60)
    (row,) = json.load(open(out))
    assert "note" in row and "sm_mhz" not in row
