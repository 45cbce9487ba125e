"""Query bodies for the index built by :mod:`lrt_rerank.opensearch.indexing`.

BM25 is a ``match`` on ``content``; dense is a ``knn`` query on ``embedding``; the hybrid query
runs both, and the ``score-ranker-processor`` of the search pipeline fuses them with RRF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lrt_rerank.opensearch.indexing import CONTENT_FIELD, VECTOR_FIELD


def match_query(text: str) -> dict[str, Any]:
    return {"match": {CONTENT_FIELD: {"query": text}}}


def knn_query(vector: Sequence[float], k: int) -> dict[str, Any]:
    return {"knn": {VECTOR_FIELD: {"vector": [float(x) for x in vector], "k": k}}}


def search_body(query: dict[str, Any], size: int, source: Sequence[str] | bool = False) -> dict[str, Any]:
    return {"size": size, "query": query, "_source": source if isinstance(source, bool) else list(source)}


def hybrid_body(
    text: str, vector: Sequence[float], depth: int, source: Sequence[str] | bool = False, rerank_query: str | None = None
) -> dict[str, Any]:
    """A hybrid query returning the RRF top ``depth``; each sub-query contributes its top ``depth``.

    ``rerank_query`` adds the ``ext.rerank.query_context`` the rerank response processor reads.
    """
    body = search_body({"hybrid": {"queries": [match_query(text), knn_query(vector, depth)]}}, depth, source)
    if rerank_query is not None:
        body["ext"] = {"rerank": {"query_context": {"query_text": rerank_query}}}
    return body
