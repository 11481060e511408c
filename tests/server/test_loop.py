"""`protattn loop` against a real server: a short hypothesis loop exits 0 and prints its rate and
latency percentiles; the same seed gives the same accepted moves, through the messages or through
shared memory; a wrong model is an error."""
import os
import re
import subprocess

import pytest
import requests

from conftest import BINARY, DATA, Server


@pytest.fixture(scope="module")
def shm_loop_server(enc_repo, tmp_path_factory):
    s = Server(enc_repo, tmp_path_factory.mktemp("loop-shm"), "--allow-shared-memory", "--max-queue-delay-ms", "5")
    yield s
    assert s.terminate() == 0


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


def test_loop_through_shared_memory(shm_loop_server):
    # The same seed through shared memory and through the messages: the same answers, so the
    # same accepted moves and scores; every region is unregistered and removed at the end.
    a = loop(shm_loop_server, "--iterations", 6, "--concurrency", 2, "--seed", 4, "--shared-memory")
    b = loop(shm_loop_server, "--iterations", 6, "--concurrency", 2, "--seed", 4)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "12 iterations in" in a.stdout and "(shared memory)" in a.stdout
    moves = lambda out: re.findall(r"^loop \d+: accepted .*$", out, re.M)  # noqa: E731
    assert len(moves(a.stdout)) == 2 and moves(a.stdout) == moves(b.stdout)
    status = requests.get(shm_loop_server.url + "/v2/systemsharedmemory/status", timeout=10)
    assert status.status_code == 200 and status.json() == []
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("protattn-loop-")]


def test_loop_shared_memory_needs_the_server_switch(enc_server):
    p = loop(enc_server, "--iterations", 2, "--shared-memory")
    assert p.returncode == 1 and "--allow-shared-memory" in p.stderr, p.stderr
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("protattn-loop-")]


def test_loop_without_a_server_says_why():
    # Nothing listens on port 1; a server given without its scheme is named as the mistake.
    run = lambda url: subprocess.run([str(BINARY), "loop", "--server", url, "--structure", DATA / "1ubq.pdb",  # noqa: E731
                                      "--iterations", "2"], capture_output=True, text=True, timeout=60)
    p = run("http://127.0.0.1:1")
    assert p.returncode == 1 and "cannot reach http://127.0.0.1:1: could not connect" in p.stderr, p.stderr
    p = run("127.0.0.1:8000")
    assert p.returncode == 1 and "--server must be a URL like http://HOST:PORT, got '127.0.0.1:8000'" in p.stderr, p.stderr
