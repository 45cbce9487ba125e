"""Late interaction in the service: `lrt-rerank serve --model` a ColBERT (real uvicorn processes and the
session's real redis-server), each document encoded on first sight and then read from the document cache
(in-process LRU, Redis tier), its Prometheus counters, and the 422s for cross-encoder-only options.

The model is the tiny colbert-ai checkpoint of tests/test_colbert.py (torch only, no PyLate subprocess).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from lrt_rerank.late import ColBERT
from lrt_rerank.models.importers.colbert import import_colbert
from service_fixtures import RedisServer, ServeProcess, metric
from test_colbert import stanford_snapshot

pytestmark = pytest.mark.train
DOCS = [
    "Vitamin D supplements reduced fracture risk in older women.",
    "Coffee intake and blood pressure: a trial!",
    "Statins lower cholesterol.",
    "Sun light, calcium and bone health; " * 12,
    "diet fibre and cancer in men",
]
QUERIES = ["vitamin d and bone fracture risk", "coffee and heart disease", "statins trial"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("colbert-service")
    snapshot, _, _ = stanford_snapshot(tmp)
    return import_colbert(snapshot, tmp / "model")


def start(model_dir: Path, redis_server: RedisServer, log: Path) -> ServeProcess:
    server = ServeProcess(["--model", str(model_dir), "--threads", "1", "--redis-url", redis_server.url], log)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def served(model_dir: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = start(model_dir, redis_server, tmp_path_factory.mktemp("colbert-serve") / "serve.log")
    try:
        yield server
    finally:
        server.stop()


def rerank(server: ServeProcess, query: str, documents: list[str], **extra: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/rerank", json={"query": query, "documents": documents, **extra}, timeout=60)


def scores(response: httpx.Response, n: int) -> np.ndarray:
    assert response.status_code == 200, response.text
    out = np.full(n, np.nan, dtype=np.float32)
    for r in response.json()["results"]:
        out[r["index"]] = r["relevance_score"]
    return out


def doc_metrics(server: ServeProcess) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {
        "local": metric(text, "lrt_rerank_document_cache_hits_total", tier="local"),
        "redis": metric(text, "lrt_rerank_document_cache_hits_total", tier="redis"),
        "misses": metric(text, "lrt_rerank_document_cache_misses_total"),
        "bytes": metric(text, "lrt_rerank_document_cache_bytes"),
        "entries": metric(text, "lrt_rerank_document_cache_entries"),
    }


def spread_close(a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    assert np.max(np.abs(a - b)) <= rtol * (float(np.ptp(b)) or 1.0), (a, b)


def fp16_close(a: np.ndarray, b: np.ndarray, query_rows: int = 12) -> None:
    """Document rows rounded to fp16 (relative 2**-11 per element): each unit-norm dot product moves by at most
    2**-11, so a MaxSim sum over ``query_rows`` query rows by at most query_rows * 2**-11."""
    assert np.max(np.abs(a - b)) <= query_rows * 2.0**-11 + 1e-5, (a, b)


def test_documents_are_encoded_once_then_read_from_the_cache(served: ServeProcess, model_dir: Path, redis_server: RedisServer) -> None:
    reference = ColBERT.load(model_dir)
    first = scores(rerank(served, QUERIES[0], DOCS), len(DOCS))
    # raw MaxSim (a late-interaction model has no calibration), as the Python API scores it
    spread_close(first, reference.score(QUERIES[0], DOCS), 1e-4)
    after_first = doc_metrics(served)
    assert after_first["misses"] == len(DOCS) and after_first["local"] == 0
    assert after_first["entries"] == len(DOCS) and after_first["bytes"] > 0
    for query in QUERIES[1:]:  # other queries, same documents: no score-cache hit, every matrix from the cache
        got = scores(rerank(served, query, DOCS[::-1]), len(DOCS))[::-1]
        fp16_close(got, reference.score(query, DOCS))  # the cached rows are fp16
    after = doc_metrics(served)
    assert after["misses"] == len(DOCS), "a document was encoded again"
    assert after["local"] == len(DOCS) * (len(QUERIES) - 1)
    assert after["bytes"] == after_first["bytes"]
    # the Redis tier holds each document once, under the model's fingerprint
    keys = list(redis_server.client().scan_iter(match=f"lrt:doc:{reference.fingerprint}:*".encode()))
    assert len(keys) == len(DOCS)


def test_a_second_process_reads_the_documents_from_redis(served: ServeProcess, model_dir: Path, redis_server: RedisServer, tmp_path: Path) -> None:
    rerank(served, QUERIES[0], DOCS)  # the documents are in Redis (whatever ran before)
    other = start(model_dir, redis_server, tmp_path / "second.log")
    try:
        got = scores(rerank(other, "calcium intake in women", DOCS), len(DOCS))
        m = doc_metrics(other)
        assert (m["redis"], m["misses"], m["local"]) == (len(DOCS), 0, 0)
        fp16_close(got, ColBERT.load(model_dir).score("calcium intake in women", DOCS))
        # copied into the second process's LRU: the next request is a local hit
        rerank(other, "statins", DOCS)
        assert doc_metrics(other)["local"] == len(DOCS)
    finally:
        other.stop()


def test_models_route_and_cross_encoder_only_options(served: ServeProcess) -> None:
    (model,) = httpx.get(served.url + "/v1/models", timeout=10).json()["data"]
    assert model["kind"] == "late-interaction" and model["calibration"] is None
    for extra in ({"long_documents": "windows"}, {"max_windows": 2}):
        response = rerank(served, QUERIES[0], DOCS, **extra)
        assert response.status_code == 422 and "late-interaction model truncates documents at 20 tokens" in response.text
    tei = httpx.post(served.url + "/rerank", json={"query": QUERIES[0], "texts": DOCS, "truncate": False}, timeout=30)
    assert tei.status_code == 422 and "truncate: false apply to cross-encoders" in tei.text


def test_serve_refuses_window_flags_for_a_late_interaction_model(model_dir: Path) -> None:
    exe = Path(sys.executable).with_name("lrt-rerank")
    done = subprocess.run(
        [str(exe), "serve", "--model", str(model_dir), "--long-documents", "windows"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert f"{model_dir}: a late-interaction model truncates documents" in done.stderr and "--long-documents" in done.stderr
