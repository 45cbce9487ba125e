"""The re-ranking flow every path runs: score through the cache tiers, calibrate, interpolate with the
first-stage order, order, cut to ``top_n``, inside an optional latency budget, failing open.

:class:`RerankCore` is used by :class:`lrt_rerank.pipeline.Pipeline` (embedded first stage), the rerank
service's engine (:mod:`lrt_rerank.service.engine`) and the OpenSearch client-side searcher
(:class:`lrt_rerank.opensearch.searcher.HybridSearcher`); they only fetch candidates and texts and
shape the answer.

Order: the re-ranked prefix (the first ``depth`` candidates, or as many as the budget allowed) sorted
by score, ties in first-stage order, then the remaining candidates in first-stage order.

Score: the re-ranker's logit, or with interpolation ``logit + weight * prior(first-stage position)``
(:func:`lrt_rerank.interpolation.combine`), rounded to float32 (the precision the service sends, so
every path orders the same values). ``relevance`` is the calibrated probability of the logit.

Tuned fusion: with a :class:`~lrt_rerank.rerank.fusion.Fusion` and the candidates' first-stage
signals, the fused score (:meth:`Fusion.scores`, the logit among its terms when it weighs one) takes
the place of the rank-prior interpolation. Without a re-ranker the first ``depth`` candidates are
ordered by the fusion alone; with one, the scored prefix is (a failed call keeps first-stage order).

Budget: ``budget_ms`` bounds the whole call, first stage included. The time left is spent scoring
candidates in chunks, in first-stage order, as long as the next chunk is expected to finish in time
(:mod:`lrt_rerank.rerank.budget`).

Failure: any exception while fetching texts or scoring is logged, and the candidates come back in
first-stage order with status ``failed`` and the error. A re-ranker failure never loses results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from lrt_rerank._core import ScoreCache
from lrt_rerank.first_stage.base import Candidate
from lrt_rerank.interpolation import combine, resolve_weight
from lrt_rerank.rerank.budget import CostEstimate
from lrt_rerank.rerank.fusion import Fusion, Signals
from lrt_rerank.rerank.tiers import SharedTier, TieredScorer
from lrt_rerank.rerank.types import Hit, Reranker, RerankStatus, SearchResult

logger = logging.getLogger(__name__)

Texts = Sequence[str] | Callable[[list[str]], Sequence[str]]
"""The candidates' texts in candidate order, or a function from their ids to them (called inside the
fail-open guard, so a failing text store also fails open)."""


class RerankCore:
    """One re-ranker and its policy: depth, interpolation, cache tiers, chunking of budgeted calls.

    Args:
        reranker: anything with ``score(query, passages) -> array``; ``None`` keeps first-stage order.
        depth: how many of the top candidates to re-rank.
        interpolation: weight of the first-stage order in the score; default: the re-ranker's model
            card (``card`` attribute), else 0.
        cache: an in-process ``ScoreCache`` consulted before the re-ranker. Not needed when the
            re-ranker was loaded with this cache (it then looks it up itself).
        shared: a shared tier (Redis) consulted after ``cache``.
        chunk_size: passages scored per step when a budget is set.
        fusion: a tuned fusion (``lrt-rerank tune``) to order by in place of the interpolation, when
            :meth:`rerank` is given the candidates' signals.
    """

    def __init__(
        self,
        reranker: Reranker | None,
        depth: int = 50,
        interpolation: float | None = None,
        cache: ScoreCache | None = None,
        shared: SharedTier | None = None,
        chunk_size: int = 16,
        fusion: Fusion | None = None,
    ) -> None:
        if depth < 0:
            raise ValueError(f"rerank depth must be >= 0, got {depth}")
        if fusion is not None and fusion.uses_reranker and reranker is None:
            raise ValueError(f"{fusion.source}: field 'weights.reranker' is {fusion.weights['reranker']:g}: this fusion needs a re-ranker")
        self.fusion = fusion
        self.reranker = reranker
        self.depth = depth
        self.interpolation = resolve_weight(reranker, interpolation)
        if getattr(reranker, "cache", None) is cache:
            cache = None  # the re-ranker looks it up itself
        self.scorer: Reranker | None = reranker
        if reranker is not None and (cache is not None or shared is not None):
            self.scorer = TieredScorer(reranker, cache, shared)
        self.calibration = getattr(reranker, "calibration", None)
        self.cost = CostEstimate(chunk_size)

    def rerank(
        self,
        query: str,
        candidates: Sequence[Candidate],
        texts: Texts,
        top_n: int | None = None,
        budget_ms: float | None = None,
        first_stage_ms: float = 0.0,
        interpolate: bool = True,
        signals: Signals | None = None,
    ) -> SearchResult:
        """Re-rank ``candidates`` (in first-stage order, ranks 1..n) for ``query``.

        ``first_stage_ms`` is the time already spent (it counts against ``budget_ms``);
        ``interpolate=False`` ranks by the logit alone (the candidates' order means nothing);
        ``signals`` (of at least the first ``depth`` candidates) let a tuned fusion order them.
        """
        if top_n is not None and top_n < 0:
            raise ValueError(f"top_n must be >= 0, got {top_n}")
        if budget_ms is not None and budget_ms < 0:
            raise ValueError(f"budget_ms must be >= 0, got {budget_ms}")
        began = time.perf_counter()
        top = list(candidates[: self.depth])
        logits: list[float] = []
        error: str | None = None
        if self.scorer is None:
            status = RerankStatus.DISABLED
        elif not top:
            status = RerankStatus.EMPTY
        else:
            try:
                passages = list(texts([c.id for c in top]) if callable(texts) else texts[: len(top)])
                if len(passages) != len(top):
                    raise ValueError(f"{len(passages)} texts for {len(top)} candidates")
                logits = self._score_within(query, passages, budget_ms, first_stage_ms, began)
            except Exception as exc:  # noqa: BLE001 - fail open on any re-ranker error
                error = f"{type(exc).__name__}: {exc}"
                # one line per failure (the error names what failed); the traceback only at debug level
                logger.error("re-ranker failed (%s); returning the first-stage order", error)
                logger.debug("re-ranker traceback", exc_info=True)
                logits = []
            status = _status(error, len(logits), len(top))
        hits = self._merge(candidates, logits, interpolate, signals if status != RerankStatus.FAILED else None)
        if top_n is not None:
            hits = hits[:top_n]
        rerank_ms = (time.perf_counter() - began) * 1000.0
        return SearchResult(hits, status, len(logits), first_stage_ms, rerank_ms, first_stage_ms + rerank_ms, error)

    def _score_within(
        self, query: str, passages: list[str], budget_ms: float | None, spent_ms: float, began: float
    ) -> list[float]:
        if budget_ms is None:
            return self._score(query, passages)
        scores: list[float] = []
        while len(scores) < len(passages):
            remaining = budget_ms - spent_ms - (time.perf_counter() - began) * 1000.0
            size = self.cost.chunk_that_fits(remaining)
            if size == 0:
                break
            scores.extend(self._score(query, passages[len(scores) : len(scores) + size]))
        return scores

    def _score(self, query: str, passages: list[str]) -> list[float]:
        assert self.scorer is not None
        began = time.perf_counter()
        raw = np.asarray(self.scorer.score(query, passages), dtype=np.float32).reshape(-1)
        if raw.shape[0] != len(passages):
            raise ValueError(f"re-ranker returned {raw.shape[0]} scores for {len(passages)} passages")
        if not np.isfinite(raw).all():
            raise ValueError("re-ranker returned a non-finite score")
        self.cost.observe(len(passages), (time.perf_counter() - began) * 1000.0)
        return [float(x) for x in raw]

    def _merge(
        self, candidates: Sequence[Candidate], logits: list[float], interpolate: bool, signals: Signals | None
    ) -> list[Hit]:
        n = len(logits)
        ranking: npt.NDArray[np.float32] = np.asarray(logits, dtype=np.float32)
        if self.fusion is not None and signals is not None and interpolate:
            n = n if self.scorer is not None else min(self.depth, len(candidates), len(signals))
            ranking = self.fusion.scores(signals.head(n), logits or None).astype(np.float32)
        elif n and interpolate and self.interpolation > 0:
            ranking = combine(logits, self.interpolation).astype(np.float32)
        relevance = self.calibration.apply(np.asarray(logits, dtype=np.float32)) if logits and self.calibration is not None else None
        order = sorted(range(n), key=lambda i: (-float(ranking[i]), candidates[i].rank)) + list(range(n, len(candidates)))
        hits = []
        for rank, i in enumerate(order, start=1):
            c, reranked = candidates[i], i < len(logits)
            hits.append(
                Hit(
                    id=c.id,
                    score=float(ranking[i]) if i < n else c.score,
                    rank=rank,
                    first_stage_rank=c.rank,
                    first_stage_score=c.score,
                    reranked=reranked,
                    logit=logits[i] if reranked else None,
                    relevance=float(relevance[i]) if reranked and relevance is not None else None,
                )
            )
        return hits


def _status(error: str | None, scored: int, wanted: int) -> RerankStatus:
    if error is not None:
        return RerankStatus.FAILED
    if scored == wanted:
        return RerankStatus.COMPLETE
    return RerankStatus.PARTIAL if scored else RerankStatus.OUT_OF_BUDGET
