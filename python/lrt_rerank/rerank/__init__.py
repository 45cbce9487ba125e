"""The re-ranking core: one flow (score through the cache tiers, calibrate, interpolate, order, top_n,
budget, fail open) shared by the pipeline, the rerank service and the OpenSearch client-side searcher.

* :mod:`~lrt_rerank.rerank.types`: the ``Reranker`` protocol, ``Stage``, ``Hit``, ``SearchResult``, ``StageReport``, ``RerankStatus``;
* :mod:`~lrt_rerank.rerank.core`: :class:`RerankCore`, the flow;
* :mod:`~lrt_rerank.rerank.tiers`: the cache tiers in front of a re-ranker;
* :mod:`~lrt_rerank.rerank.budget`: the latency budget's cost estimate;
* :mod:`~lrt_rerank.rerank.redis_tier`: the shared Redis tier (needs the ``serve`` extra; not imported here).
"""

from lrt_rerank.rerank.core import RerankCore
from lrt_rerank.rerank.tiers import TieredScorer
from lrt_rerank.rerank.types import Hit, Reranker, RerankStatus, SearchResult, Stage, StageReport

__all__ = ["Hit", "RerankCore", "RerankStatus", "Reranker", "SearchResult", "Stage", "StageReport", "TieredScorer"]
