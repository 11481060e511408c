"""Bad requests get 400 / INVALID_ARGUMENT naming the problem and the server keeps serving;
limits, API key, deadlines and client disconnects; /metrics. Errors are probed with curl."""
import json
import socket
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from conftest import http_inputs, wait_until


def curl(url, *args, body=None):
    """(status, body text) of one curl call; the body is sent from stdin when given."""
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args, url]
    if body is not None:
        cmd[1:1] = ["--data-binary", "@-", "-H", "Content-Type: application/json"]
    p = subprocess.run(cmd, input=body, capture_output=True, check=True, timeout=60)
    text, _, code = p.stdout.decode(errors="replace").rpartition("\n")
    return int(code), text


def body(ref, **override):
    tensors = {
        "COORDS": ("FP32", list(ref["coords"].shape), ref["coords"].ravel().tolist()),
        **{n: ("FP16", list(ref[n.lower()].shape), ref[n.lower()].astype(float).ravel().tolist())
           for n in "QKV"}}
    tensors.update(override)
    return json.dumps({"inputs": [{"name": n, "datatype": t, "shape": s, "data": d}
                                  for n, (t, s, d) in tensors.items()]}).encode()


def post(server, payload, model="attention", *args):
    return curl(f"{server.url}/v2/models/{model}/infer", *args, body=payload)


def assert_400(status_text, *words):
    status, text = status_text
    assert status == 400, text
    msg = json.loads(text)["error"]
    for w in words:
        assert w in msg, msg


def test_bad_requests_http(server, ubq):
    n = len(ubq["coords"])
    assert_400(post(server, b"{not json"), "malformed JSON")
    assert_400(post(server, b"[1,2]"), "JSON object")
    assert_400(post(server, body(ubq), "nope"), "unknown model", "nope")
    assert_400(post(server, body(ubq, Q=("FP16", [2, n - 1, 64], [0.0] * (2 * (n - 1) * 64)))),
               "input 'Q'", "shape")
    assert_400(post(server, body(ubq, Q=("FP32", [2, n, 64], [0.0] * (2 * n * 64)))),
               "input 'Q'", "datatype FP32", "FP16")
    coords = ubq["coords"].copy()
    coords[5, 1] = np.nan
    # JSON has no NaN: send the coordinates as binary data instead.
    head = {"inputs": [
        {"name": "COORDS", "datatype": "FP32", "shape": [n, 3],
         "parameters": {"binary_data_size": coords.nbytes}},
        *({"name": x, "datatype": "FP16", "shape": list(ubq[x.lower()].shape),
           "parameters": {"binary_data_size": ubq[x.lower()].nbytes}} for x in "QKV")]}
    hb = json.dumps(head).encode()
    payload = hb + coords.tobytes() + b"".join(ubq[x].tobytes() for x in "qkv")
    assert_400(post(server, payload, "attention", "-H", f"Inference-Header-Content-Length: {len(hb)}"),
               "COORDS")
    assert_400(post(server, payload[:-10], "attention", "-H",
                    f"Inference-Header-Content-Length: {len(hb)}"), "runs past the body")
    assert_400(post(server, body(ubq, COORDS=("FP32", [n, 3], [1.0] * (n * 3 - 1)))),
               "COORDS", "data elements")
    assert_400(post(server, body(ubq, EXTRA=("FP32", [1], [1.0]))), "unknown input 'EXTRA'")
    assert_400(post(server, body(ubq, Q=("FP16", [2, n, -64], []))), "shape")
    assert_400(post(server, body(ubq, Q=("FP99", [1], [1.0]))), "datatype")
    # Still serving, and the metrics counted the refusals.
    c = th.InferenceServerClient(server.http_addr)
    r = c.infer("attention", http_inputs(th, ubq))
    assert np.array_equal(r.as_numpy("O"), ubq["o"])
    m = server.metrics()
    assert m['protattn_requests_total{model="attention",outcome="invalid"}'] >= 8
    assert m['protattn_requests_total{model="unknown",outcome="invalid"}'] >= 1


def test_bad_requests_grpc(server, ubq):
    c = tg.InferenceServerClient(server.grpc_addr)
    with pytest.raises(InferenceServerException) as e:
        c.infer("nope", http_inputs(tg, ubq, binary=None))
    assert "INVALID_ARGUMENT" in str(e.value.status()) and "unknown model" in e.value.message()
    bad = http_inputs(tg, ubq, binary=None)
    bad[1] = tg.InferInput("Q", list(ubq["q"].shape), "FP32")
    bad[1].set_data_from_numpy(ubq["q"].astype(np.float32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("attention", bad)
    assert "INVALID_ARGUMENT" in str(e.value.status()) and "datatype FP32" in e.value.message()
    assert np.array_equal(c.infer("attention", http_inputs(tg, ubq, binary=None)).as_numpy("O"), ubq["o"])


def test_limits(make_server, ubq):
    s = make_server("--max-body-mb", "1", "--max-request-atoms", "500")
    assert post(s, b"x" * 2_000_000)[0] == 413
    c = th.InferenceServerClient(s.http_addr)
    with pytest.raises(InferenceServerException) as e:
        c.infer("attention", http_inputs(th, ubq))
    assert "602 atoms, allowed 1..500" in e.value.message()
    small = {"coords": ubq["coords"][:400], **{x: ubq[x][:, :400] for x in "qkv"}}
    assert c.infer("attention", http_inputs(th, small)).as_numpy("O").shape == (2, 400, 64)


def test_api_key(make_server, ubq):
    s = make_server("--api-key", "s3cret")
    assert curl(s.url + "/v2/health/ready")[0] == 200
    assert curl(s.url + "/v2/health/live")[0] == 200
    assert curl(s.url + "/metrics")[0] == 401
    assert curl(s.url + "/v2/models/attention")[0] == 401
    assert curl(s.url + "/metrics", "-H", "Authorization: Bearer s3cret")[0] == 200
    assert curl(s.url + "/v2/models/attention", "-H", "X-API-Key: s3cret")[0] == 200
    assert post(s, body(ubq))[0] == 401
    assert post(s, body(ubq), "attention", "-H", "Authorization: Bearer wrong")[0] == 401
    assert post(s, body(ubq), "attention", "-H", "Authorization: Bearer s3cret")[0] == 200
    g = tg.InferenceServerClient(s.grpc_addr)
    assert g.is_server_ready()
    with pytest.raises(InferenceServerException) as e:
        g.infer("attention", http_inputs(tg, ubq, binary=None))
    assert "UNAUTHENTICATED" in str(e.value.status())
    r = g.infer("attention", http_inputs(tg, ubq, binary=None), headers={"authorization": "Bearer s3cret"})
    assert np.array_equal(r.as_numpy("O"), ubq["o"])


def test_deadline(make_server, ubq):
    # The batcher waits 3 s for company; a 200 ms deadline expires first.
    s = make_server("--batch-wait", "full", "--max-queue-delay-ms", "3000")
    status, text = post(s, body(ubq), "attention", "-H", "Request-Timeout-Ms: 200")
    assert status == 504, text
    c = tg.InferenceServerClient(s.grpc_addr)
    with pytest.raises(InferenceServerException) as e:
        c.infer("attention", http_inputs(tg, ubq, binary=None), client_timeout=0.3)
    assert "DEADLINE_EXCEEDED" in str(e.value.status())
    wait_until(lambda: s.metrics().get('protattn_requests_total{model="attention",outcome="timeout"}', 0) >= 1,
               what="timeout counted")


def test_client_disconnect_drops_the_work(make_server, ubq):
    s = make_server("--batch-wait", "full", "--max-queue-delay-ms", "1500")
    payload = body(ubq)
    with socket.create_connection(("127.0.0.1", s.http_port)) as sock:
        sock.sendall(b"POST /v2/models/attention/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: " +
                     str(len(payload)).encode() + b"\r\n\r\n" + payload)
        wait_until(lambda: s.metrics()["protattn_requests_inflight"] == 1, what="request queued")
    wait_until(lambda: s.metrics().get('protattn_requests_total{model="attention",outcome="cancelled"}', 0) == 1,
               what="disconnect noticed")
    m = s.metrics()
    assert m.get("protattn_batches_total", 0) == 0, "abandoned work reached the engine"
    assert m["protattn_requests_inflight"] == 0


def test_metrics_format(server, ubq):
    th.InferenceServerClient(server.http_addr).infer("attention", http_inputs(th, ubq))
    status, text = curl(server.url + "/metrics")
    assert status == 200
    for name in ("protattn_requests_total", "protattn_request_duration_seconds_bucket",
                 "protattn_queue_duration_seconds_bucket", "protattn_batch_requests_bucket",
                 "protattn_batch_atoms_bucket", "protattn_engine_compute_seconds_bucket",
                 "protattn_queue_depth", "protattn_requests_inflight"):
        assert f"\n{name}" in text, name
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2, line
    logs = [e for e in server.log_events() if e.get("event") == "request"]
    assert logs and all("request_id" in e and "outcome" in e for e in logs)


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_port_in_use_is_an_error(server, repo, which):
    # A second server on a port the first one holds must fail naming the port, not share it.
    from conftest import BINARY, free_port
    ports = {"http": (server.http_port, free_port()), "grpc": (free_port(), server.grpc_port)}[which]
    p = subprocess.run([str(BINARY), "serve", "--models", str(repo), "--http-port", str(ports[0]),
                        "--grpc-port", str(ports[1])], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "cannot bind" in p.stderr and str(ports[0] if which == "http" else ports[1]) in p.stderr, p.stderr
    assert server.proc.poll() is None
