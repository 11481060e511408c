"""`protattn loop` against a real server: a short hypothesis loop exits 0 and prints its rate and
latency percentiles; the same seed gives the same accepted moves; a wrong model is an error."""
import re
import subprocess

from conftest import BINARY, DATA


def loop(server, *extra):
    return subprocess.run([str(BINARY), "loop", "--server", server.url, "--structure",
                           DATA / "1ubq.pdb", *map(str, extra)],
                          capture_output=True, text=True, timeout=300)


def test_loop_prints_rate_and_percentiles(enc_server):
    before = enc_server.metrics()
    p = loop(enc_server, "--iterations", 20)
    assert p.returncode == 0, p.stderr
    assert "(UNTRAINED)" in p.stdout
    m = re.search(r"^20 iterations in ([\d.]+) s: ([\d.]+) iterations/s$", p.stdout, re.M)
    assert m and float(m.group(2)) > 0, p.stdout
    assert re.search(r"^latency ms: p50 [\d.]+  p90 [\d.]+  p99 [\d.]+", p.stdout, re.M), p.stdout
    # 20 iterations + the starting hypothesis, all answered by the server.
    key = 'protattn_requests_total{model="atom_encoder",outcome="success"}'
    assert enc_server.metrics()[key] - before.get(key, 0) == 21


def test_loop_concurrency_and_seed(enc_server):
    a = loop(enc_server, "--iterations", 5, "--concurrency", 2, "--seed", 9)
    b = loop(enc_server, "--iterations", 5, "--concurrency", 2, "--seed", 9)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    moves = lambda out: re.findall(r"^loop \d+: accepted .*$", out, re.M)  # noqa: E731
    assert len(moves(a.stdout)) == 2 and moves(a.stdout) == moves(b.stdout)
    assert "10 iterations in" in a.stdout


def test_loop_wrong_model_fails(enc_server):
    p = loop(enc_server, "--iterations", 2, "--model", "attention")
    assert p.returncode == 1 and "unknown input 'ELEMENTS'" in p.stderr, p.stderr
