"""Hybrid search against OpenSearch, re-ranked client-side (in-process) or server-side.

Client-side (:class:`HybridSearcher`), for clusters without ml-commons: the hybrid query
(``match`` + ``knn`` with the query's bi-encoder vector) goes through the ``lrt-rrf`` pipeline;
the returned hits go through the re-ranking core (:mod:`lrt_rerank.rerank`) in this process: re-scored,
sorted by score (ties keep RRF order), within an optional budget; if the re-ranker raises, the RRF
order is returned with a logged warning and the error.

Tuned fusion (``fusion=``, a ``fusion.json`` of ``lrt-rerank tune``): client-side, the searcher also
asks the node for the candidates' BM25 and dense scores (a ``match`` and a ``knn`` query, each to depth
:data:`~lrt_rerank.rerank.fusion.FEATURE_POOL`) and the core orders by the fusion, as ``Pipeline`` does.
A fusion installed in the node (:func:`~lrt_rerank.opensearch.pipeline.place_fusion`) is searched through
its pipeline with ``pool=`` instead, and needs no ``fusion=`` here.

Server-side (:func:`search_server_side`): the same hybrid query through ``lrt-rrf-rerank``,
whose ``rerank`` response processor asks the rerank service (see
:mod:`lrt_rerank.opensearch.pipeline`). The pipeline ignores re-rank failures, so a dead or
slow service yields the RRF order.

Both re-rank exactly the hits the hybrid query returned (its ``depth``) and read the same text
(the stored ``content`` field), so on the same hits they produce the same order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from opensearchpy import OpenSearch

from lrt_rerank._core import ScoreCache
from lrt_rerank.first_stage.base import Candidate
from lrt_rerank.opensearch.capabilities import client_rrf
from lrt_rerank.opensearch.indexing import CONTENT_FIELD, Embedder
from lrt_rerank.opensearch.pipeline import RERANK_PIPELINE, RRF_PIPELINE
from lrt_rerank.opensearch.queries import hybrid_body, knn_query, match_query, search_body
from lrt_rerank.rerank import Hit, Reranker, RerankCore, RerankStatus, SearchResult
from lrt_rerank.rerank.fusion import FEATURE_POOL, Fusion, Signals, load_fusion, signals_of

SOURCE_FIELDS = ("doc_id", "title", CONTENT_FIELD)


class HybridSearcher:
    """Hybrid (BM25 + k-NN, RRF in the cluster) search re-ranked in this process by the re-ranking core.

    Args:
        client: an ``OpenSearch`` client.
        index: an index built by :func:`lrt_rerank.opensearch.indexing.index_documents`.
        bi_encoder: embeds the query for the ``knn`` half (the model the index was built with).
        reranker: re-scores (query, passage) pairs, e.g. ``CrossEncoder``; ``None`` keeps RRF order.
        cache: a ``ScoreCache`` consulted before the re-ranker (needs ``reranker.fingerprint``).
            Not needed when the re-ranker was loaded with this cache: it looks it up itself.
        depth: hits the hybrid query returns and the re-ranker scores.
        pipeline: the RRF search pipeline (``lrt-rrf``, see ``ensure_rrf_pipeline``); None fuses BM25 and k-NN
            in this process (:func:`~lrt_rerank.opensearch.capabilities.client_rrf`), for a node without
            neural-search (OpenSearch 3.x from Maven Central).
        interpolation: weight of the RRF order in the re-ranked score (:mod:`lrt_rerank.interpolation`);
            default: the re-ranker's model card (``card``), else 0. The server-side pipeline gets the
            same from the service (its connector sends ``first_stage_order``).
        fusion: a tuned fusion, or the path of its ``fusion.json``, applied here (client-side).
        pool: each hybrid sub-query's depth (``pagination_depth``); a fusion installed in the node
            normalises over it (:attr:`~lrt_rerank.opensearch.pipeline.FusionPlacement.pool`).
    """

    def __init__(
        self,
        client: OpenSearch,
        index: str,
        bi_encoder: Embedder,
        reranker: Reranker | None,
        cache: ScoreCache | None = None,
        depth: int = 50,
        pipeline: str | None = RRF_PIPELINE,
        interpolation: float | None = None,
        fusion: Fusion | str | Path | None = None,
        pool: int | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if pool is not None and pipeline is None:
            raise ValueError("pool sets the node's hybrid query (pagination_depth); pipeline=None fuses in this process")
        if pool is not None and pool < depth:
            raise ValueError(f"pool must be >= depth ({depth}), got {pool}")
        self.client = client
        self.index = index
        self.bi_encoder = bi_encoder
        self.reranker = reranker
        self.depth = depth
        self.pipeline = pipeline
        self.pool = pool
        self.fusion = load_fusion(fusion) if isinstance(fusion, (str, Path)) else fusion
        self.core = RerankCore(reranker, depth, interpolation, cache=cache, fusion=self.fusion)
        self.interpolation = self.core.interpolation

    def first_stage(self, query: str, depth: int | None = None, vector: Sequence[float] | None = None) -> list[dict[str, Any]]:
        """The hybrid query's hits through the search pipeline (raw OpenSearch hits with ``_source``), best first."""
        vector = embed_query(self.bi_encoder, query) if vector is None else vector
        if self.pipeline is None:
            return client_rrf(self.client, self.index, query, vector, depth or self.depth, SOURCE_FIELDS)
        body = hybrid_body(query, vector, depth or self.depth, source=list(SOURCE_FIELDS), pool=self.pool)
        answer = self.client.search(index=self.index, body=body, params={"search_pipeline": self.pipeline})
        return list(answer["hits"]["hits"])

    def signals(self, query: str, vector: Sequence[float], ids: Sequence[str]) -> Signals:
        """The fusion's signals of the candidates ``ids``: BM25 and k-NN each searched to :data:`FEATURE_POOL`."""
        pools = []
        for sub in (match_query(query), knn_query(vector, FEATURE_POOL)):
            answer = self.client.search(index=self.index, body=search_body(sub, FEATURE_POOL))
            hits = answer["hits"]["hits"]
            pools.append([Candidate(str(h["_id"]), float(h["_score"]), rank) for rank, h in enumerate(hits, start=1)])
        return signals_of(ids, pools[0], pools[1])

    def search(self, query: str, k: int | None = None, budget_ms: float | None = None) -> SearchResult:
        """Top ``k`` (default: ``depth``) hits, re-ranked within ``budget_ms``; RRF order if the re-ranker fails.

        Each hit carries the document's ``_source`` as ``source``.
        """
        if not query.strip():
            return SearchResult([], RerankStatus.EMPTY, 0, 0.0, 0.0, 0.0)
        started = time.perf_counter()
        vector = embed_query(self.bi_encoder, query)
        raw = self.first_stage(query, max(k or 0, self.depth), vector)
        candidates = [Candidate(str(hit["_id"]), float(hit["_score"]), rank) for rank, hit in enumerate(raw, start=1)]
        signals = None
        if self.fusion is not None and not (self.reranker is None and self.fusion.is_first_stage_order):
            signals = self.signals(query, vector, [c.id for c in candidates[: self.depth]])
        first_stage_ms = (time.perf_counter() - started) * 1000.0
        texts = [str(hit["_source"].get(CONTENT_FIELD, "")) for hit in raw[: self.depth]]
        result = self.core.rerank(
            query, candidates, texts, top_n=k or self.depth, budget_ms=budget_ms, first_stage_ms=first_stage_ms, signals=signals
        )
        hits = [with_source(hit, raw[hit.first_stage_rank - 1]) for hit in result.hits]
        return dataclasses.replace(result, hits=hits)


def with_source(hit: Hit, raw: dict[str, Any]) -> Hit:
    """``hit`` carrying the raw OpenSearch hit's ``_source``."""
    return dataclasses.replace(hit, source=dict(raw.get("_source", {})))


def search_server_side(
    client: OpenSearch, index: str, query: str, vector: Sequence[float], depth: int = 50, pipeline: str = RERANK_PIPELINE
) -> list[tuple[str, float]]:
    """(id, score) of the hybrid query's top ``depth`` through the server-side rerank pipeline."""
    body = hybrid_body(query, vector, depth, source=[CONTENT_FIELD], rerank_query=query)
    answer = client.search(index=index, body=body, params={"search_pipeline": pipeline})
    return [(str(hit["_id"]), float(hit["_score"])) for hit in answer["hits"]["hits"]]


def embed_query(bi_encoder: Embedder, query: str) -> list[float]:
    return np.asarray(bi_encoder.embed_queries([query]), dtype=np.float32).reshape(-1).tolist()
