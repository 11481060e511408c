"""The system shared-memory extension (`serve --allow-shared-memory`): regions registered,
listed and unregistered over HTTP and gRPC with Triton's own clients; inputs read from and the
embedding written to shared memory give `protattn embed`'s bits; every misuse is refused with a
message that names the region or tensor; without the switch nothing can be registered."""
import uuid

import numpy as np
import pytest
import requests
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import Server


@pytest.fixture(scope="module")
def shm_server(enc_repo, tmp_path_factory):
    s = Server(enc_repo, tmp_path_factory.mktemp("shm-srv"), "--allow-shared-memory", "--max-queue-delay-ms", "5")
    yield s
    assert s.terminate() == 0


class Regions:
    """Shared-memory objects made for one test, unregistered and destroyed afterwards."""

    def __init__(self, client):
        self.client, self.handles = client, []

    def make(self, name, size, register=True, offset=0):
        key = f"/protattn-test-{uuid.uuid4().hex[:12]}"
        h = shm.create_shared_memory_region(name, key, size)
        self.handles.append(h)
        if register:
            self.client.register_system_shared_memory(name, key, size - offset, offset=offset)
        return h, key

    def close(self):
        try:
            self.client.unregister_system_shared_memory()
        finally:
            for h in self.handles:
                shm.destroy_shared_memory_region(h)


@pytest.fixture(params=["http", "grpc"])
def client(request, shm_server):
    mod = th if request.param == "http" else tg
    addr = shm_server.http_addr if mod is th else shm_server.grpc_addr
    c = mod.InferenceServerClient(addr)
    regions = Regions(c)
    yield mod, c, regions
    regions.close()


def shm_inputs(mod, region, coords, elements, base=0):
    a = mod.InferInput("COORDS", list(coords.shape), "FP32")
    a.set_shared_memory(region, coords.nbytes, offset=base)
    b = mod.InferInput("ELEMENTS", list(elements.shape), "INT32")
    b.set_shared_memory(region, elements.nbytes, offset=base + coords.nbytes)
    return [a, b]


def test_metadata_lists_the_extension(client):
    mod, c, _ = client
    meta = c.get_server_metadata()
    ext = meta["extensions"] if mod is th else list(meta.extensions)
    assert "system_shared_memory" in ext


def test_inputs_and_output_in_shared_memory_equal_embed(client, enc_ubq):
    mod, c, regions = client
    coords, elements, ref = enc_ubq["coords"], enc_ubq["elements"], enc_ubq["embedding"]
    base = 24  # the inputs start inside the region, not at its first byte
    hin, _ = regions.make("in", base + coords.nbytes + elements.nbytes)
    shm.set_shared_memory_region(hin, [coords, elements], offset=base)
    out_bytes = ref.nbytes
    hout, _ = regions.make("out", out_bytes + 4096)
    shm.set_shared_memory_region(hout, [np.full(out_bytes // 2, 0x7e00, dtype=np.uint16)])  # poisoned: NaN
    o = mod.InferRequestedOutput("EMBEDDING")
    o.set_shared_memory("out", out_bytes + 4096)
    r = c.infer("atom_encoder", shm_inputs(mod, "in", coords, elements, base), outputs=[o])
    meta = r.get_output("EMBEDDING")
    params = meta["parameters"] if mod is th else {k: v for k, v in meta.parameters.items()}
    if mod is th:
        assert params == {"shared_memory_region": "out", "shared_memory_byte_size": out_bytes}
    else:
        assert params["shared_memory_region"].string_param == "out"
        assert params["shared_memory_byte_size"].int64_param == out_bytes
    got = shm.get_contents_as_numpy(hout, np.float16, list(ref.shape))
    assert np.array_equal(got.view(np.uint16), ref.view(np.uint16))


def test_output_only_in_shared_memory(client, enc_ubq):
    mod, c, regions = client
    ref = enc_ubq["embedding"]
    hout, _ = regions.make("out_only", ref.nbytes)
    inputs = []
    for name, a, dt in (("COORDS", enc_ubq["coords"], "FP32"), ("ELEMENTS", enc_ubq["elements"], "INT32")):
        i = mod.InferInput(name, list(a.shape), dt)
        i.set_data_from_numpy(a)
        inputs.append(i)
    o = mod.InferRequestedOutput("EMBEDDING")
    o.set_shared_memory("out_only", ref.nbytes)
    c.infer("atom_encoder", inputs, outputs=[o])
    got = shm.get_contents_as_numpy(hout, np.float16, list(ref.shape))
    assert np.array_equal(got.view(np.uint16), ref.view(np.uint16))


def test_status_and_unregister(client):
    mod, c, regions = client
    _, key_a = regions.make("a", 4096)
    _, key_b = regions.make("b", 8192, offset=4096)
    st = c.get_system_shared_memory_status()
    if mod is th:
        got = {r["name"]: (r["key"], int(r["offset"]), int(r["byte_size"])) for r in st}
    else:
        got = {n: (r.key, r.offset, r.byte_size) for n, r in st.regions.items()}
    assert got == {"a": (key_a, 0, 4096), "b": (key_b, 4096, 4096)}
    c.unregister_system_shared_memory("a")
    st = c.get_system_shared_memory_status()
    names = [r["name"] for r in st] if mod is th else list(st.regions)
    assert names == ["b"]
    c.unregister_system_shared_memory()
    st = c.get_system_shared_memory_status()
    assert (st == []) if mod is th else (len(st.regions) == 0)


def refused(fn, *words):
    with pytest.raises(InferenceServerException) as e:
        fn()
    for w in words:
        assert w in str(e.value), str(e.value)


def test_misuse_is_refused(client, enc_ubq):
    mod, c, regions = client
    coords, elements = enc_ubq["coords"], enc_ubq["elements"]
    _, key = regions.make("r", 1024)
    refused(lambda: c.register_system_shared_memory("r", key, 1024), "'r' is already registered")
    refused(lambda: c.register_system_shared_memory("r2", "/protattn-no-such-key", 64), "cannot open key")
    refused(lambda: c.register_system_shared_memory("r3", key, 1024, offset=8), "passes the end of key")
    refused(lambda: c.unregister_system_shared_memory("nope"), "'nope' is not registered")
    refused(lambda: c.get_system_shared_memory_status("nope"), "'nope' is not registered")
    # An input from an unknown region, or past the end of a known one.
    refused(lambda: c.infer("atom_encoder", shm_inputs(mod, "ghost", coords, elements)),
            "input 'COORDS'", "'ghost' is not registered")
    refused(lambda: c.infer("atom_encoder", shm_inputs(mod, "r", coords, elements)),
            "input 'COORDS'", "passes the end of shared memory region 'r'")
    refused(lambda: c.infer("atom_encoder", shm_inputs(mod, "", coords, elements)),
            "input 'COORDS'", "shared_memory_region is empty")
    # An output region too small for the embedding.
    i = []
    for name, a, dt in (("COORDS", coords, "FP32"), ("ELEMENTS", elements, "INT32")):
        t = mod.InferInput(name, list(a.shape), dt)
        t.set_data_from_numpy(a)
        i.append(t)
    o = mod.InferRequestedOutput("EMBEDDING")
    o.set_shared_memory("r", 1024)
    refused(lambda: c.infer("atom_encoder", i, outputs=[o]), "output 'EMBEDDING'", "do not fit in the 1024")


def test_off_by_default(enc_server):
    c = th.InferenceServerClient(enc_server.http_addr)
    assert "system_shared_memory" not in c.get_server_metadata()["extensions"]
    refused(lambda: c.register_system_shared_memory("x", "/protattn-any", 64), "serve --allow-shared-memory")
    g = tg.InferenceServerClient(enc_server.grpc_addr)
    refused(lambda: g.register_system_shared_memory("x", "/protattn-any", 64), "serve --allow-shared-memory")
    r = requests.get(enc_server.url + "/v2/systemsharedmemory/status", timeout=10)
    assert r.status_code == 400 and "--allow-shared-memory" in r.json()["error"]


def test_ready_log_says_shared_memory_is_on(shm_server, enc_server):
    on = [e for e in shm_server.log_events() if e.get("event") == "ready"]
    off = [e for e in enc_server.log_events() if e.get("event") == "ready"]
    assert on and on[0]["shared_memory"] is True
    assert off and off[0]["shared_memory"] is False
