"""KServe v2 over HTTP and gRPC with tritonclient: metadata, config, and outputs equal to
`protattn run` on the same inputs, alone, batched, and with different structures in one batch."""
import concurrent.futures as cf

import numpy as np
import requests
import tritonclient.grpc as tg
import tritonclient.http as th

from conftest import http_inputs


def infer(mod, addr, ref, model="attention", lse=True, binary=True):
    client = mod.InferenceServerClient(addr)
    if mod is th:
        outs = [th.InferRequestedOutput("O", binary_data=binary)]
        if lse:
            outs.append(th.InferRequestedOutput("LSE", binary_data=binary))
        inputs = http_inputs(th, ref, binary=binary)
    else:
        outs = [tg.InferRequestedOutput("O")] + ([tg.InferRequestedOutput("LSE")] if lse else [])
        inputs = http_inputs(tg, ref, binary=None)
    r = client.infer(model, inputs, outputs=outs)
    return r.as_numpy("O"), (r.as_numpy("LSE") if lse else None)


def check_same(o, lse, ref):
    # Same engine, same layout, same inputs: the served numbers are the CLI's, bit for bit.
    assert o.dtype == np.float16 and o.shape == ref["o"].shape
    assert np.array_equal(o, ref["o"])
    if lse is not None:
        assert lse.dtype == np.float32 and np.array_equal(lse, ref["lse"])


def test_health_and_metadata_http(server):
    c = th.InferenceServerClient(server.http_addr)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("attention") and not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "protattn" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("attention")
    assert [i["name"] for i in m["inputs"]] == ["COORDS", "Q", "K", "V"]
    assert m["inputs"][0]["datatype"] == "FP32" and m["inputs"][1]["datatype"] == "FP16"
    cfg = c.get_model_config("attention")
    assert cfg["max_batch_size"] == 0 and cfg["input"][0]["dims"] == [-1, 3]
    assert cfg["parameters"]["mask"]["string_value"] == "tiles"
    stats = c.get_inference_statistics("attention")
    assert stats["model_stats"][0]["name"] == "attention"


def test_health_and_metadata_grpc(server):
    c = tg.InferenceServerClient(server.grpc_addr)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("attention")
    assert c.get_server_metadata().name == "protattn"
    m = c.get_model_metadata("attention")
    assert [o.name for o in m.outputs] == ["O", "LSE"]
    cfg = c.get_model_config("attention").config
    assert cfg.name == "attention" and list(cfg.input[0].dims) == [-1, 3]
    assert cfg.parameters["cutoff"].string_value == "8"
    assert c.get_inference_statistics("attention").model_stats[0].name == "attention"


def test_http_binary_equals_cli(server, ubq):
    check_same(*infer(th, server.http_addr, ubq), ubq)


def test_http_json_equals_cli(server, ubq):
    check_same(*infer(th, server.http_addr, ubq, binary=False), ubq)


def test_grpc_equals_cli(server, ubq):
    check_same(*infer(tg, server.grpc_addr, ubq), ubq)


def test_default_output_is_o_only(server, ubq):
    body = {"inputs": [
        {"name": "COORDS", "datatype": "FP32", "shape": list(ubq["coords"].shape),
         "data": ubq["coords"].ravel().tolist()},
        *({"name": n, "datatype": "FP16", "shape": list(ubq[n.lower()].shape),
           "data": ubq[n.lower()].astype(np.float32).ravel().tolist()} for n in "QKV")]}
    r = requests.post(server.url + "/v2/models/attention/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["O"]
    o = np.array(outs[0]["data"], dtype=np.float32).astype(np.float16).reshape(outs[0]["shape"])
    assert np.array_equal(o, ubq["o"])
    assert r.headers.get("X-Request-Id")


def test_other_model_config_atoms_mask(server, ubq_atoms):
    check_same(*infer(th, server.http_addr, ubq_atoms, model="attention_atoms"), ubq_atoms)


def test_concurrent_requests_are_batched_and_exact(make_server, ubq, ubi):
    # A long queue delay gathers the concurrent requests of two different structures into
    # ragged batches; each answer must still be its own structure's CLI output.
    s = make_server("--batch-wait", "full", "--max-queue-delay-ms", "400")
    before = s.metrics()
    jobs = [(th, s.http_addr, ubq), (tg, s.grpc_addr, ubi), (th, s.http_addr, ubi),
            (tg, s.grpc_addr, ubq), (th, s.http_addr, ubq), (tg, s.grpc_addr, ubi)]
    with cf.ThreadPoolExecutor(len(jobs)) as ex:
        futures = [(ex.submit(infer, mod, addr, ref), ref) for mod, addr, ref in jobs]
        for f, ref in futures:
            check_same(*f.result(timeout=120), ref)
    m = s.metrics()
    batches = m["protattn_batch_requests_count"] - before.get("protattn_batch_requests_count", 0)
    requests_run = m["protattn_batch_requests_sum"] - before.get("protattn_batch_requests_sum", 0)
    assert requests_run == len(jobs)
    assert batches < len(jobs), "no two requests shared an engine run"
    assert m['protattn_requests_total{model="attention",outcome="success"}'] == len(jobs)
