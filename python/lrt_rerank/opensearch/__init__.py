"""OpenSearch integration: a local node, the index, the RRF/rerank search pipelines, hybrid search.

* :mod:`~lrt_rerank.opensearch.node`      a local node or cluster of OpenSearch from Maven Central artifacts
* :mod:`~lrt_rerank.opensearch.indexing`  mapping (text + lucene HNSW ``knn_vector``) and bulk loading
* :mod:`~lrt_rerank.opensearch.pipeline`  ``install_pipeline``: RRF search pipeline + ml-commons rerank model
* :mod:`~lrt_rerank.opensearch.searcher`  ``HybridSearcher`` (client-side re-rank) and the server-side search
* :mod:`~lrt_rerank.opensearch.remote`    ``RemoteReranker``: the rerank service as a client-side re-ranker
"""

from lrt_rerank.opensearch.client import connect
from lrt_rerank.opensearch.indexing import IndexingError, IndexReport, index_documents
from lrt_rerank.opensearch.pipeline import (
    RERANK_PIPELINE,
    RRF_PIPELINE,
    InstalledPipeline,
    PipelineError,
    ensure_rrf_pipeline,
    install_pipeline,
    uninstall_pipeline,
)
from lrt_rerank.opensearch.remote import RemoteReranker, RemoteRerankError
from lrt_rerank.opensearch.searcher import HybridSearcher, search_server_side

__all__ = [
    "RERANK_PIPELINE",
    "RRF_PIPELINE",
    "HybridSearcher",
    "IndexReport",
    "IndexingError",
    "InstalledPipeline",
    "PipelineError",
    "RemoteRerankError",
    "RemoteReranker",
    "connect",
    "ensure_rrf_pipeline",
    "index_documents",
    "install_pipeline",
    "search_server_side",
    "uninstall_pipeline",
]
