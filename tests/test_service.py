"""The rerank HTTP service: wire formats, limits, auth, health, metrics, cache tiers, shutdown.

In-process tests drive the FastAPI app through TestClient with the real default cross-encoder and
compare against ``CrossEncoder.score`` called directly. Tests marked ``integration`` talk to real
`redis-server` and `lrt-rerank serve` processes (tests/service_fixtures.py).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from lrt_rerank import CrossEncoder, ModelError
from lrt_rerank.commands.serve import register
from lrt_rerank.service.app import create_app
from lrt_rerank.service.served import resolve_model_dir
from lrt_rerank.service.settings import ServiceSettings
from lrt_rerank.rerank.tiers import KEY_PREFIX
from lrt_rerank.service.schemas import CohereRerankResponse, CohereResult
from prometheus_client.parser import text_string_to_metric_families
from service_fixtures import API_KEY, RedisServer, ServeProcess, wait_healthy

QUERY = "does vitamin D supplementation lower the risk of breast cancer?"
DOCS = [
    "Vitamin D status and breast cancer risk: a meta-analysis of prospective cohort studies.",
    "Statin use and breast cancer survival: a nationwide cohort study from Finland.",
    "The effect of dietary fibre on the gut microbiome of healthy adults.",
    "Serum 25-hydroxyvitamin D concentrations were inversely associated with breast cancer incidence.",
    "Coffee consumption and the risk of type 2 diabetes.",
    "Calcium and vitamin D supplements in postmenopausal women: a randomised trial of cancer outcomes.",
    "Air pollution exposure and childhood asthma in urban neighbourhoods.",
    "",
]


def calibrated(encoder: CrossEncoder, logits: np.ndarray) -> np.ndarray:
    """sigmoid(a * logit + b) with (a, b) read from the model's card.json, independently of lrt_rerank."""
    card = json.loads((encoder.model_dir / "card.json").read_text())
    a, b = card["calibration"]["a"], card["calibration"]["b"]
    return 1.0 / (1.0 + np.exp(-(a * logits.astype(np.float64) + b)))


def expected_ranking(encoder: CrossEncoder, query: str, docs: list[str]) -> tuple[list[int], np.ndarray]:
    """Indices best first (ties by index) and the raw logits, from the encoder called in-process."""
    logits = encoder.score(query, docs)
    order = sorted(range(len(docs)), key=lambda i: (-float(logits[i]), i))
    return order, logits


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(text: str, name: str, **labels: str) -> float:
    return metric_samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="session")
def encoder(cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(str(cross_encoder_dir))


@pytest.fixture
def make_client(encoder: CrossEncoder) -> Iterator[Callable[..., TestClient]]:
    """TestClients of apps serving the session encoder, ready; closed after the test."""
    clients: list[TestClient] = []

    def make(**settings: object) -> TestClient:
        client = TestClient(create_app(ServiceSettings(**settings), loader=lambda: encoder))  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        wait_healthy(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# --- wire formats ---------------------------------------------------------------------------


def test_first_stage_order_applies_the_cards_interpolation(client: TestClient, encoder: CrossEncoder) -> None:
    weight = encoder.card["interpolation"]["weight"]
    assert weight > 0  # the default model ships with a dev-chosen weight
    logits = encoder.score(QUERY, DOCS).astype(np.float64)
    prior = -np.log(np.arange(1, len(DOCS) + 1))  # independent of lrt_rerank.interpolation
    combined = (logits + weight * (prior - prior.mean()) / prior.std()).astype(np.float32)
    order = sorted(range(len(DOCS)), key=lambda i: (-combined[i], i))
    assert order != expected_ranking(encoder, QUERY, DOCS)[0]  # the prior matters on this list
    body = {"query": QUERY, "documents": DOCS, "raw_scores": True, "first_stage_order": True}
    cohere = client.post("/v1/rerank", json=body).json()
    assert [x["index"] for x in cohere["results"]] == order
    np.testing.assert_allclose([x["relevance_score"] for x in cohere["results"]], combined[order], rtol=1e-6)
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True, "first_stage_order": True}).json()
    assert [x["index"] for x in tei] == order
    # Without raw_scores the order is the same, and each score is the calibrated probability of the model's logit.
    default = client.post("/v1/rerank", json={**body, "raw_scores": False}).json()["results"]
    assert [x["index"] for x in default] == order
    np.testing.assert_allclose([x["relevance_score"] for x in default], calibrated(encoder, logits[order]), rtol=1e-6)


def test_cohere_rerank_matches_in_process_scoring(client: TestClient, encoder: CrossEncoder) -> None:
    order, logits = expected_ranking(encoder, QUERY, DOCS)
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["id"], str) and body["id"]
    results = body["results"]
    assert [x["index"] for x in results] == order
    np.testing.assert_allclose([x["relevance_score"] for x in results], calibrated(encoder, logits[order]), rtol=1e-6)
    assert all("document" not in x for x in results)
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= x <= 1.0 for x in scores)


def test_relevance_is_a_probability_that_separates_on_and_off_topic(client: TestClient, encoder: CrossEncoder) -> None:
    docs = ["cars", "Vitamin D supplementation raises serum 25-hydroxyvitamin D and may protect bone health."]
    results = client.post("/v1/rerank", json={"query": "vitamin d", "documents": docs}).json()["results"]
    relevance = {x["index"]: x["relevance_score"] for x in results}
    assert all(0.0 <= v <= 1.0 for v in relevance.values())
    assert relevance[0] < relevance[1]
    raw = client.post("/v1/rerank", json={"query": "vitamin d", "documents": docs, "raw_scores": True}).json()
    logits = encoder.score("vitamin d", docs)
    order = [x["index"] for x in raw["results"]]
    np.testing.assert_allclose([x["relevance_score"] for x in raw["results"]], logits[order], rtol=1e-6)
    assert min(x["relevance_score"] for x in raw["results"]) > 1.0  # bare logits, not probabilities


def test_cached_scores_are_calibrated_after_the_cache(client: TestClient, encoder: CrossEncoder) -> None:
    query = QUERY + " (cache)"
    order, logits = expected_ranking(encoder, query, DOCS)
    first = client.post("/rerank", json={"query": query, "texts": DOCS}).json()
    hits_before = metric(client.get("/metrics").text, "lrt_rerank_cache_hits_total", tier="local")
    second = client.post("/rerank", json={"query": query, "texts": DOCS}).json()
    assert metric(client.get("/metrics").text, "lrt_rerank_cache_hits_total", tier="local") == hits_before + len(DOCS)
    assert second == first
    np.testing.assert_allclose([x["score"] for x in second], calibrated(encoder, logits[order]), rtol=1e-6)


def test_raw_scores_are_the_logits(client: TestClient, encoder: CrossEncoder) -> None:
    order, logits = expected_ranking(encoder, QUERY, DOCS)
    cohere = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "raw_scores": True}).json()
    np.testing.assert_allclose([x["relevance_score"] for x in cohere["results"]], logits[order], rtol=1e-6)
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert [x["index"] for x in tei] == order
    np.testing.assert_allclose([x["score"] for x in tei], logits[order], rtol=1e-6)


def test_top_n_return_documents_and_object_documents(client: TestClient, encoder: CrossEncoder) -> None:
    order, _ = expected_ranking(encoder, QUERY, DOCS)
    documents = [{"text": d, "id": f"doc-{i}"} if i % 2 else d for i, d in enumerate(DOCS)]
    r = client.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": documents, "top_n": 3, "return_documents": True, "model": "rerank-v3.5"},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == order[:3]
    assert [x["document"] for x in results] == [{"text": DOCS[i]} for i in order[:3]]
    many = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 100}).json()["results"]
    assert len(many) == len(DOCS)


def test_tei_rerank_shape(client: TestClient, encoder: CrossEncoder) -> None:
    order, logits = expected_ranking(encoder, QUERY, DOCS)
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True, "truncate": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body] == order
    assert [x["text"] for x in body] == [DOCS[i] for i in order]
    np.testing.assert_allclose([x["score"] for x in body], calibrated(encoder, logits[order]), rtol=1e-6)
    plain = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert all(set(x) == {"index", "score"} for x in plain)


def test_scores_are_always_json_floats(client: TestClient) -> None:
    # OpenSearch's Cohere post-processing reads relevance_score as a double: `1` would break it.
    number = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
    for body in ({"query": QUERY, "documents": DOCS}, {"query": QUERY, "documents": DOCS, "raw_scores": True}):
        text = client.post("/v1/rerank", json=body).text
        found = re.findall(r'"relevance_score":\s*(' + number + ")", text)
        assert len(found) == len(DOCS)
        assert all(re.search(r"[.eE]", v) for v in found), found
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).text
    found = re.findall(r'"score":\s*(' + number + ")", tei)
    assert len(found) == len(DOCS) and all(re.search(r"[.eE]", v) for v in found), found
    # A score that is exactly integral still serialises as a float.
    saturated = CohereRerankResponse(id="x", results=[CohereResult(index=0, relevance_score=1)])
    assert '"relevance_score":1.0' in saturated.model_dump_json()


def test_empty_document_list_gives_no_results(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": []})
    assert r.status_code == 200 and r.json()["results"] == []
    r = client.post("/rerank", json={"query": QUERY, "texts": []})
    assert r.status_code == 200 and r.json() == []


# --- limits and validation ------------------------------------------------------------------


def error_locs(r: httpx.Response) -> list[list[str | int]]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]


def test_document_limit_is_422_naming_the_field(make_client: Callable[..., TestClient]) -> None:
    default = make_client()
    r = default.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 1001})
    assert error_locs(r) == [["body", "documents"]]
    assert "1000" in r.json()["detail"][0]["msg"]
    assert default.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 1000}).status_code == 200
    small = make_client(max_documents=3)
    assert error_locs(small.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 4})) == [["body", "documents"]]
    assert error_locs(small.post("/rerank", json={"query": "q", "texts": ["d"] * 4})) == [["body", "texts"]]
    assert small.post("/rerank", json={"query": "q", "texts": ["d"] * 3}).status_code == 200


def test_malformed_or_missing_fields_are_422_naming_the_field(client: TestClient) -> None:
    assert error_locs(client.post("/v1/rerank", json={"documents": ["a"]})) == [["body", "query"]]
    assert error_locs(client.post("/v1/rerank", json={"query": "q"})) == [["body", "documents"]]
    assert error_locs(client.post("/v1/rerank", json={"query": "q", "documents": "a"}))[0][:2] == ["body", "documents"]
    locs = error_locs(client.post("/v1/rerank", json={"query": "q", "documents": [{"title": "no text"}]}))
    assert all(loc[:3] == ["body", "documents", 0] for loc in locs)
    assert error_locs(client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "top_n": 0})) == [
        ["body", "top_n"]
    ]
    assert error_locs(client.post("/rerank", json={"query": 3, "texts": ["a"]})) == [["body", "query"]]
    bad_json = client.post(
        "/v1/rerank", content=b'{"query": "q", "documents": [', headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert bad_json.json()["detail"][0]["type"] == "json_invalid"


def test_body_over_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=1000)
    big = {"query": "q", "documents": ["x" * 600, "y" * 600]}
    r = client.post("/v1/rerank", json=big)
    assert r.status_code == 413
    assert "1000 bytes" in r.json()["detail"]
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["x" * 600]}).status_code == 200


def test_models_endpoint_shows_the_card_and_its_calibration(
    make_client: Callable[..., TestClient], encoder: CrossEncoder
) -> None:
    card = json.loads((encoder.model_dir / "card.json").read_text())
    client = make_client(api_key="s3cret")
    assert client.get("/v1/models").status_code == 401
    r = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and len(body["data"]) == 1
    model = body["data"][0]
    assert (model["id"], model["object"], model["kind"]) == (card["name"], "model", "cross-encoder")
    assert model["sha256"] == encoder.fingerprint
    shown = dict(model["card"])
    runtime = shown.pop("runtime")  # what ran, recorded at load beside the card's own fields
    assert shown == card
    assert (runtime["requested"], runtime["backend"]) == ("ort", "ort")
    calibration = model["calibration"]
    assert (calibration["a"], calibration["b"]) == (card["calibration"]["a"], card["calibration"]["b"])
    assert calibration["calibrated"] is True and calibration["fitted_on"] == "nfcorpus/dev"


def test_api_key_required_when_configured(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_key="s3cret")
    body = {"query": QUERY, "documents": DOCS[:2]}
    assert client.post("/v1/rerank", json=body).status_code == 401
    assert client.post("/rerank", json={"query": QUERY, "texts": DOCS[:2]}).status_code == 401
    wrong = client.post("/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_serve_binds_loopback_by_default() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.model, args.workers) == ("127.0.0.1", 8000, "default", 1)


def test_serve_rejects_a_directory_without_a_model(tmp_path: Path) -> None:
    # An empty folder is neither a model directory nor a snapshot: CrossEncoder.load's error, before serving.
    exe = Path(sys.executable).with_name("lrt-rerank")
    r = subprocess.run([str(exe), "serve", "--model", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert str(tmp_path) in r.stderr
    assert "Uvicorn running" not in r.stderr


def test_model_resolution_leaves_a_folder_without_a_card_to_the_loader(tmp_path: Path) -> None:
    # No card.json, model.onnx or tokenizer.json: resolving --model does not judge the folder (snapshots
    # have none of them); CrossEncoder.load does, as the serve test above shows.
    (tmp_path / "README.md").write_text("not a model directory")
    assert resolve_model_dir(str(tmp_path)) == tmp_path
    with pytest.raises(ModelError, match="not a directory"):
        resolve_model_dir(str(tmp_path / "missing"))


# --- health, metrics, schema ----------------------------------------------------------------


def test_health_is_503_until_the_model_is_loaded(encoder: CrossEncoder) -> None:
    release = threading.Event()

    def slow_loader() -> CrossEncoder:
        release.wait(timeout=60)
        return encoder

    with TestClient(create_app(ServiceSettings(), loader=slow_loader)) as client:
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 503
        release.set()
        wait_healthy(client)
        assert client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200


def test_health_reports_a_failed_load() -> None:
    def failing_loader() -> CrossEncoder:
        raise FileNotFoundError("/nowhere/model.onnx: not found")

    with TestClient(create_app(ServiceSettings(), loader=failing_loader)) as client:
        deadline = time.monotonic() + 120
        while (body := client.get("/health").json())["status"] == "loading":
            assert time.monotonic() < deadline, "the failing loader still loading after 120 s"
            time.sleep(0.01)
        assert client.get("/health").status_code == 503
        assert body == {"status": "failed", "error": "FileNotFoundError: /nowhere/model.onnx: not found"}


def test_metrics(client: TestClient, encoder: CrossEncoder) -> None:
    body = {"query": QUERY, "documents": DOCS}
    assert client.post("/v1/rerank", json=body).status_code == 200
    assert client.post("/v1/rerank", json=body).status_code == 200
    assert client.post("/v1/rerank", json={"query": QUERY}).status_code == 422
    assert client.post("/rerank", json={"query": QUERY, "texts": DOCS[:3]}).status_code == 200
    assert client.get("/nowhere").status_code == 404
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    ok = {"route": "/v1/rerank", "method": "POST", "status": "200"}
    assert metric(text, "lrt_rerank_requests_total", **ok) == 2
    assert metric(text, "lrt_rerank_requests_total", **{**ok, "status": "422"}) == 1
    assert metric(text, "lrt_rerank_requests_total", route="/rerank", method="POST", status="200") == 1
    assert metric(text, "lrt_rerank_requests_total", route="unmatched", method="GET", status="404") == 1
    assert metric(text, "lrt_rerank_request_duration_seconds_count", **ok) == 2
    assert metric(text, "lrt_rerank_batch_size_count") == 3
    assert metric(text, "lrt_rerank_batch_size_sum") == 2 * len(DOCS) + 3
    # The second identical request and the TEI one are served by the in-process cache.
    assert metric(text, "lrt_rerank_cache_misses_total", tier="local") == len(DOCS)
    assert metric(text, "lrt_rerank_cache_hits_total", tier="local") == len(DOCS) + 3
    assert metric(text, "lrt_rerank_cache_entries") == len(DOCS)
    assert metric(text, "lrt_rerank_cache_evictions_total") == 0
    info = [k for k in metric_samples(text) if k[0] == "lrt_rerank_model_info"]
    assert len(info) == 1
    labels = dict(info[0][1])
    assert labels["sha256"] == encoder.fingerprint and labels["name"]
    assert labels["max_length"] == str(encoder.max_length)


def test_cache_capacity_is_respected(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cache_capacity=5)
    assert client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "lrt_rerank_cache_entries") == 5
    assert metric(text, "lrt_rerank_cache_evictions_total") == len(DOCS) - 5


def test_openapi_schema_describes_the_api(make_client: Callable[..., TestClient]) -> None:
    schema = make_client(max_documents=250).get("/openapi.json").json()
    assert {"/v1/rerank", "/rerank", "/health", "/metrics"} <= set(schema["paths"])
    components = schema["components"]["schemas"]

    def request_schema(path: str) -> dict:
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        return components[ref.rsplit("/", 1)[1]]

    cohere = request_schema("/v1/rerank")
    assert {"query", "documents", "top_n", "return_documents", "raw_scores"} <= set(cohere["properties"])
    assert set(cohere["required"]) == {"query", "documents"}
    assert cohere["properties"]["documents"]["maxItems"] == 250
    tei = request_schema("/rerank")
    assert {"query", "texts", "raw_scores", "return_text", "truncate"} <= set(tei["properties"])
    assert tei["properties"]["texts"]["maxItems"] == 250
    result = components["CohereResult"]["properties"]
    assert result["relevance_score"]["type"] == "number"
    assert "sigmoid" in schema["info"]["description"]
    assert {"200", "413", "422", "503"} <= set(schema["paths"]["/v1/rerank"]["post"]["responses"])
    assert "security" not in schema["paths"]["/v1/rerank"]["post"]
    assert components["HealthResponse"]["properties"]["status"]["enum"] == ["ok", "loading", "failed"]


def test_openapi_schema_documents_the_api_key(make_client: Callable[..., TestClient]) -> None:
    schema = make_client(api_key="k").get("/openapi.json").json()
    for path in ("/v1/rerank", "/rerank"):
        operation = schema["paths"][path]["post"]
        assert operation["security"] == [{"HTTPBearer": []}]
        assert "401" in operation["responses"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in schema["paths"]["/health"]["get"]


# --- Redis tier -----------------------------------------------------------------------------


@pytest.mark.integration
def test_redis_tier_shares_scores_between_replicas(
    make_client: Callable[..., TestClient], redis_server: RedisServer, encoder: CrossEncoder
) -> None:
    redis_server.client().flushdb()
    query = QUERY + " (redis replicas)"
    order, logits = expected_ranking(encoder, query, DOCS)
    first = make_client(redis_url=redis_server.url)
    a = first.post("/v1/rerank", json={"query": query, "documents": DOCS, "raw_scores": True}).json()
    keys = redis_server.client().keys(KEY_PREFIX + b"*")
    assert len(keys) == len(set(DOCS))
    assert all(0 < redis_server.client().ttl(k) <= 86_400 for k in keys)
    second = make_client(redis_url=redis_server.url)  # a fresh process-local cache: another replica
    b = second.post("/v1/rerank", json={"query": query, "documents": DOCS, "raw_scores": True}).json()
    assert a["results"] == b["results"]
    assert [x["index"] for x in b["results"]] == order
    np.testing.assert_allclose([x["relevance_score"] for x in b["results"]], logits[order], rtol=1e-6)
    # Redis holds raw logits; a replica calibrates what it reads from there.
    third = make_client(redis_url=redis_server.url)
    c = third.post("/v1/rerank", json={"query": query, "documents": DOCS}).json()
    assert metric(third.get("/metrics").text, "lrt_rerank_cache_hits_total", tier="redis") == len(DOCS)
    np.testing.assert_allclose(
        [x["relevance_score"] for x in c["results"]], calibrated(encoder, logits[order]), rtol=1e-6
    )
    text = second.get("/metrics").text
    assert metric(text, "lrt_rerank_cache_hits_total", tier="redis") == len(DOCS)
    assert metric(text, "lrt_rerank_cache_misses_total", tier="local") == len(DOCS)
    assert metric(first.get("/metrics").text, "lrt_rerank_cache_misses_total", tier="redis") == len(DOCS)


@pytest.mark.integration
def test_requests_succeed_when_redis_goes_away(
    make_client: Callable[..., TestClient], tmp_path: Path, encoder: CrossEncoder
) -> None:
    # long enough that the request "within the back-off" is within it on a busy machine too (it is checked)
    backoff_s = 15.0
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    try:
        client = make_client(redis_url=server.url, redis_backoff_s=backoff_s)

        def ask(query: str) -> httpx.Response:
            return client.post("/rerank", json={"query": query, "texts": DOCS, "raw_scores": True})

        def redis_errors() -> float:
            return metric(client.get("/metrics").text, "lrt_rerank_redis_errors_total")

        order, logits = expected_ranking(encoder, "while redis is down", DOCS)
        assert ask("first").status_code == 200
        server.stop()
        r = ask("while redis is down")
        failed_by = time.monotonic()  # the failure, and so the back-off, started before this
        assert r.status_code == 200
        assert [x["index"] for x in r.json()] == order
        np.testing.assert_allclose([x["score"] for x in r.json()], logits[order], rtol=1e-6)
        assert redis_errors() == 1
        # Within the back-off period Redis is not tried again.
        assert ask("still down").status_code == 200
        assert time.monotonic() - failed_by < backoff_s, "the request meant for the back-off period came after it"
        assert redis_errors() == 1
        server.start()
        time.sleep(max(0.0, failed_by + backoff_s + 0.1 - time.monotonic()))
        assert ask("redis is back").status_code == 200
        assert redis_errors() == 1
        assert len(server.client().keys(KEY_PREFIX + b"*")) == len(set(DOCS))
    finally:
        server.stop()


@pytest.mark.integration
def test_unresponsive_redis_is_a_cache_miss(make_client: Callable[..., TestClient], encoder: CrossEncoder) -> None:
    # A socket that accepts connections and never answers: the short socket timeout applies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        client = make_client(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.05, redis_backoff_s=60)
        for query in ("first", "second"):
            r = client.post("/rerank", json={"query": query, "texts": DOCS, "raw_scores": True})
            assert r.status_code == 200
            order, logits = expected_ranking(encoder, query, DOCS)
            assert [x["index"] for x in r.json()] == order
        text = client.get("/metrics").text
        assert metric(text, "lrt_rerank_redis_errors_total") == 1  # the second request skipped Redis
        assert metric(text, "lrt_rerank_cache_misses_total", tier="redis") == 2 * len(DOCS)


# --- real `lrt-rerank serve` processes --------------------------------------------------------


@pytest.mark.integration
def test_real_server_auth_and_wire_format(rerank_server: ServeProcess, encoder: CrossEncoder) -> None:
    url = rerank_server.url + "/v1/rerank"
    body = {"query": QUERY, "documents": DOCS, "return_documents": True}
    assert httpx.post(url, json=body).status_code == 401
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200
    order, logits = expected_ranking(encoder, QUERY, DOCS)
    assert [x["index"] for x in r.json()["results"]] == order
    np.testing.assert_allclose(
        [x["relevance_score"] for x in r.json()["results"]], calibrated(encoder, logits[order]), rtol=1e-6
    )
    models = httpx.get(rerank_server.url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    card = json.loads((encoder.model_dir / "card.json").read_text())
    assert models["data"][0]["calibration"]["a"] == card["calibration"]["a"]
    assert re.search(r"score;dur=\d", r.headers["server-timing"])
    assert httpx.get(rerank_server.url + "/health").json() == {"status": "ok"}


@pytest.mark.integration
def test_real_server_rejects_large_bodies_by_length_and_by_stream(rerank_server: ServeProcess) -> None:
    url = rerank_server.url + "/v1/rerank"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    big = json.dumps({"query": "q", "documents": ["x" * 1000] * 1100}).encode()
    assert len(big) > 1 << 20
    assert httpx.post(url, content=big, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    # A generator body goes out with Transfer-Encoding: chunked and no Content-Length.
    r = httpx.post(url, content=chunks(), headers=headers)
    assert r.status_code == 413
    small = json.dumps({"query": "q", "documents": ["x"]}).encode()
    assert httpx.post(url, content=iter([small[:5], small[5:]]), headers=headers).status_code == 200


@pytest.mark.integration
def test_graceful_shutdown_finishes_in_flight_requests(
    start_server: Callable[[list[str]], ServeProcess], encoder: CrossEncoder
) -> None:
    # A generous grace period: the point is that in-flight work finishes, on a busy machine too.
    server = start_server(["--graceful-timeout", "600"])
    server.wait_ready()
    docs = [f"{i}: " + " ".join(DOCS) * 3 for i in range(64)]  # long passages: a slow request
    result: dict[str, httpx.Response] = {}

    def send() -> None:
        result["r"] = httpx.post(server.url + "/v1/rerank", json={"query": QUERY, "documents": docs}, timeout=300)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 60
    while metric(httpx.get(server.url + "/metrics").text, "lrt_rerank_requests_in_progress", route="/v1/rerank") < 1:
        assert time.monotonic() < deadline, f"the slow request never started\n{server.log_tail()}"
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=300)
    assert "r" in result, f"the in-flight request did not finish\n{server.log_tail()}"
    assert result["r"].status_code == 200
    assert len(result["r"].json()["results"]) == len(docs)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status reports SIGTERM.
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_path.read_text()


@pytest.mark.integration
def test_multiple_workers(start_server: Callable[[list[str]], ServeProcess], encoder: CrossEncoder) -> None:
    server = start_server(["--workers", "2", "--threads", "1"])
    server.wait_ready()
    # Dynamic INT8 quantizes activations per batch, so scores depend on how a call is batched:
    # compare with an in-process encoder configured like each worker (one session, one thread).
    order, logits = expected_ranking(CrossEncoder.load(encoder.model_dir, threads=1), QUERY, DOCS)
    n = 6
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for _ in range(n):
            # Each worker loads its own model; a worker still loading answers 503.
            deadline = time.monotonic() + 300
            while (
                r := http.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})
            ).status_code == 503:
                assert time.monotonic() < deadline, f"a worker never loaded its model\n{server.log_tail()}"
                time.sleep(0.1)
            assert r.status_code == 200
            assert [x["index"] for x in r.json()] == order
            np.testing.assert_allclose([x["score"] for x in r.json()], logits[order], rtol=1e-6)
        text = http.get("/metrics").text
    # The metrics of all workers are summed, whichever worker answers /metrics.
    assert metric(text, "lrt_rerank_requests_total", route="/rerank", method="POST", status="200") == n
    assert server.stop() == 0
