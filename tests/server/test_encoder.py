"""The `atom_encoder` model served next to `attention`: outputs equal to `protattn embed` on the
same structure and weights (HTTP binary and JSON, gRPC, alone and in ragged batches), model
metadata, refusals with 400 / INVALID_ARGUMENT, metrics, and the missing-weights error."""
import concurrent.futures as cf
import json
import shutil
import subprocess

import numpy as np
import pytest
import requests
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from conftest import BINARY, ROOT, Server, encoder_inputs, free_port
from test_errors import assert_400, curl


def embed(mod, addr, ref, binary=True):
    client = mod.InferenceServerClient(addr)
    if mod is th:
        outs = [th.InferRequestedOutput("EMBEDDING", binary_data=binary)]
        r = client.infer("atom_encoder", encoder_inputs(th, ref, binary=binary), outputs=outs)
    else:
        r = client.infer("atom_encoder", encoder_inputs(tg, ref, binary=None))
    return r.as_numpy("EMBEDDING")


def check_same(e, ref):
    # Same weights, same engine (cpu), same inputs: the served embedding is `protattn embed`'s,
    # bit for bit (the fp16 values, not merely close).
    assert e.dtype == np.float16 and e.shape == ref["embedding"].shape
    assert np.array_equal(e.view(np.uint16), ref["embedding"].view(np.uint16))


def test_metadata_says_untrained(enc_server):
    m = requests.get(enc_server.url + "/v2/models/atom_encoder", timeout=10).json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in m["inputs"]] == [
        ("COORDS", "FP32", [-1, 3]), ("ELEMENTS", "INT32", [-1])]
    assert m["outputs"] == [{"name": "EMBEDDING", "datatype": "FP16", "shape": [-1, 128]}]
    assert m["parameters"]["trained"] is False and "untrained" in m["parameters"]["note"]
    cfg = requests.get(enc_server.url + "/v2/models/atom_encoder/config", timeout=10).json()
    assert cfg["parameters"]["trained"]["string_value"] == "false"
    assert cfg["parameters"]["mask"]["string_value"] == "atoms"  # from the weights file
    g = tg.InferenceServerClient(enc_server.grpc_addr).get_model_config("atom_encoder", as_json=True)
    assert g["config"]["parameters"]["trained"]["string_value"] == "false"
    # The attention model is served as before, from the same repository.
    assert requests.get(enc_server.url + "/v2/models/attention", timeout=10).status_code == 200


def test_http_binary_equals_embed(enc_server, enc_ubq):
    check_same(embed(th, enc_server.http_addr, enc_ubq), enc_ubq)


def test_http_json_equals_embed(enc_server, enc_ubq):
    check_same(embed(th, enc_server.http_addr, enc_ubq, binary=False), enc_ubq)


def test_grpc_equals_embed(enc_server, enc_ubq):
    check_same(embed(tg, enc_server.grpc_addr, enc_ubq), enc_ubq)


def test_concurrent_requests_are_batched_and_exact(enc_repo, enc_ubq, enc_ubi, tmp_path):
    # A long queue delay gathers two structures into ragged batches (one forward each batch);
    # each answer must still be its own structure's `protattn embed` output.
    s = Server(enc_repo, tmp_path, "--batch-wait", "full", "--max-queue-delay-ms", "400")
    try:
        jobs = [(th, s.http_addr, enc_ubq), (tg, s.grpc_addr, enc_ubi), (th, s.http_addr, enc_ubi),
                (tg, s.grpc_addr, enc_ubq)]
        with cf.ThreadPoolExecutor(len(jobs)) as ex:
            futures = [(ex.submit(embed, mod, addr, ref), ref) for mod, addr, ref in jobs]
            for f, ref in futures:
                check_same(f.result(timeout=120), ref)
        m = s.metrics()
        assert m["protattn_batch_requests_sum"] == len(jobs)
        assert m["protattn_batch_requests_count"] < len(jobs), "no two requests shared a forward"
        assert m['protattn_requests_total{model="atom_encoder",outcome="success"}'] == len(jobs)
    finally:
        assert s.terminate() == 0


def post_json(server, inputs):
    return curl(f"{server.url}/v2/models/atom_encoder/infer",
                body=json.dumps({"inputs": inputs}).encode())


def tensors(coords, elements, elements_type="INT32"):
    return [{"name": "COORDS", "datatype": "FP32", "shape": list(coords.shape),
             "data": coords.ravel().tolist()},
            {"name": "ELEMENTS", "datatype": elements_type, "shape": list(elements.shape),
             "data": elements.ravel().tolist()}]


def test_bad_requests(enc_server, enc_ubq):
    before = enc_server.metrics()
    xyz, z = enc_ubq["coords"], enc_ubq["elements"]
    bad_z = z.copy()
    bad_z[7] = 119
    assert_400(post_json(enc_server, tensors(xyz, bad_z)), "ELEMENTS", "atom 7", "119", "0..118")
    bad_z[7] = -1
    assert_400(post_json(enc_server, tensors(xyz, bad_z)), "atom 7", "-1")
    assert_400(post_json(enc_server, tensors(xyz, z[:-1])), "ELEMENTS", "shape", "expected [602]")
    assert_400(post_json(enc_server, tensors(xyz[:, :2], z)), "COORDS", "expected [N,3]")
    assert_400(post_json(enc_server, tensors(xyz, z.astype(np.float32), "FP32")),
               "ELEMENTS", "datatype FP32", "INT32")
    assert_400(post_json(enc_server, tensors(xyz, z)[:1]), "missing input 'ELEMENTS'")
    assert_400(post_json(enc_server, tensors(xyz, z) + [
        {"name": "Q", "datatype": "FP16", "shape": [1], "data": [0]}]), "unknown input 'Q'",
        "COORDS, ELEMENTS")
    # NaN coordinates (JSON has no NaN: binary tensors).
    nan_xyz = xyz.copy()
    nan_xyz[5, 1] = np.nan
    with pytest.raises(InferenceServerException) as e:
        embed(th, enc_server.http_addr, {"coords": nan_xyz, "elements": z})
    assert "COORDS" in e.value.message() and e.value.status() == "400"
    with pytest.raises(InferenceServerException) as e:
        embed(tg, enc_server.grpc_addr, {"coords": xyz, "elements": bad_z})
    assert "INVALID_ARGUMENT" in str(e.value.status()) and "atomic number -1" in e.value.message()
    # Still serving, and the refusals were counted for this model.
    check_same(embed(th, enc_server.http_addr, enc_ubq), enc_ubq)
    m = enc_server.metrics()
    key = 'protattn_requests_total{model="atom_encoder",outcome="invalid"}'
    assert m[key] - before.get(key, 0) == 9
    ok = 'protattn_requests_total{model="atom_encoder",outcome="success"}'
    assert m[ok] - before.get(ok, 0) == 1


def test_request_atom_limit(enc_repo, enc_ubq, tmp_path):
    s = Server(enc_repo, tmp_path, "--max-request-atoms", "500")
    try:
        with pytest.raises(InferenceServerException) as e:
            embed(th, s.http_addr, enc_ubq)
        assert "602 atoms, allowed 1..500" in e.value.message()
    finally:
        assert s.terminate() == 0


def test_debug_batch_lines_carry_the_parts(enc_repo, enc_ubq, tmp_path):
    # At --log-level debug an atom_encoder batch writes where its time went; the parts are
    # non-negative and fit in the batch's compute time, and the answer is unchanged.
    s = Server(enc_repo, tmp_path, "--log-level", "debug")
    try:
        check_same(embed(th, s.http_addr, enc_ubq), enc_ubq)
    finally:
        assert s.terminate() == 0
    batches = [e for e in s.log_events() if e.get("event") == "batch" and e.get("model") == "atom_encoder"]
    assert len(batches) == 1
    b = batches[0]
    assert b["ok"] and b["requests"] == 1 and b["atoms"] == len(enc_ubq["elements"])
    parts = [b[k] for k in ("layouts_ms", "plan_ms", "launch_ms", "finish_ms")]
    assert all(p >= 0 for p in parts)
    assert sum(parts) <= b["compute_ms"] * 1.01 + 0.01
    assert b["launch_ms"] > 0  # the CPU forward runs inside run()


def test_missing_weights_is_a_clear_error(tmp_path):
    shutil.copytree(ROOT / "models" / "atom_encoder", tmp_path / "atom_encoder",
                    ignore=shutil.ignore_patterns("*.safetensors"))
    p = subprocess.run([str(BINARY), "serve", "--models", str(tmp_path), "--http-port",
                        str(free_port()), "--grpc-port", "-1"], capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode != 0
    assert "weights file" in err and "model.safetensors" in err and "is missing" in err, err
    assert "protattn init-model" in err, err
