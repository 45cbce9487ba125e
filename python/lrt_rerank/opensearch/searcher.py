"""Hybrid search against OpenSearch, re-ranked client-side (in-process) or server-side.

Client-side (:class:`HybridSearcher`), for clusters without ml-commons: the hybrid query
(``match`` + ``knn`` with the query's bi-encoder vector) goes through the ``lrt-rrf`` pipeline;
the returned hits are re-scored in this process by the cross-encoder and sorted by score (ties
keep RRF order). If the re-ranker raises, the RRF order is returned with a logged warning.

Server-side (:func:`search_server_side`): the same hybrid query through ``lrt-rrf-rerank``,
whose ``rerank`` response processor asks the rerank service (see
:mod:`lrt_rerank.opensearch.pipeline`). The pipeline ignores re-rank failures, so a dead or
slow service yields the RRF order.

Both re-rank exactly the hits the hybrid query returned (its ``depth``) and read the same text
(the stored ``content`` field), so on the same hits they produce the same order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from opensearchpy import OpenSearch

from lrt_rerank.interpolation import combine, resolve_weight
from lrt_rerank.opensearch.indexing import CONTENT_FIELD, Embedder
from lrt_rerank.opensearch.pipeline import RERANK_PIPELINE, RRF_PIPELINE
from lrt_rerank.opensearch.queries import hybrid_body

logger = logging.getLogger(__name__)

SOURCE_FIELDS = ("doc_id", "title", CONTENT_FIELD)


class Reranker(Protocol):
    """``lrt_rerank.CrossEncoder`` satisfies it (``fingerprint`` is needed only with a separate cache)."""

    def score(self, query: str, passages: list[str]) -> npt.NDArray[np.float32]: ...


class Cache(Protocol):
    """``lrt_rerank.ScoreCache`` satisfies it."""

    def get_many(self, fingerprint: str, query: str, passages: list[str]) -> list[float | None]: ...

    def put_many(self, fingerprint: str, query: str, passages: list[str], scores: list[float]) -> None: ...


@dataclass(frozen=True)
class SearchHit:
    """``score`` is the re-ranker's when ``reranked``, else the RRF score."""

    id: str
    score: float
    rank: int
    first_stage_rank: int
    first_stage_score: float
    reranked: bool
    source: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class HybridResult:
    hits: list[SearchHit]
    reranked: bool
    error: str | None
    first_stage_ms: float
    rerank_ms: float


class HybridSearcher:
    """Hybrid (BM25 + k-NN, RRF in the cluster) search re-ranked in this process.

    Args:
        client: an ``OpenSearch`` client.
        index: an index built by :func:`lrt_rerank.opensearch.indexing.index_documents`.
        bi_encoder: embeds the query for the ``knn`` half (the model the index was built with).
        reranker: re-scores (query, passage) pairs, e.g. ``CrossEncoder``; ``None`` keeps RRF order.
        cache: a ``ScoreCache`` consulted before the re-ranker (needs ``reranker.fingerprint``).
            Not needed when the re-ranker was loaded with this cache: it looks it up itself.
        depth: hits the hybrid query returns and the re-ranker scores.
        pipeline: the RRF search pipeline (``lrt-rrf``, see ``ensure_rrf_pipeline``).
        interpolation: weight of the RRF order in the re-ranked score (:mod:`lrt_rerank.interpolation`);
            default: the re-ranker's model card (``card``), else 0. The server-side pipeline gets the
            same from the service (its connector sends ``first_stage_order``).
    """

    def __init__(
        self,
        client: OpenSearch,
        index: str,
        bi_encoder: Embedder,
        reranker: Reranker | None,
        cache: Cache | None = None,
        depth: int = 50,
        pipeline: str = RRF_PIPELINE,
        interpolation: float | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.client = client
        self.index = index
        self.bi_encoder = bi_encoder
        self.reranker = reranker
        self.cache = None if cache is None or getattr(reranker, "cache", None) is cache else cache
        self._fingerprint: str | None = getattr(reranker, "fingerprint", None)
        if self.cache is not None and self._fingerprint is None:
            raise ValueError("a separate score cache needs a re-ranker with a `fingerprint` (the model's sha256) for its keys")
        self.depth = depth
        self.pipeline = pipeline
        self.interpolation = resolve_weight(reranker, interpolation)

    def first_stage(self, query: str, depth: int | None = None) -> list[dict[str, Any]]:
        """The RRF hits (raw OpenSearch hits with ``_source``), best first."""
        body = hybrid_body(query, embed_query(self.bi_encoder, query), depth or self.depth, source=list(SOURCE_FIELDS))
        answer = self.client.search(index=self.index, body=body, params={"search_pipeline": self.pipeline})
        return list(answer["hits"]["hits"])

    def search(self, query: str, k: int | None = None) -> HybridResult:
        """Top ``k`` (default: ``depth``) hits, re-ranked; RRF order if the re-ranker fails."""
        if not query.strip():
            return HybridResult([], False, None, 0.0, 0.0)
        started = time.perf_counter()
        raw = self.first_stage(query, max(k or 0, self.depth))
        fetched = time.perf_counter()
        scores: list[float] | None = None
        error = None
        if self.reranker is not None and raw:
            passages = [str(hit["_source"].get(CONTENT_FIELD, "")) for hit in raw[: self.depth]]
            try:
                scores = self._score(query, passages)
                if self.interpolation > 0:
                    scores = [float(x) for x in combine(scores, self.interpolation).astype(np.float32)]  # as the service sends it
            except Exception as exc:  # noqa: BLE001 - fail open on any re-ranker error
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("re-ranking failed (%s); returning the first-stage (RRF) order", error)
        hits = merge(raw, scores)[: k or self.depth]
        done = time.perf_counter()
        return HybridResult(hits, scores is not None, error, (fetched - started) * 1000.0, (done - fetched) * 1000.0)

    def _score(self, query: str, passages: list[str]) -> list[float]:
        assert self.reranker is not None
        if self.cache is None:
            return [float(s) for s in np.asarray(self.reranker.score(query, passages), dtype=np.float32)]
        fingerprint = str(self._fingerprint)
        cached = self.cache.get_many(fingerprint, query, passages)
        missing = [i for i, score in enumerate(cached) if score is None]
        if missing:
            fresh = np.asarray(self.reranker.score(query, [passages[i] for i in missing]), dtype=np.float32)
            self.cache.put_many(fingerprint, query, [passages[i] for i in missing], [float(s) for s in fresh])
            for i, score in zip(missing, fresh, strict=True):
                cached[i] = float(score)
        return [float(score) for score in cached if score is not None]


def merge(raw: Sequence[dict[str, Any]], scores: Sequence[float] | None) -> list[SearchHit]:
    """Re-scored hits sorted by score (stable: ties keep RRF order), then the rest in RRF order."""
    n = len(scores) if scores is not None else 0
    order = sorted(range(n), key=lambda i: -scores[i]) if scores is not None else []
    order += list(range(n, len(raw)))
    hits = []
    for rank, i in enumerate(order, start=1):
        hit = raw[i]
        reranked = i < n
        hits.append(
            SearchHit(
                id=str(hit["_id"]),
                score=float(scores[i]) if reranked and scores is not None else float(hit["_score"]),
                rank=rank,
                first_stage_rank=i + 1,
                first_stage_score=float(hit["_score"]),
                reranked=reranked,
                source=dict(hit.get("_source", {})),
            )
        )
    return hits


def search_server_side(
    client: OpenSearch, index: str, query: str, vector: Sequence[float], depth: int = 50, pipeline: str = RERANK_PIPELINE
) -> list[tuple[str, float]]:
    """(id, score) of the hybrid query's top ``depth`` through the server-side rerank pipeline."""
    body = hybrid_body(query, vector, depth, source=[CONTENT_FIELD], rerank_query=query)
    answer = client.search(index=index, body=body, params={"search_pipeline": pipeline})
    return [(str(hit["_id"]), float(hit["_score"])) for hit in answer["hits"]["hits"]]


def embed_query(bi_encoder: Embedder, query: str) -> list[float]:
    return np.asarray(bi_encoder.embed_queries([query]), dtype=np.float32).reshape(-1).tolist()
