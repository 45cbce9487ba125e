"""One re-ranking flow, three callers: the embedded pipeline, the rerank service (over HTTP) and the
OpenSearch client-side searcher give the same order, the same budget cut-off and the same fail-open
on one set of candidates.

The candidates are the hybrid (RRF) hits a real OpenSearch node returns for a query; the same ids,
scores and texts then go through ``Pipeline`` (a first stage that serves that list), the service
(``create_app`` under uvicorn on a free port, asked directly and through ``RemoteReranker``) and
``HybridSearcher``. The expected order is computed here from the model's logits and the card's
interpolation weight, without the library's ranking code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from lrt_rerank import CrossEncoder
from lrt_rerank.first_stage.base import Candidate, FirstStage, System
from lrt_rerank.opensearch import HybridSearcher, RemoteReranker, ensure_rrf_pipeline
from lrt_rerank.opensearch.indexing import CONTENT_FIELD
from lrt_rerank.pipeline import Pipeline, RerankStatus
from lrt_rerank.service.app import create_app
from lrt_rerank.service.settings import ServiceSettings
from opensearch_fixtures import OpenSearchNode
from service_fixtures import free_port

pytestmark = pytest.mark.integration

DEPTH = 20
QUERY = "statin use and breast cancer survival"


class ListStage(FirstStage):
    """A first stage that answers one fixed candidate list (the cluster's), whatever the query."""

    def __init__(self, candidates: Sequence[Candidate], texts: dict[str, str]) -> None:
        self.candidates = list(candidates)
        self.texts = texts

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        return self.candidates[:k]

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        return [self.texts[i] for i in ids]


class FailingReranker:
    """The model's attributes (name, card, calibration, ...) with a ``score`` that raises."""

    def __init__(self, encoder: CrossEncoder) -> None:
        self._encoder = encoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        raise RuntimeError("model exploded")


@contextmanager
def serving(reranker: Any) -> Iterator[str]:
    """The rerank service with ``reranker`` as its model, under uvicorn on a free port."""
    port = free_port()
    app = create_app(ServiceSettings(), loader=lambda: reranker)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="one-flow-service", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def encoder(cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(str(cross_encoder_dir))


@pytest.fixture(scope="module")
def cluster_list(opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder) -> tuple[list[Candidate], dict[str, str]]:
    """The node's RRF candidates for QUERY (ids, scores, ranks) and their stored texts."""
    ensure_rrf_pipeline(opensearch_node.client)
    raw = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, None, depth=DEPTH).first_stage(QUERY)
    assert len(raw) == DEPTH
    candidates = [Candidate(str(h["_id"]), float(h["_score"]), rank) for rank, h in enumerate(raw, start=1)]
    return candidates, {str(h["_id"]): str(h["_source"][CONTENT_FIELD]) for h in raw}


def card_weight(encoder: CrossEncoder) -> float:
    """The card's weight: a remote re-ranker returns bare logits, so the caller interpolates as in-process."""
    return float(json.loads((encoder.model_dir / "card.json").read_text())["interpolation"]["weight"])


def expected_ids(encoder: CrossEncoder, candidates: list[Candidate], texts: dict[str, str]) -> list[str]:
    """logit + w * z(-log rank), w from card.json, rounded to float32, best first, ties by rank."""
    weight = card_weight(encoder)
    logits = np.asarray(encoder.score(QUERY, [texts[c.id] for c in candidates]), dtype=np.float64)
    prior = -np.log(np.arange(1, len(candidates) + 1, dtype=np.float64))
    ranking = (logits + weight * (prior - prior.mean()) / prior.std()).astype(np.float32)
    return [c.id for _, _, c in sorted(zip(-ranking, [c.rank for c in candidates], candidates, strict=True))]


def service_ids(url: str, candidates: list[Candidate], texts: dict[str, str]) -> list[str]:
    body = {"query": QUERY, "documents": [texts[c.id] for c in candidates], "first_stage_order": True, "raw_scores": True}
    answer = httpx.post(f"{url}/v1/rerank", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return [candidates[r["index"]].id for r in answer.json()["results"]]


def test_pipeline_service_and_opensearch_give_one_order(
    encoder: CrossEncoder, cluster_list: tuple[list[Candidate], dict[str, str]], opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder
) -> None:
    candidates, texts = cluster_list
    want = expected_ids(encoder, candidates, texts)
    assert want != [c.id for c in candidates]  # the re-rank moves something, so equal orders are not all just RRF
    stage = ListStage(candidates, texts)

    searched = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, encoder, depth=DEPTH).search(QUERY)
    assert [h.first_stage_rank for h in sorted(searched.hits, key=lambda h: h.first_stage_rank)] == list(range(1, DEPTH + 1))
    assert [h.id for h in searched.hits] == want and searched.status is RerankStatus.COMPLETE

    piped = Pipeline(stage, encoder, rerank_depth=DEPTH, candidates=DEPTH).run(QUERY, k=DEPTH)
    assert [h.id for h in piped.hits] == want and piped.status is RerankStatus.COMPLETE
    assert [h.score for h in piped.hits] == [h.score for h in searched.hits]

    with serving(encoder) as url:
        assert service_ids(url, candidates, texts) == want
        remote = Pipeline(stage, RemoteReranker(url, timeout_s=120), rerank_depth=DEPTH, candidates=DEPTH, interpolation=card_weight(encoder))
        assert [h.id for h in remote.run(QUERY, k=DEPTH).hits] == want


def test_pipeline_and_opensearch_keep_the_first_stage_order_out_of_budget(
    encoder: CrossEncoder, cluster_list: tuple[list[Candidate], dict[str, str]], opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder
) -> None:
    candidates, texts = cluster_list
    first = [c.id for c in candidates]
    piped = Pipeline(ListStage(candidates, texts), encoder, rerank_depth=DEPTH, candidates=DEPTH).run(QUERY, k=DEPTH, budget_ms=0)
    searched = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, encoder, depth=DEPTH).search(QUERY, budget_ms=0)
    for result in (piped, searched):
        assert result.status is RerankStatus.OUT_OF_BUDGET and result.reranked == 0
        assert [h.id for h in result.hits] == first and not any(h.reranked for h in result.hits)


def test_a_failing_reranker_fails_open_on_every_path(
    encoder: CrossEncoder, cluster_list: tuple[list[Candidate], dict[str, str]], opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder
) -> None:
    candidates, texts = cluster_list
    first = [c.id for c in candidates]
    failing = FailingReranker(encoder)
    stage = ListStage(candidates, texts)
    results = {
        "pipeline": Pipeline(stage, failing, rerank_depth=DEPTH, candidates=DEPTH).run(QUERY, k=DEPTH),
        "opensearch": HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, failing, depth=DEPTH).search(QUERY),
    }
    with serving(failing) as url:
        body = {"query": QUERY, "documents": [texts[c.id] for c in candidates]}
        answer = httpx.post(f"{url}/v1/rerank", json=body, timeout=60)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "RuntimeError" in answer.json()["detail"]
        results["service"] = Pipeline(stage, RemoteReranker(url, timeout_s=60), rerank_depth=DEPTH, candidates=DEPTH).run(QUERY, k=DEPTH)
    for path, result in results.items():
        assert result.status is RerankStatus.FAILED and result.reranked == 0, path
        assert [h.id for h in result.hits] == first and not any(h.reranked for h in result.hits), path
        assert result.error is not None, path
    assert "model exploded" in str(results["pipeline"].error) and "503" in str(results["service"].error)
