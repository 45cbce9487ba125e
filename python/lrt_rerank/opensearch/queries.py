"""Query bodies for the index built by :mod:`lrt_rerank.opensearch.indexing`.

BM25 is a ``match`` on ``content``; dense is a ``knn`` query on ``embedding``; the hybrid query
runs both, and the search pipeline fuses them: the ``score-ranker-processor`` with RRF, or the
``normalization-processor`` of a tuned fusion that runs in the node (:mod:`lrt_rerank.opensearch.pipeline`).
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
    text: str,
    vector: Sequence[float],
    depth: int,
    source: Sequence[str] | bool = False,
    rerank_query: str | None = None,
    pool: int | None = None,
) -> dict[str, Any]:
    """A hybrid query returning the fused top ``depth``; each sub-query contributes its top ``depth``, or
    with ``pool`` its top ``pool`` (``pagination_depth``: the set a normalization-processor normalises over).

    ``rerank_query`` adds the ``ext.rerank.query_context`` the rerank response processor reads.
    """
    hybrid: dict[str, Any] = {"queries": [match_query(text), knn_query(vector, pool or depth)]}
    if pool is not None:
        hybrid["pagination_depth"] = pool
    body = search_body({"hybrid": hybrid}, depth, source)
    if rerank_query is not None:
        body["ext"] = {"rerank": {"query_context": {"query_text": rerank_query}}}
    return body
