"""`hpd-gguf serve` over real HTTP on 127.0.0.1, with the real tiny model."""
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from hpd_gguf import Result
from tests.conftest import (MAX_VALUE_TOKENS, ROOT, Tracer, assert_matches_sequential, free_but_kept_heads,
                            kept_head_seqs, raw_extractor)
from tests.test_jobs import kv_in_use, wait_until_idle

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
server_module = pytest.importorskip("hpd_gguf.server")
Limits = server_module.Limits


@contextlib.contextmanager
def running(extractor, limits=None, api_key=None, allow_origins=()):
    """The app on a free port of 127.0.0.1, served by uvicorn in a thread; yields its URL."""
    app = server_module.create_app(extractor, "smollm2-135m", api_key=api_key, limits=limits,
                                   allow_origins=allow_origins)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.time() + 60  # it starts in tenths of a second, but a loaded machine is slower
        while not server.started and thread.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        extractor.close()


@pytest.fixture(scope="module")
def served(model):
    extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS, max_queued=200)
    limits = Limits(max_documents=50, max_attributes=40, max_body_bytes=100_000)
    with running(extractor, limits) as url:
        yield url, extractor


def _metric(url, name) -> float:
    samples = [line.split() for line in httpx.get(f"{url}/metrics").text.splitlines() if not line.startswith("#")]
    return float(dict(samples)[name])


def _post(url, body, **kwargs):
    return httpx.post(f"{url}/v1/extract", json=body, timeout=120, **kwargs)


def test_health_models_and_metrics(served):
    url, _ = served
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "smollm2-135m"
    _post(url, {"documents": [{"id": "m", "text": "Crocs Classic Clog, Navy"}], "attributes": ["Color"]})
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("hpd_documents_total", "hpd_values_total", "hpd_tokens_per_second", "hpd_queue_depth",
                 "hpd_resident_documents"):
        assert name in metrics
    assert _metric(url, "hpd_documents_total") >= 1 and _metric(url, "hpd_tokens_per_second") > 0
    body = httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/extract"]["post"]["requestBody"]  # what /docs shows
    schema = body["content"]["application/json"]["schema"]
    assert {"id", "text", "category", "attributes"} <= set(schema["properties"]["documents"]["items"]["properties"])
    example = schema["example"]
    assert _post(url, example).json()["results"][0]["id"] == example["documents"][0]["id"]  # the example runs


def test_eight_concurrent_clients_get_the_batch_values(served, products, sequential_reference):
    url, extractor = served
    tracer = extractor.on_logits = Tracer()
    parts = [products[i::8] for i in range(8)]
    answers: dict[int, dict] = {}
    barrier = threading.Barrier(8)

    def client(i):
        barrier.wait()
        answers[i] = _post(url, {"documents": parts[i]}).json()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    extractor.on_logits = None
    results = []
    for i, part in enumerate(parts):
        assert [r["id"] for r in answers[i]["results"]] == [p["id"] for p in part]
        results += [Result(**r) for r in answers[i]["results"]]
    owner = {p["id"]: i for i, part in enumerate(parts) for p in part}
    assert any(len({owner[d] for d in ids}) > 1 for ids in tracer.decodes), "no decode served two clients"
    assert_matches_sequential(results, tracer.steps, sequential_reference)


def test_a_client_that_leaves_mid_stream_frees_its_cells(served, products):
    url, extractor = served
    engine = extractor.engine
    wait_until_idle(engine)
    idle = free_but_kept_heads(engine)
    done_before = engine.documents_done
    many = [dict(p, id=f"{c}-{p['id']}") for c in range(2) for p in products]
    with httpx.stream("POST", f"{url}/v1/extract", json={"documents": many, "stream": True}, timeout=120) as answer:
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        first = json.loads(next(answer.iter_lines()))
        assert first["id"] == many[0]["id"] and set(first["values"]) == set(products[0]["attributes"])
    wait_until_idle(engine)
    assert engine.documents_done - done_before < len(many)  # it stopped, it did not finish
    assert free_but_kept_heads(engine) == idle and kv_in_use(engine) == kept_head_seqs(engine)
    assert _metric(url, "hpd_resident_documents") == 0 and _metric(url, "hpd_queue_depth") == 0
    assert _metric(url, "hpd_free_sequence_ids") == engine.kv.free_seqs


def test_a_stream_gives_every_result_in_order(served, products):
    url, _ = served
    with httpx.stream("POST", f"{url}/v1/extract", json={"documents": products[:5], "stream": True},
                      timeout=120) as answer:
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    assert [r["id"] for r in lines] == [p["id"] for p in products[:5]]


BAD_REQUESTS = [
    (b"{not json", 400, None, None),
    ([{"id": "a", "text": "Red clog", "attributes": ["Color"]}], 422, None, None),  # the documents alone
    ({"documents": ["Red clog"]}, 422, 0, None),
    ({"documents": "t00"}, 422, None, "documents"),
    ({"documents": []}, 422, None, "documents"),
    ({"documents": [{"id": "a", "text": "Red clog", "attributes": []}]}, 422, 0, "attributes"),
    ({"documents": [{"id": "a", "text": "Red clog", "attributes": ["Color"]},
                    {"id": "b", "text": 5, "attributes": ["Color"]}]}, 422, 1, "text"),
    ({"documents": [{"id": "a", "text": "Red clog"}]}, 422, 0, "attributes"),
    ({"documents": [{"id": "a", "text": "x", "attributes": ["A"]}, {"id": "a", "text": "y", "attributes": ["A"]}]},
     422, 1, "id"),
    ({"documents": [{"id": "a", "text": "x", "attributes": ["A"]}], "stream": "yes"}, 422, None, "stream"),
    ({"documents": [{"id": "a", "text": "x"}], "attributes": []}, 422, None, "attributes"),
    ({"documents": [{"id": str(i), "text": "x", "attributes": ["A"]} for i in range(51)]}, 413, None, "documents"),
    ({"documents": [{"id": "a", "text": "x", "attributes": [f"A{i}" for i in range(41)]}]}, 413, 0, "attributes"),
    ({"documents": [{"id": "a", "text": "x" * 120_000, "attributes": ["A"]}]}, 413, None, None),
]


@pytest.mark.parametrize("body, status, document, field", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_that_names_the_place(served, products, body, status, document, field):
    url, _ = served
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(f"{url}/v1/extract", content=content, headers={"content-type": "application/json"},
                        timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["message"] and error.get("document") == document and error.get("field") == field
    assert _post(url, {"documents": products[:1]}).status_code == 200  # the server goes on


def test_a_body_or_a_document_of_another_shape_is_told_what_to_send(served):
    url, _ = served
    documents = [{"id": "a", "text": "Red clog", "attributes": ["Color"]}]
    assert _post(url, documents).json()["error"]["message"] == \
        'the body is an object: {"documents": [{"id": ..., "text": ...}, ...]}'
    assert _post(url, {"documents": ["Red clog"]}).json()["error"]["message"] == \
        'a document is an object: {"id": ..., "text": ...}'


def test_a_full_queue_answers_429(model, products):
    extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS, max_resident=2, max_queued=20)
    with running(extractor) as url:
        many = [dict(p, id=f"q{p['id']}") for p in products]
        with httpx.stream("POST", f"{url}/v1/extract", json={"documents": many, "stream": True}, timeout=120):
            refused = _post(url, {"documents": products[:5]})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert "queue is full" in refused.json()["error"]["message"]
        wait_until_idle(extractor.engine)
        assert _post(url, {"documents": products[:5]}).status_code == 200  # room again


def test_an_api_key_is_needed_off_loopback_and_checked_and_a_web_page_allowed_may_call(model, products):
    done = subprocess.run([sys.executable, "-m", "hpd_gguf", "serve", "smollm2-135m", "--host", "0.0.0.0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--api-key" in done.stderr
    done = subprocess.run([sys.executable, "-m", "hpd_gguf", "serve", "smollm2-135m", "--allow-origin", "localhost:3000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: --allow-origin localhost:3000: an origin is")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "hpd_gguf", "serve", "smollm2-135m", "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr == f"error: cannot listen on 127.0.0.1:{port} (Address already in " \
        "use): another server there? --port picks another\n"  # before the model loads, not after
    page, other = "http://localhost:3000", "https://elsewhere.example"
    with running(raw_extractor(model, max_value_tokens=2), api_key="s3cret", allow_origins=[page]) as url:
        assert _post(url, {"documents": products[:1]}).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200
        answer = _post(url, {"documents": products[:1]}, headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and answer.json()["results"][0]["id"] == "t00"
        for origin, allowed in [(page, True), (other, False)]:  # what a browser asks before a script's POST
            asked = httpx.options(f"{url}/v1/extract", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type"})
            assert (asked.status_code == 200) == allowed
            assert (asked.headers.get("access-control-allow-origin") == origin) == allowed
        answer = _post(url, {"documents": products[:1]}, headers={"Authorization": "Bearer s3cret", "Origin": page})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == page


def test_the_serve_command_answers_until_stopped(model_path, products):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "hpd_gguf", "serve", str(model_path), "--port", str(port),
                                "--max-value-tokens", "3"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        answer = _post(url, {"documents": products[:2]})
        assert answer.status_code == 200 and [r["id"] for r in answer.json()["results"]] == ["t00", "t01"]
    finally:
        process.terminate()
        process.wait(30)
