"""OpenSearch integration: the connection, the index, the RRF/rerank search pipelines, hybrid search.

* :mod:`~lrt_rerank.opensearch.connection` ``ConnectionSettings``: URL, user, password file, CA, client certificate
* :mod:`~lrt_rerank.opensearch.client`     ``connect``: a checked opensearch-py client from those settings
* :mod:`~lrt_rerank.opensearch.indexing`   mapping (text + lucene HNSW ``knn_vector``) and bulk loading
* :mod:`~lrt_rerank.opensearch.pipeline`   ``install_pipeline``: RRF search pipeline + ml-commons rerank model
* :mod:`~lrt_rerank.opensearch.searcher`   ``HybridSearcher`` (client-side re-rank) and the server-side search
* :mod:`~lrt_rerank.opensearch.remote`     ``RemoteReranker``: the rerank service as a client-side re-ranker
* :mod:`~lrt_rerank.opensearch.capabilities` node-side pipelines or client-side RRF (OpenSearch 3.x from Maven Central)
* :mod:`~lrt_rerank.opensearch.late`       ColBERT tokens at index time: in the node (``lateInteractionScore``) and in Redis

The names below load on first use, so that :mod:`~lrt_rerank.opensearch.connection` (the CLI's
connection flags) imports without opensearch-py.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConnectionSettings": "connection",
    "connect": "client",
    "IndexingError": "indexing",
    "IndexReport": "indexing",
    "index_documents": "indexing",
    "RERANK_PIPELINE": "pipeline",
    "RRF_PIPELINE": "pipeline",
    "InstalledPipeline": "pipeline",
    "PipelineError": "pipeline",
    "ensure_rrf_pipeline": "pipeline",
    "install_pipeline": "pipeline",
    "uninstall_pipeline": "pipeline",
    "RemoteReranker": "remote",
    "RemoteRerankError": "remote",
    "HybridSearcher": "searcher",
    "search_server_side": "searcher",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
