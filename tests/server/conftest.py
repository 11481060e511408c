"""Fixtures of the server's black-box tests: the real `protattn serve` on free loopback ports,
reference outputs from `protattn run`, and small helpers shared by the test files."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BINARY = Path(os.environ.get("PROTATTN_BINARY", ROOT / "build" / "tools" / "protattn"))
HEADS, DIM = 2, 64
READY_TIMEOUT_S = 60


def _ephemeral_low():
    """The lowest port the kernel hands out to sockets bound to port 0 (client connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A loopback port nothing listens on, below the ephemeral range when there is room: a port
    the kernel picked for us (bind to 0) can be handed to a client connection of the next test
    before the server binds it, which made `protattn serve` fail with "Address already in use"."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200 if low > 20000 else 0):
        port = rng.randrange(20000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_perf_analyzer():
    """perf_analyzer from $PERF_ANALYZER, PATH, or where scripts/setup-server.sh puts it."""
    for cand in (os.environ.get("PERF_ANALYZER"), shutil.which("perf_analyzer"),
                 str(Path.home() / ".cache" / "protattn" / "perf_analyzer" / "perf_analyzer")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class Server:
    """One `protattn serve` process; stderr (JSON-lines logs) goes to a file."""

    START_ATTEMPTS = 5  # fresh ports each time another process took one first ("cannot bind")

    def __init__(self, repo, workdir, *extra):
        for attempt in range(self.START_ATTEMPTS):
            self.http_port = free_port()
            self.grpc_port = free_port()
            while self.grpc_port == self.http_port:
                self.grpc_port = free_port()
            self.log_path = Path(workdir) / f"server-{self.http_port}.log"
            self.cmd = [str(BINARY), "serve", "--models", str(repo), "--http-port", str(self.http_port),
                        "--grpc-port", str(self.grpc_port), *map(str, extra)]
            self.log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log)
            self.url = f"http://127.0.0.1:{self.http_port}"
            self.http_addr = f"127.0.0.1:{self.http_port}"
            self.grpc_addr = f"127.0.0.1:{self.grpc_port}"
            try:
                self.wait_ready()
                return
            except RuntimeError:
                lost_port = self.proc.poll() is not None and "cannot bind" in self.logs()
                if not lost_port or attempt + 1 == self.START_ATTEMPTS:
                    raise
                self.log.close()

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.logs()}")
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not up yet, or another process answers on the port
                pass
            time.sleep(0.05)  # poll interval, not a wait for readiness
        raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s: {self.logs()}")

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self):
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def metrics(self, headers=None):
        r = requests.get(self.url + "/metrics", headers=headers or {}, timeout=10)
        r.raise_for_status()
        return parse_metrics(r.text)

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def parse_metrics(text):
    """Prometheus text -> {'name{labels}': value} (labels as written by the server)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def wait_until(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def run_cli(*args):
    subprocess.run([str(BINARY), *map(str, args)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """A model repository: the example `attention` model and `attention_atoms` (mask atoms)."""
    d = tmp_path_factory.mktemp("models")
    shutil.copytree(ROOT / "models" / "attention", d / "attention")
    (d / "attention_atoms").mkdir()
    (d / "attention_atoms" / "config.json").write_text(json.dumps(
        {"backend": "protattn", "type": "attention",
         "parameters": {"cutoff": {"string_value": "6.0"}, "mask": {"string_value": "atoms"},
                        "order": {"string_value": "morton"}, "tile": {"string_value": "128"}}}))
    return d


def reference(tmp_path_factory, pdb, extra=(), seed=1):
    """Inputs and outputs of `protattn run` on a structure: coords (file order), q, k, v, o, lse."""
    d = tmp_path_factory.mktemp(Path(pdb).stem)
    run_cli("layout", pdb, "--export", d / "layout")
    run_cli("run", pdb, "--heads", HEADS, "--dim", DIM, "--seed", seed, "--out", d / "run", *extra)
    ref = {"coords": np.load(d / "layout" / "coords.npy").astype(np.float32)}
    for name in ("q", "k", "v", "o", "lse"):
        ref[name] = np.load(d / "run" / f"{name}.npy")
    assert ref["q"].dtype == np.float16 and ref["q"].shape == (HEADS, len(ref["coords"]), DIM)
    return ref


@pytest.fixture(scope="session")
def ubq(tmp_path_factory):
    return reference(tmp_path_factory, DATA / "1ubq.pdb")


@pytest.fixture(scope="session")
def ubi(tmp_path_factory):
    return reference(tmp_path_factory, DATA / "1ubi.pdb", seed=7)


@pytest.fixture(scope="session")
def ubq_atoms(tmp_path_factory):
    return reference(tmp_path_factory, DATA / "1ubq.pdb",
                     ("--mask", "atoms", "--cutoff", "6", "--order", "morton"))


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    s = Server(repo, tmp_path_factory.mktemp("srv"), "--max-queue-delay-ms", "5")
    yield s
    assert s.terminate() == 0


@pytest.fixture
def make_server(repo, tmp_path):
    started = []

    def make(*extra):
        s = Server(repo, tmp_path, *extra)
        started.append(s)
        return s

    yield make
    for s in started:
        s.terminate()


def http_inputs(mod, ref, binary=True, q=None):
    arrays = (ref["coords"], ref["q"] if q is None else q, ref["k"], ref["v"])
    inputs = []
    for name, a, dt in zip(("COORDS", "Q", "K", "V"), arrays, ("FP32", "FP16", "FP16", "FP16")):
        i = mod.InferInput(name, list(a.shape), dt)
        if binary is None:
            i.set_data_from_numpy(a)
        else:
            i.set_data_from_numpy(a, binary_data=binary)
        inputs.append(i)
    return inputs


# atom_encoder: the weights are generated here (never committed) with `protattn init-model`:
# untrained, seeded random weights, the shipped models/atom_encoder/config.json next to them.
ENCODER_SEED = 3


@pytest.fixture(scope="session")
def enc_repo(tmp_path_factory):
    """A repository serving `atom_encoder` (generated weights) next to `attention`."""
    d = tmp_path_factory.mktemp("enc_models")
    shutil.copytree(ROOT / "models" / "attention", d / "attention")
    shutil.copytree(ROOT / "models" / "atom_encoder", d / "atom_encoder",
                    ignore=shutil.ignore_patterns("*.safetensors"))
    run_cli("init-model", d / "atom_encoder" / "model.safetensors", "--seed", ENCODER_SEED)
    return d


def embed_reference(tmp_path_factory, repo, pdb):
    """Inputs and output of `protattn embed` (cpu engine) on a structure with the served model:
    coords [N,3] f4, elements [N] i4, embedding [N,C] f2, all in file atom order."""
    d = tmp_path_factory.mktemp("embed-" + Path(pdb).stem)
    run_cli("embed", pdb, "--model", repo / "atom_encoder" / "model.safetensors",
            "--out", d / "embedding.npy", "--save-inputs", d)
    ref = {"coords": np.load(d / "coords.npy"), "elements": np.load(d / "elements.npy"),
           "embedding": np.load(d / "embedding.npy")}
    assert ref["embedding"].dtype == np.float16 and ref["elements"].dtype == np.int32
    return ref


@pytest.fixture(scope="session")
def enc_ubq(tmp_path_factory, enc_repo):
    return embed_reference(tmp_path_factory, enc_repo, DATA / "1ubq.pdb")


@pytest.fixture(scope="session")
def enc_ubi(tmp_path_factory, enc_repo):
    return embed_reference(tmp_path_factory, enc_repo, DATA / "1ubi.pdb")


@pytest.fixture(scope="module")
def enc_server(enc_repo, tmp_path_factory):
    s = Server(enc_repo, tmp_path_factory.mktemp("enc-srv"), "--max-queue-delay-ms", "5")
    yield s
    assert s.terminate() == 0


def encoder_inputs(mod, ref, binary=True):
    inputs = []
    for name, a, dt in (("COORDS", ref["coords"], "FP32"), ("ELEMENTS", ref["elements"], "INT32")):
        i = mod.InferInput(name, list(a.shape), dt)
        if binary is None:
            i.set_data_from_numpy(a)
        else:
            i.set_data_from_numpy(a, binary_data=binary)
        inputs.append(i)
    return inputs
