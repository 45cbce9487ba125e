"""First stage -> cross-encoder re-rank, inside an optional latency budget, failing open.

``Pipeline.search(query)`` asks the first stage for its hybrid (RRF) candidates, re-scores the
top ``rerank_depth`` of them with the re-ranker, and returns hits sorted by re-ranker score,
followed by any remaining candidates in first-stage order.

Interpolation: a re-ranker trained as a residual of the first stage says so in its model card
(``interpolation.weight`` > 0); the re-ranked score is then ``logit + weight * prior(first-stage
position)`` over the re-ranked candidates (:mod:`lrt_rerank.interpolation`). ``interpolation=``
overrides the card; 0 ranks by the logit alone.

Budget: ``budget_ms`` bounds the whole call. The time left after the first stage is spent
re-ranking candidates in chunks, in first-stage order, as long as the next chunk is expected
to finish in time (the expectation is a pessimistic running estimate of the re-ranker's cost
per passage, learnt from earlier calls). Before any estimate exists, the first chunk is a probe of
``PROBE_PASSAGES`` passages, so a cold pipeline overshoots its budget by at most that much.
What did not fit keeps its first-stage order below the re-ranked part; each hit says whether it
was re-ranked and the result says why re-ranking stopped.

Failure: an exception raised by the re-ranker is logged and the first-stage order is returned.
A re-ranker failure never loses results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lrt_rerank._core import ScoreCache
from lrt_rerank.first_stage.base import Candidate, FirstStage
from lrt_rerank.interpolation import combine, resolve_weight

logger = logging.getLogger(__name__)

PROBE_PASSAGES = 4  # the first budgeted chunk, scored before the cost per passage is known


class Reranker(Protocol):
    """What the pipeline needs from a re-ranker (``lrt_rerank.CrossEncoder`` satisfies it)."""

    def score(self, query: str, passages: list[str]) -> npt.NDArray[np.float32]:
        """One relevance score per passage, in input order."""
        ...


class RerankStatus(str, Enum):
    DISABLED = "disabled"  # no re-ranker configured
    COMPLETE = "complete"  # every candidate up to rerank_depth was re-ranked
    PARTIAL = "partial"  # the budget ran out part-way; the rest kept first-stage order
    OUT_OF_BUDGET = "out_of_budget"  # no chunk fitted in the budget
    FAILED = "failed"  # the re-ranker raised; first-stage order returned
    EMPTY = "empty"  # nothing to re-rank (empty query or no candidates)


@dataclass(frozen=True)
class Hit:
    """One result. ``score`` is the re-ranked score when ``reranked`` (the re-ranker's, interpolated with
    the first-stage score when the pipeline interpolates), else the first-stage score."""

    id: str
    score: float
    rank: int
    first_stage_rank: int
    first_stage_score: float
    reranked: bool


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    status: RerankStatus
    reranked: int
    first_stage_ms: float
    rerank_ms: float
    total_ms: float


class Pipeline:
    """Hybrid first stage + cross-encoder re-ranking.

    Args:
        first_stage: any :class:`~lrt_rerank.first_stage.base.FirstStage`.
        reranker: an object with ``score(query, passages) -> array`` (e.g. ``CrossEncoder``);
            ``None`` returns the first-stage order.
        rerank_depth: how many of the top first-stage candidates to re-rank.
        cache: the ``ScoreCache`` the re-ranker was loaded with (default: the re-ranker's
            ``cache`` attribute, if any), reported by ``cache_stats()``; lookups happen inside
            the re-ranker.
        candidates: how many first-stage candidates to fetch (at least ``k`` and ``rerank_depth``).
        chunk_size: passages scored per step when a budget is set.
        interpolation: weight of the first-stage score in the re-ranked score (see the module
            docstring); default: the re-ranker's model card (``card`` attribute), else 0.
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
        self.chunk_size = chunk_size
        self.interpolation = resolve_weight(reranker, interpolation)
        self._ms_per_passage: float | None = None

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
        first_stage_done = time.perf_counter()
        first_stage_ms = (first_stage_done - start) * 1000.0

        scores, status = self._rerank(query, candidates[: self.rerank_depth], start, budget_ms)
        if scores and self.interpolation > 0:
            scores = combine(scores, self.interpolation).tolist()
        hits = _merge(candidates, scores)[:k]
        end = time.perf_counter()
        return SearchResult(
            hits=hits,
            status=status,
            reranked=len(scores),
            first_stage_ms=first_stage_ms,
            rerank_ms=(end - first_stage_done) * 1000.0,
            total_ms=(end - start) * 1000.0,
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

    def _rerank(
        self, query: str, top: Sequence[Candidate], start: float, budget_ms: float | None
    ) -> tuple[list[float], RerankStatus]:
        reranker = self.reranker
        if reranker is None:
            return [], RerankStatus.DISABLED
        if not top:
            return [], RerankStatus.EMPTY
        scores: list[float] = []
        try:
            texts = self.first_stage.get_texts([candidate.id for candidate in top])
            if budget_ms is None:
                scores = self._score(reranker, query, texts)
                return scores, RerankStatus.COMPLETE
            while len(scores) < len(texts):
                size = self._chunk_that_fits(budget_ms - (time.perf_counter() - start) * 1000.0)
                if size == 0:
                    break
                scores.extend(self._score(reranker, query, texts[len(scores) : len(scores) + size]))
        except Exception:
            logger.exception("re-ranker failed; returning first-stage order for query %r", query[:200])
            return [], RerankStatus.FAILED
        if len(scores) == len(top):
            return scores, RerankStatus.COMPLETE
        return scores, (RerankStatus.PARTIAL if scores else RerankStatus.OUT_OF_BUDGET)

    def _chunk_that_fits(self, remaining_ms: float) -> int:
        """Passages to score next: a full chunk, fewer if the estimate says only fewer fit, 0 if none."""
        if remaining_ms <= 0:
            return 0
        if self._ms_per_passage is None or self._ms_per_passage <= 0:
            return min(self.chunk_size, PROBE_PASSAGES)
        return min(self.chunk_size, int(remaining_ms / self._ms_per_passage))

    def _score(self, reranker: Reranker, query: str, passages: list[str]) -> list[float]:
        began = time.perf_counter()
        raw = np.asarray(reranker.score(query, passages), dtype=np.float64).reshape(-1)
        if raw.shape[0] != len(passages):
            raise ValueError(f"re-ranker returned {raw.shape[0]} scores for {len(passages)} passages")
        if not np.isfinite(raw).all():
            raise ValueError("re-ranker returned a non-finite score")
        per_passage = (time.perf_counter() - began) * 1000.0 / len(passages)
        previous = self._ms_per_passage
        # Pessimistic running estimate: a slower chunk is believed at once, a faster one (say,
        # served from the score cache) only lowers the estimate gradually.
        if previous is None or per_passage > previous:
            self._ms_per_passage = per_passage
        else:
            self._ms_per_passage = 0.7 * previous + 0.3 * per_passage
        return raw.tolist()


def _merge(candidates: Sequence[Candidate], scores: Sequence[float]) -> list[Hit]:
    """Re-ranked prefix sorted by score (ties keep first-stage order), then the rest unchanged."""
    head = sorted(zip(candidates, scores, strict=False), key=lambda pair: (-pair[1], pair[0].rank))
    ordered = [(c, s, True) for c, s in head] + [(c, c.score, False) for c in candidates[len(scores) :]]
    return [
        Hit(c.id, float(score), rank, c.rank, c.score, reranked)
        for rank, (c, score, reranked) in enumerate(ordered, start=1)
    ]
