"""The rerank service applies a tuned fusion (issue 27): `serve --fusion F` and the requests'
``first_stage_scores``, through FastAPI's TestClient on a small cross-encoder.

The expected order is computed here with numpy from the fusion's definition (docs/tuned-fusion.md)
and the model's logits, not with the library's fusion code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lrt_rerank import CrossEncoder
from lrt_rerank.cli import main
from lrt_rerank.rerank.fusion import Fusion
from lrt_rerank.service.app import create_app
from lrt_rerank.service.served import FUSION_ENV, fusion_env
from lrt_rerank.service.settings import ServiceSettings
from service_fixtures import wait_healthy

N = 12
SEED_WEIGHTS = {"bm25": 1.0, "dense": 2.0, "prior": 0.25, "reranker": 0.5}


@pytest.fixture(scope="module")
def encoder(small_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(small_cross_encoder_dir, threads=2)


@pytest.fixture(scope="module")
def docs(nfcorpus_sample) -> list[str]:
    return nfcorpus_sample[1][:N]


@pytest.fixture(scope="module")
def query(nfcorpus_sample) -> str:
    return nfcorpus_sample[0][1]


@pytest.fixture(scope="module")
def scores() -> dict[str, list]:
    """First-stage signals of N documents: BM25 and dense scores, ranks (0 = outside the top 100)."""
    rng = np.random.default_rng(27)
    return {
        "bm25": [round(float(x), 4) for x in rng.uniform(2.0, 18.0, N)],
        "dense": [round(float(x), 4) for x in rng.uniform(0.55, 0.9, N)],
        "bm25_rank": [int(x) for x in rng.permutation(N) + 1],
        "dense_rank": [0 if i % 4 == 3 else int(x) for i, x in enumerate(rng.permutation(N) + 1)],
    }


@pytest.fixture
def serve_with(encoder: CrossEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Fusion | None], TestClient]]:
    """Start the app with ``fusion`` served (as `serve --fusion` hands it over), or none."""
    clients: list[TestClient] = []

    def start(fusion: Fusion | None) -> TestClient:
        if fusion is None:
            monkeypatch.delenv(FUSION_ENV, raising=False)
        else:
            monkeypatch.setenv(FUSION_ENV, fusion_env(fusion.save(tmp_path / f"fusion-{len(clients)}.json")))
        client = TestClient(create_app(ServiceSettings(), loader=lambda: encoder))
        client.__enter__()
        clients.append(client)
        wait_healthy(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def expected(
    weights: dict[str, float], signals: dict[str, list], logits: np.ndarray, normalisation: str = "zscore",
    positions: np.ndarray | None = None, ranges: dict[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """The fused score from the definition: a N(bm25) + b N(dense) + c z(-log position) + d z(logit)."""
    def norm(name: str) -> np.ndarray:
        x = np.asarray(signals[name], dtype=np.float64)
        if normalisation == "zscore":
            return z(x)
        low, high = (ranges or {}).get(name, (x.min(), x.max()))
        return (x - low) / (high - low + 1e-9)

    n = len(signals["bm25"])
    prior = z(-np.log(np.arange(1, n + 1, dtype=np.float64)))
    prior = prior[positions] if positions is not None else prior
    return (
        weights["bm25"] * norm("bm25") + weights["dense"] * norm("dense") + weights["prior"] * prior
        + weights["reranker"] * z(np.asarray(logits, dtype=np.float64))
    )


def order_of(fused: np.ndarray) -> list[int]:
    fused32 = fused.astype(np.float32)
    return sorted(range(len(fused32)), key=lambda i: (-float(fused32[i]), i))


def post(client: TestClient, body: dict, route: str = "/v1/rerank") -> list[dict]:
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    return r.json()["results"] if route == "/v1/rerank" else r.json()


def test_the_served_fusion_orders_a_request_with_first_stage_scores(serve_with, encoder, query, docs, scores) -> None:
    client = serve_with(Fusion("linear", SEED_WEIGHTS, "zscore"))
    logits = encoder.score(query, docs)
    fused = expected(SEED_WEIGHTS, scores, logits)
    results = post(client, {"query": query, "documents": docs, "first_stage_scores": scores, "raw_scores": True})
    assert [r["index"] for r in results] == order_of(fused)
    np.testing.assert_allclose([r["relevance_score"] for r in results], fused[order_of(fused)], rtol=1e-5, atol=1e-5)
    # default scores stay the calibrated probability of the model's own logit
    calibrated = post(client, {"query": query, "documents": docs, "first_stage_scores": scores})
    assert [r["index"] for r in calibrated] == order_of(fused)
    relevance = encoder.relevance(query, docs)
    np.testing.assert_allclose([r["relevance_score"] for r in calibrated], relevance[order_of(fused)], rtol=1e-5)
    # the fusion is not the logit's order here (else the test could not tell them apart)
    assert order_of(fused) != order_of(np.asarray(logits, dtype=np.float64))


def test_tei_route_applies_it_too(serve_with, encoder, query, docs, scores) -> None:
    client = serve_with(Fusion("linear", SEED_WEIGHTS, "zscore"))
    fused = expected(SEED_WEIGHTS, scores, encoder.score(query, docs))
    results = post(client, {"query": query, "texts": docs, "first_stage_scores": scores, "raw_scores": True}, "/rerank")
    assert [r["index"] for r in results] == order_of(fused)


def test_minmax_over_the_pools_range(serve_with, encoder, query, docs, scores) -> None:
    weights = {"bm25": 0.3, "dense": 0.7, "prior": 0.0, "reranker": 0.0}
    client = serve_with(Fusion("linear", weights, "minmax"))
    ranges = {"bm25": (1.0, 25.0), "dense": (0.5, 0.95)}
    body = {"query": query, "documents": docs, "raw_scores": True, "top_n": 5,
            "first_stage_scores": {**scores, "bm25_range": ranges["bm25"], "dense_range": ranges["dense"]}}
    fused = expected(weights, scores, encoder.score(query, docs), "minmax", ranges=ranges)
    results = post(client, body)
    assert [r["index"] for r in results] == order_of(fused)[:5]
    np.testing.assert_allclose([r["relevance_score"] for r in results], fused[order_of(fused)[:5]], rtol=1e-5)
    # without the ranges: over the documents sent
    body["first_stage_scores"] = scores
    fused = expected(weights, scores, encoder.score(query, docs), "minmax")
    np.testing.assert_allclose([r["relevance_score"] for r in post(client, body)], fused[order_of(fused)[:5]], rtol=1e-5)


def test_an_rrf_k_prior_reads_the_ranks(serve_with, encoder, query, docs, scores) -> None:
    weights = {"bm25": 0.0, "dense": 0.0, "prior": 1.0, "reranker": 0.25}
    client = serve_with(Fusion("rrf", weights, "zscore", rrf_k=5))
    rrf = sum(np.where(np.asarray(scores[r]) > 0, 1.0 / (5 + np.maximum(np.asarray(scores[r]), 1)), 0.0) for r in ("bm25_rank", "dense_rank"))
    order = sorted(range(N), key=lambda i: (-rrf[i], i))
    positions = np.empty(N, dtype=np.int64)
    positions[order] = np.arange(N)
    fused = expected(weights, scores, encoder.score(query, docs), positions=positions)
    body = {"query": query, "documents": docs, "first_stage_scores": scores, "raw_scores": True}
    assert [r["index"] for r in post(client, body)] == order_of(fused)
    without_ranks = {"bm25": scores["bm25"], "dense": scores["dense"]}
    r = client.post("/v1/rerank", json={**body, "first_stage_scores": without_ranks})
    assert r.status_code == 422 and "bm25_rank" in r.json()["detail"] and "k=5" in r.json()["detail"]


def test_clients_that_send_no_scores_are_answered_as_before(serve_with, query, docs) -> None:
    fused_client = serve_with(Fusion("linear", SEED_WEIGHTS, "zscore"))
    plain_client = serve_with(None)
    for body in (
        {"query": query, "documents": docs, "top_n": 4},
        {"query": query, "documents": docs, "first_stage_order": True, "raw_scores": True},
    ):
        assert post(fused_client, body) == post(plain_client, body)
    tei = {"query": query, "texts": docs}
    assert post(fused_client, tei, "/rerank") == post(plain_client, tei, "/rerank")


def test_scores_that_do_not_fit_are_a_422_naming_the_field(serve_with, query, docs, scores) -> None:
    client = serve_with(Fusion("linear", SEED_WEIGHTS, "zscore"))
    cases = {
        "first_stage_scores.dense": {**scores, "dense": scores["dense"][:-1]},
        "first_stage_scores.bm25_rank": {**scores, "bm25_rank": scores["bm25_rank"] + [1]},
        "first_stage_scores.bm25_range": {**scores, "bm25_range": [9.0, 1.0]},
    }
    for field, bad in cases.items():
        r = client.post("/v1/rerank", json={"query": query, "documents": docs, "first_stage_scores": bad})
        assert r.status_code == 422 and field in r.json()["detail"], (field, r.text)
    for bad in ({**scores, "dense_rank": [-1] * N}, {**scores, "bm25": ["high"] * N}, {**scores, "extra": [1] * N}, {"bm25": scores["bm25"]}):
        r = client.post("/v1/rerank", json={"query": query, "documents": docs, "first_stage_scores": bad})
        assert r.status_code == 422, r.text
        assert any(e["loc"][:2] == ["body", "first_stage_scores"] for e in r.json()["detail"]), r.text
    r = client.post("/v1/rerank", content=json.dumps({"query": query, "documents": docs, "first_stage_scores": {**scores, "bm25": [float("nan")] * N}}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_scores_without_a_served_fusion_are_refused(serve_with, query, docs, scores) -> None:
    client = serve_with(None)
    r = client.post("/v1/rerank", json={"query": query, "documents": docs, "first_stage_scores": scores})
    assert r.status_code == 422 and "serve --fusion" in r.json()["detail"]


def test_serve_refuses_a_bad_fusion_file_naming_it(small_cross_encoder_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "fusion.json"
    record = Fusion("linear", SEED_WEIGHTS, "zscore").to_json()
    record["weights"]["dense"] = -1
    bad.write_text(json.dumps(record))
    assert main(["serve", "--model", str(small_cross_encoder_dir), "--fusion", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "weights.dense" in err
