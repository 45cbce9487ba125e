"""First stage -> the re-ranking core (:mod:`lrt_rerank.rerank`), inside an optional latency budget.

``Pipeline.search(query)`` asks the first stage for its hybrid (RRF) candidates and hands the top
``rerank_depth`` of them to :class:`~lrt_rerank.rerank.RerankCore`, which re-scores them, orders them
(the re-ranked part by score, then the rest in first-stage order), interpolates with the first-stage
order when the re-ranker's card asks for it, keeps to the budget and fails open. See
:mod:`lrt_rerank.rerank.core` for the rules.

With a tuned fusion (``fusion=``, a ``fusion.json`` of ``lrt-rerank tune``), the first stage is also
asked for the candidates' BM25 and dense signals (:func:`lrt_rerank.rerank.fusion.first_stage_signals`,
counted in the first-stage time) and the core orders by the fusion in place of the rank prior. A fusion
that keeps the first stage's RRF, without a re-ranker, costs nothing: the first-stage order is the answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from lrt_rerank._core import ScoreCache
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.rerank import Hit, Reranker, RerankCore, RerankStatus, SearchResult, Stage
from lrt_rerank.rerank.fusion import Fusion, first_stage_signals, load_fusion

__all__ = ["Hit", "Pipeline", "Reranker", "RerankStatus", "SearchResult"]


class Pipeline:
    """Hybrid first stage + re-ranking.

    Args:
        first_stage: any :class:`~lrt_rerank.first_stage.base.FirstStage`.
        reranker: an object with ``score(query, passages) -> array`` (e.g. ``CrossEncoder``);
            ``None`` returns the first-stage order.
        rerank_depth: how many of the top first-stage candidates to re-rank.
        cache: the ``ScoreCache`` to report in ``cache_stats()`` (default: the re-ranker's ``cache``
            attribute, if any). One the re-ranker was not loaded with is consulted before it.
        candidates: how many first-stage candidates to fetch (at least ``k`` and ``rerank_depth``).
        chunk_size: passages scored per step when a budget is set.
        interpolation: weight of the first-stage order in the re-ranked score; default: the
            re-ranker's model card (``card`` attribute), else 0.
        fusion: a tuned fusion, or the path of its ``fusion.json``; ``None`` keeps the interpolation.
        then: later stages of a cascade (a ``plan.json``'s), each re-ranking the top of the previous order.
    """

    def __init__(
        self,
        first_stage: FirstStage,
        reranker: Reranker | None = None,
        rerank_depth: int = 50,
        cache: ScoreCache | None = None,
        candidates: int = 100,
        chunk_size: int = 16,
        interpolation: float | None = None,
        fusion: Fusion | str | Path | None = None,
        then: Sequence[Stage] = (),
    ) -> None:
        if rerank_depth < 0:
            raise ValueError(f"rerank_depth must be >= 0, got {rerank_depth}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.first_stage = first_stage
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.cache: ScoreCache | None = cache if cache is not None else getattr(reranker, "cache", None)
        self.candidates = candidates
        self.fusion = load_fusion(fusion) if isinstance(fusion, (str, Path)) else fusion
        self.core = RerankCore(
            reranker, rerank_depth, interpolation, cache=self.cache, chunk_size=chunk_size, fusion=self.fusion, then=then
        )
        self.interpolation = self.core.interpolation

    @classmethod
    def of_stages(cls, first_stage: FirstStage, stages: Sequence[Stage], candidates: int = 100, chunk_size: int = 16) -> Pipeline:
        """The pipeline running ``stages`` (a cascade, e.g. a ``plan.json``'s; none: the first stage alone)."""
        if not stages:
            return cls(first_stage, None, rerank_depth=0, candidates=candidates, chunk_size=chunk_size)
        first = stages[0]
        return cls(
            first_stage, first.reranker, rerank_depth=first.depth, candidates=candidates, chunk_size=chunk_size,
            interpolation=first.interpolation, then=stages[1:],
        )

    def search(self, query: str, k: int = 10, budget_ms: float | None = None) -> list[Hit]:
        """Top ``k`` hits for ``query``; see :meth:`run` for timings and the re-rank status."""
        return self.run(query, k, budget_ms).hits

    def run(self, query: str, k: int = 10, budget_ms: float | None = None) -> SearchResult:
        """Search and report hits, re-rank status and per-stage timings (ms)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if budget_ms is not None and budget_ms < 0:
            raise ValueError(f"budget_ms must be >= 0, got {budget_ms}")
        start = time.perf_counter()
        if not query.strip():
            return SearchResult([], RerankStatus.EMPTY, 0, 0.0, 0.0, 0.0)
        candidates = self.first_stage.search(query, max(k, self.rerank_depth, self.candidates), "rrf")
        signals = None
        if self.fusion is not None and not (self.reranker is None and self.fusion.is_first_stage_order):
            signals = first_stage_signals(self.first_stage, query, [c.id for c in candidates[: self.rerank_depth]])
        first_stage_ms = (time.perf_counter() - start) * 1000.0
        return self.core.rerank(
            query, candidates, self.first_stage.get_texts, top_n=k, budget_ms=budget_ms, first_stage_ms=first_stage_ms,
            signals=signals,
        )

    def cache_stats(self) -> dict[str, int] | None:
        """Counters of the score cache (hits, misses, evictions, entries, capacity), or None without one."""
        if self.cache is None:
            return None
        return {
            "hits": self.cache.hits,
            "misses": self.cache.misses,
            "evictions": self.cache.evictions,
            "entries": len(self.cache),
            "capacity": self.cache.capacity,
        }
