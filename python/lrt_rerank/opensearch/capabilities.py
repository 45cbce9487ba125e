"""What the connected node can run: node-side pipelines (neural-search + ml-commons) or client-side fusion only.

OpenSearch 2.19 assembled from Maven Central has k-NN, ml-commons and neural-search: the hybrid query,
the RRF/normalization search pipelines and the rerank processor run in the node. OpenSearch 3.x from
Maven Central has k-NN alone (neural-search, ml-commons and job-scheduler 3.x are not published there):
BM25 and k-NN are searched separately and fused by :func:`client_rrf` in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opensearchpy import OpenSearch

from lrt_rerank.first_stage.base import RRF_K
from lrt_rerank.opensearch.queries import knn_query, match_query, search_body

NEURAL_SEARCH = "opensearch-neural-search"
ML_COMMONS = "opensearch-ml"
KNN = "opensearch-knn"


def node_plugins(client: OpenSearch) -> set[str]:
    """Names of the plugins the cluster's nodes have (``_cat/plugins``)."""
    return {str(row["component"]) for row in client.cat.plugins(format="json")}


def node_fuses(client: OpenSearch) -> bool:
    """Whether the node runs the hybrid query and its RRF search pipeline (neural-search installed)."""
    return NEURAL_SEARCH in node_plugins(client)


def pipeline_refusal(client: OpenSearch) -> str | None:
    """One line saying why the node cannot host the rerank pipeline and what works instead, or None."""
    missing = [name for name in (NEURAL_SEARCH, ML_COMMONS) if name not in node_plugins(client)]
    if not missing:
        return None
    version = client.info()["version"]["number"]
    return (
        f"OpenSearch {version} has no {' and no '.join(missing)} plugin, which the node-side rerank pipeline needs "
        "(neither is on Maven Central for 3.x); use the client-side searcher instead: `lrt-rerank eval --first-stage URL` "
        "or lrt_rerank.opensearch.HybridSearcher(..., pipeline=None) (BM25 + k-NN fused and re-ranked in this process)"
    )


def client_rrf(
    client: OpenSearch, index: str, text: str, vector: Sequence[float], depth: int, source: Sequence[str] | bool = False
) -> list[dict[str, Any]]:
    """The hybrid query's top ``depth`` fused in this process: RRF (k = :data:`RRF_K`) of the BM25 and k-NN
    top ``depth``, as the node's ``lrt-rrf`` pipeline fuses them. Raw-hit shaped (``_id``, ``_score``, ``_source``)."""
    from lrt_rerank import rrf

    runs = [
        list(client.search(index=index, body=search_body(query, depth, source))["hits"]["hits"])
        for query in (match_query(text), knn_query(vector, depth))
    ]
    by_id = {str(hit["_id"]): hit for run in runs for hit in run}
    fused = rrf([[str(hit["_id"]) for hit in run] for run in runs], k=RRF_K, top_k=depth)
    return [{"_id": doc_id, "_score": float(score), "_source": by_id[doc_id].get("_source", {})} for doc_id, score in fused]
