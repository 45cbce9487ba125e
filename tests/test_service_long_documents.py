"""The service's long-document fields (issue 23): Cohere's ``max_tokens_per_doc``, the window fields,
the response's ``meta``, TEI's ``truncate`` and the Prometheus counters, through FastAPI's TestClient on
a small cross-encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lrt_rerank import CrossEncoder
from lrt_rerank.service.app import create_app
from lrt_rerank.service.settings import ServiceSettings
from service_fixtures import wait_healthy


@pytest.fixture(scope="module")
def encoder(small_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(small_cross_encoder_dir, threads=2)


@pytest.fixture
def client(encoder: CrossEncoder) -> Iterator[TestClient]:
    with TestClient(create_app(ServiceSettings(), loader=lambda: encoder)) as c:
        wait_healthy(c)
        yield c


@pytest.fixture(scope="module")
def docs(nfcorpus_sample) -> list[str]:
    return nfcorpus_sample[1][:5] + ["Vitamin D."]


@pytest.fixture(scope="module")
def query(nfcorpus_sample) -> str:
    return nfcorpus_sample[0][0]


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    return 0.0


def raw(client: TestClient, body: dict) -> dict[int, float]:
    r = client.post("/v1/rerank", json={**body, "raw_scores": True})
    assert r.status_code == 200, r.text
    return {res["index"]: res["relevance_score"] for res in r.json()["results"]}


def test_default_meta_reports_truncation(client, encoder, query, docs) -> None:
    r = client.post("/v1/rerank", json={"query": query, "documents": docs, "raw_scores": True})
    assert r.status_code == 200
    meta = r.json()["meta"]
    stats = encoder.window_stats(query, docs)
    assert meta["long_documents"] == "truncate"
    assert meta["documents_truncated"] == sum(1 for t, ts, _, _ in stats if ts < t) > 0
    assert meta["tokens_dropped"] == sum(t - ts for t, ts, _, _ in stats)
    assert (meta["documents_windowed"], meta["windows_scored"]) == (0, len(docs))
    got = {res["index"]: res["relevance_score"] for res in r.json()["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(docs))], encoder.score(query, docs), rtol=1e-6)


def test_windows_per_request(client, encoder, query, docs) -> None:
    body = {"query": query, "documents": docs, "long_documents": "windows", "aggregate": "mean", "max_windows": 3}
    got = raw(client, body)
    view = encoder.with_windows("windows", None, 3, "mean")
    np.testing.assert_allclose([got[i] for i in range(len(docs))], view.score(query, docs), rtol=1e-6)
    meta = client.post("/v1/rerank", json=body).json()["meta"]
    assert meta["long_documents"] == "windows" and meta["documents_windowed"] > 0
    assert meta["windows_scored"] == sum(d.windows_scored for d in view.score_details(query, docs))
    # the served default is untouched by a request's settings
    plain = raw(client, {"query": query, "documents": docs})
    np.testing.assert_allclose([plain[i] for i in range(len(docs))], encoder.score(query, docs), rtol=1e-6)


def test_max_tokens_per_doc(client, encoder, query, docs) -> None:
    got = raw(client, {"query": query, "documents": docs, "max_tokens_per_doc": 10})
    view = encoder.with_windows(max_tokens_per_doc=10)
    np.testing.assert_allclose([got[i] for i in range(len(docs))], view.score(query, docs), rtol=1e-6)
    # the same as the passages cut to their first 10 tokens
    assert not np.allclose(view.score(query, docs), encoder.score(query, docs))
    meta = client.post("/v1/rerank", json={"query": query, "documents": docs, "max_tokens_per_doc": 10}).json()["meta"]
    assert meta["tokens_dropped"] == sum(max(0, t - 10) for t, _, _, _ in encoder.window_stats(query, docs))
    assert client.post("/v1/rerank", json={"query": query, "documents": docs, "max_tokens_per_doc": 0}).status_code == 422


def test_bad_window_fields_are_422(client, query, docs) -> None:
    for bad in ({"aggregate": "median"}, {"long_documents": "chunk"}, {"max_windows": 0}, {"window_stride": 0}):
        r = client.post("/v1/rerank", json={"query": query, "documents": docs, **bad})
        assert r.status_code == 422, bad
        assert next(iter(bad)) in r.text


def test_tei_truncate_is_honoured(client, encoder, query, docs) -> None:
    body = {"query": query, "texts": docs, "raw_scores": True}
    assert client.post("/rerank", json=body).status_code == 200
    assert client.post("/rerank", json={**body, "truncate": True}).status_code == 200
    r = client.post("/rerank", json={**body, "truncate": False})
    assert r.status_code == 413 and "truncate" in r.json()["detail"]
    short = {"query": query, "texts": ["Vitamin D.", "Statins."], "truncate": False}
    assert client.post("/rerank", json=short).status_code == 200
    # windows that read every token pass with truncate false
    ok = client.post("/rerank", json={**body, "truncate": False, "long_documents": "windows", "max_windows": 64})
    assert ok.status_code == 200, ok.text


def test_prometheus_counts_dropped_tokens_and_windows(client, encoder, query, docs) -> None:
    before = client.get("/metrics").text
    client.post("/v1/rerank", json={"query": query, "documents": docs})
    client.post("/v1/rerank", json={"query": query, "documents": docs, "long_documents": "windows", "max_windows": 2})
    after = client.get("/metrics").text
    stats = encoder.window_stats(query, docs)
    windowed = encoder.with_windows("windows", None, 2).window_stats(query, docs)
    dropped = sum(t - ts for t, ts, _, _ in stats) + sum(t - ts for t, ts, _, _ in windowed)
    assert metric(after, "lrt_rerank_tokens_dropped_total") - metric(before, "lrt_rerank_tokens_dropped_total") == dropped
    windows = metric(after, "lrt_rerank_windows_per_document_sum") - metric(before, "lrt_rerank_windows_per_document_sum")
    assert windows == len(docs) + sum(w for _, _, w, _ in windowed)
    assert metric(after, "lrt_rerank_windows_per_document_count") - metric(before, "lrt_rerank_windows_per_document_count") == 2 * len(docs)
    assert metric(after, "lrt_rerank_documents_truncated_total") > metric(before, "lrt_rerank_documents_truncated_total")
