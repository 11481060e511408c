"""Measures `protattn serve` with perf_analyzer (throughput, p50/p99 by concurrency, HTTP and
gRPC) and the offline engine time of the same request (`protattn bench`), and writes
bench/results/serve-cpu-<date>.{md,json}. Not a test: run it by hand on a quiet machine.

    python3 tests/server/bench_serve.py [--binary build/tools/protattn] [--concurrency 1 2 4 8]
"""
import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402


def perf(pa, server, protocol, input_dir, shapes, concurrency, interval_ms, out_csv):
    cmd = [pa, "-m", "attention", "-u", server.http_addr if protocol == "http" else server.grpc_addr,
           "-i", protocol, "--input-data", str(input_dir), "--concurrency-range",
           f"{concurrency}:{concurrency}", "--measurement-interval", str(interval_ms),
           "--max-trials", "10", "--stability-percentage", "30", "-f", str(out_csv)]
    for s in shapes:
        cmd += ["--shape", s]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(p.stdout + p.stderr)
    with open(out_csv) as f:
        row = next(csv.DictReader(f))
    return {"protocol": protocol, "concurrency": concurrency,
            "throughput_infer_s": float(row["Inferences/Second"]),
            "p50_ms": float(row["p50 latency"]) / 1e3, "p99_ms": float(row["p99 latency"]) / 1e3,
            "server_queue_ms": float(row["Server Queue"]) / 1e3,
            "server_compute_ms": float(row["Server Compute Infer"]) / 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=str(conftest.BINARY))
    ap.add_argument("--structure", default=str(conftest.DATA / "1ubq.pdb"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--interval-ms", type=int, default=4000)
    ap.add_argument("--queue-delay-ms", default="2")
    ap.add_argument("--out", default=str(conftest.ROOT / "bench" / "results"))
    a = ap.parse_args()
    conftest.BINARY = Path(a.binary)
    pa = conftest.find_perf_analyzer()
    if pa is None:
        sys.exit("perf_analyzer not found: run scripts/setup-server.sh")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        d = tmp / "run"
        conftest.run_cli("layout", a.structure, "--export", d / "layout")
        conftest.run_cli("run", a.structure, "--heads", conftest.HEADS, "--dim", conftest.DIM, "--out", d / "out")
        import numpy as np
        ref = {"coords": np.load(d / "layout" / "coords.npy").astype(np.float32)}
        for x in "qkv":
            ref[x] = np.load(d / "out" / f"{x}.npy")
        input_dir = tmp / "pa_input"
        input_dir.mkdir()
        for name, key in (("COORDS", "coords"), ("Q", "q"), ("K", "k"), ("V", "v")):
            (input_dir / name).write_bytes(np.ascontiguousarray(ref[key]).tobytes())
        n = len(ref["coords"])
        shapes = [f"COORDS:{n},3"] + [f"{x}:{conftest.HEADS},{n},{conftest.DIM}" for x in "QKV"]

        bench_json = tmp / "bench.json"
        subprocess.run([a.binary, "bench", "--engine", "cpu", "--structure", a.structure, "--heads",
                        str(conftest.HEADS), "--dim", str(conftest.DIM), "--dtype", "fp16",
                        "--warmup", "5", "--iters", "50", "--no-flush", "--json", str(bench_json)],
                       check=True, capture_output=True)
        offline_ms = json.loads(bench_json.read_text())["results"][0]["ms"]

        repo = tmp / "models"
        import shutil
        # Only the attention model: atom_encoder needs weights written first (init-model).
        shutil.copytree(conftest.ROOT / "models" / "attention", repo / "attention")
        rows = []
        server = conftest.Server(repo, tmp, "--max-queue-delay-ms", a.queue_delay_ms, "--log-level", "warn")
        try:
            for protocol in ("http", "grpc"):
                for c in a.concurrency:
                    rows.append(perf(pa, server, protocol, input_dir, shapes, c, a.interval_ms,
                                     tmp / f"{protocol}-{c}.csv"))
                    print(rows[-1], flush=True)
            m = server.metrics()
        finally:
            assert server.terminate() == 0
    offline_tput = 1000.0 / offline_ms
    for r in rows:
        r["overhead_ratio"] = r["throughput_infer_s"] / offline_tput
    commit = subprocess.run(["git", "-C", str(conftest.ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    date = datetime.date.today().isoformat()
    result = {
        "date": date, "commit": commit, "machine": platform.node(), "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(), "engine": "cpu",
        "request": {"structure": Path(a.structure).name, "atoms": n, "heads": conftest.HEADS,
                    "dim": conftest.DIM, "dtype": "fp16"},
        "server": {"max_queue_delay_ms": float(a.queue_delay_ms)},
        "offline": {"ms_per_request": offline_ms, "throughput_infer_s": offline_tput,
                    "how": "protattn bench --engine cpu --structure --no-flush (median of 50, same layout, one request per run)"},
        "perf_analyzer": rows,
        "server_batches": m.get("protattn_batches_total"),
        "server_requests_per_batch": m.get("protattn_batch_requests_sum", 0) / max(1, m.get("protattn_batch_requests_count", 1)),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve-cpu-{date}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# protattn serve, CPU engine, {date}", "",
             f"Commit {commit}, {os.cpu_count()} CPUs (client, server and engine share them), "
             f"request: {result['request']['structure']} ({n} atoms), {conftest.HEADS} heads, d={conftest.DIM}, fp16; "
             f"server --max-queue-delay-ms {a.queue_delay_ms}.",
             f"Offline: {offline_ms:.2f} ms per request ({offline_tput:.1f} infer/s), `protattn bench --engine cpu --no-flush` "
             "(one request per engine run; the CPU engine does the same FLOPs batched or not).",
             "The machine is shared with other builds while this runs: the load average below says how much; "
             "ratios above 1 mean the offline run was disturbed more than the served one, not a real gain.",
             f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
             "Command: `python3 tests/server/bench_serve.py` (perf_analyzer "
             f"--measurement-interval {a.interval_ms} per concurrency).", "",
             "| protocol | concurrency | infer/s | p50 ms | p99 ms | server queue ms | server compute ms | served / offline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['concurrency']} | {r['throughput_infer_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['server_queue_ms']:.1f} | {r['server_compute_ms']:.1f} | "
                     f"{r['overhead_ratio']:.2f} |")
    (out / f"serve-cpu-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
