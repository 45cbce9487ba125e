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

Stages (cascades): after the first re-ranker, further :class:`~lrt_rerank.rerank.types.Stage` objects
each re-rank the top ``depth`` of the previous stage's order (depths never grow), with the previous
stage's order as the interpolation's prior and as the tie-break. The texts are fetched once.

Budget: ``budget_ms`` bounds the whole call, first stage and every re-ranking stage included. The time
left is spent scoring candidates in chunks, in the order of the stage's input, as long as the next
chunk is expected to finish in time (:mod:`lrt_rerank.rerank.budget`; one cost estimate per stage). The
first re-ranker's scored prefix is kept when the budget cuts it; a later stage cut short is dropped,
and the last completed stage's order is the answer (status ``partial``).

Failure: any exception while fetching texts or scoring is logged, and the candidates come back in the
order of the last completed stage (first-stage order when the first re-ranker fails) with status
``failed`` and the error. A re-ranker failure never loses results. ``SearchResult.stages`` reports
each stage's status, count, time and error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from lrt_rerank._core import ScoreCache
from lrt_rerank.first_stage.base import Candidate
from lrt_rerank.interpolation import combine, resolve_weight
from lrt_rerank.rerank.budget import CostEstimate
from lrt_rerank.rerank.fusion import Fusion, Signals
from lrt_rerank.rerank.tiers import SharedTier, TieredScorer
from lrt_rerank.rerank.types import Hit, Reranker, RerankStatus, SearchResult, Stage, StageReport

logger = logging.getLogger(__name__)

Texts = Sequence[str] | Callable[[list[str]], Sequence[str]]
"""The candidates' texts in candidate order, or a function from their ids to them (called inside the
fail-open guard, so a failing text store also fails open)."""


class _StageRunner:
    """One re-ranking stage with its policy: depth, interpolation weight, cache tiers, cost estimate."""

    def __init__(self, stage: Stage, name: str, cache: ScoreCache | None, shared: SharedTier | None, chunk_size: int) -> None:
        if stage.depth < 0:
            raise ValueError(f"rerank depth must be >= 0, got {stage.depth}")
        self.name = stage.name or name
        self.reranker = stage.reranker
        self.depth = stage.depth
        self.interpolation = resolve_weight(stage.reranker, stage.interpolation)
        if getattr(stage.reranker, "cache", None) is cache:
            cache = None  # the re-ranker looks it up itself
        self.scorer: Reranker = stage.reranker
        if cache is not None or shared is not None:
            self.scorer = TieredScorer(stage.reranker, cache, shared)
        self.calibration = getattr(stage.reranker, "calibration", None)
        self.cost = CostEstimate(chunk_size)


class RerankCore:
    """One re-ranker (or a cascade of them) and its policy: depth, interpolation, cache tiers, chunking
    of budgeted calls.

    Args:
        reranker: anything with ``score(query, passages) -> array``; ``None`` keeps first-stage order.
        depth: how many of the top candidates to re-rank.
        interpolation: weight of the first-stage order in the score; default: the re-ranker's model
            card (``card`` attribute), else 0.
        cache: an in-process ``ScoreCache`` consulted before the re-ranker(s). Not needed when the
            re-ranker was loaded with this cache (it then looks it up itself).
        shared: a shared tier (Redis) consulted after ``cache``.
        chunk_size: passages scored per step when a budget is set.
        fusion: a tuned fusion (``lrt-rerank tune``) to order by in place of the interpolation, when
            :meth:`rerank` is given the candidates' signals (the first re-ranker only).
        then: the later stages of a cascade, each re-ranking the top of the previous one's order
            (:meth:`cascade` builds a core from a list of stages).
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
        then: Sequence[Stage] = (),
    ) -> None:
        if depth < 0:
            raise ValueError(f"rerank depth must be >= 0, got {depth}")
        if fusion is not None and fusion.uses_reranker and reranker is None:
            raise ValueError(f"{fusion.source}: field 'weights.reranker' is {fusion.weights['reranker']:g}: this fusion needs a re-ranker")
        if then and reranker is None:
            raise ValueError("a cascade's later stages need a first re-ranker")
        self.fusion = fusion
        self.reranker = reranker
        self.depth = depth
        stages = [Stage(reranker, depth, interpolation), *then] if reranker is not None else []
        self.stages = [_StageRunner(stage, f"stage{i}", cache, shared, chunk_size) for i, stage in enumerate(stages, start=1)]
        for previous, later in zip(self.stages, self.stages[1:]):
            if later.depth > previous.depth:
                raise ValueError(f"cascade stage {later.name!r}: depth {later.depth} is deeper than the previous stage's {previous.depth}")
        self.interpolation = self.stages[0].interpolation if self.stages else resolve_weight(None, interpolation)
        self.scorer: Reranker | None = self.stages[0].scorer if self.stages else None
        self.calibration = self.stages[0].calibration if self.stages else None
        self.cost = self.stages[0].cost if self.stages else CostEstimate(chunk_size)

    @classmethod
    def cascade(
        cls,
        stages: Sequence[Stage],
        cache: ScoreCache | None = None,
        shared: SharedTier | None = None,
        chunk_size: int = 16,
        fusion: Fusion | None = None,
    ) -> RerankCore:
        """A core running ``stages`` in order (an empty list keeps the first-stage order)."""
        if not stages:
            return cls(None, 0, cache=cache, shared=shared, chunk_size=chunk_size, fusion=fusion)
        first = stages[0]
        core = cls(first.reranker, first.depth, first.interpolation, cache, shared, chunk_size, fusion, stages[1:])
        core.stages[0].name = first.name or core.stages[0].name
        return core

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
        passages: list[str] = []
        error: str | None = None
        reports: list[StageReport] = []
        if not self.stages:
            status = RerankStatus.DISABLED
        elif not top:
            status = RerankStatus.EMPTY
        else:
            first = self.stages[0]
            try:
                passages = list(texts([c.id for c in top]) if callable(texts) else texts[: len(top)])
                if len(passages) != len(top):
                    raise ValueError(f"{len(passages)} texts for {len(top)} candidates")
                logits = self._score_within(first, query, passages, budget_ms, first_stage_ms, began)
            except Exception as exc:  # noqa: BLE001 - fail open on any re-ranker error
                error = _failed(first.name, exc)
                logits = []
            status = _status(error, len(logits), len(top))
            reports.append(StageReport(first.name, status, len(logits), (time.perf_counter() - began) * 1000.0, error))
        hits = self._merge(candidates, logits, interpolate, signals if status != RerankStatus.FAILED else None)
        if status == RerankStatus.COMPLETE:
            texts_of = dict(zip((c.id for c in top), passages, strict=True))
            for runner in self.stages[1:]:
                hits, report = self._later_stage(runner, query, hits, texts_of, interpolate, budget_ms, first_stage_ms, began)
                reports.append(report)
                if report.status not in (RerankStatus.COMPLETE, RerankStatus.EMPTY):
                    status = RerankStatus.FAILED if report.error is not None else RerankStatus.PARTIAL
                    error = report.error
                    break
        if top_n is not None:
            hits = hits[:top_n]
        rerank_ms = (time.perf_counter() - began) * 1000.0
        return SearchResult(hits, status, len(logits), first_stage_ms, rerank_ms, first_stage_ms + rerank_ms, error, tuple(reports))

    def _later_stage(
        self, runner: _StageRunner, query: str, hits: list[Hit], texts_of: dict[str, str], interpolate: bool,
        budget_ms: float | None, spent_ms: float, began: float,
    ) -> tuple[list[Hit], StageReport]:
        """``hits`` re-ordered by ``runner`` over their top ``runner.depth``; unchanged unless it completes."""
        started = time.perf_counter()
        head = hits[: runner.depth]
        error: str | None = None
        logits: list[float] = []
        try:
            logits = self._score_within(runner, query, [texts_of[h.id] for h in head], budget_ms, spent_ms, began)
        except Exception as exc:  # noqa: BLE001 - fail open on any re-ranker error
            error = _failed(runner.name, exc, "the previous stage's order")
            logits = []
        status = _status(error, len(logits), len(head)) if head else RerankStatus.EMPTY
        report = StageReport(runner.name, status, len(logits), (time.perf_counter() - started) * 1000.0, error)
        if status != RerankStatus.COMPLETE:
            return hits, report
        return _reorder(hits, logits, runner, interpolate), report

    def _score_within(
        self, runner: _StageRunner, query: str, passages: list[str], budget_ms: float | None, spent_ms: float, began: float
    ) -> list[float]:
        """Scores of ``passages`` in order; with a budget, of as many of them as fit (a prefix)."""
        if budget_ms is None:
            return _score(runner, query, passages)
        scores: list[float] = []
        while len(scores) < len(passages):
            remaining = budget_ms - spent_ms - (time.perf_counter() - began) * 1000.0
            size = runner.cost.chunk_that_fits(remaining)
            if size == 0:
                break
            scores.extend(_score(runner, query, passages[len(scores) : len(scores) + size]))
        return scores

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


def _score(runner: _StageRunner, query: str, passages: list[str]) -> list[float]:
    began = time.perf_counter()
    raw = np.asarray(runner.scorer.score(query, passages), dtype=np.float32).reshape(-1)
    if raw.shape[0] != len(passages):
        raise ValueError(f"re-ranker returned {raw.shape[0]} scores for {len(passages)} passages")
    if not np.isfinite(raw).all():
        raise ValueError("re-ranker returned a non-finite score")
    runner.cost.observe(len(passages), (time.perf_counter() - began) * 1000.0)
    return [float(x) for x in raw]


def _reorder(hits: list[Hit], logits: list[float], runner: _StageRunner, interpolate: bool) -> list[Hit]:
    """``hits`` with their first ``len(logits)`` re-scored by a later stage and sorted (ties: previous order)."""
    n = len(logits)
    ranking: npt.NDArray[np.float32] = np.asarray(logits, dtype=np.float32)
    if interpolate and runner.interpolation > 0:
        ranking = combine(logits, runner.interpolation).astype(np.float32)
    relevance = runner.calibration.apply(np.asarray(logits, dtype=np.float32)) if runner.calibration is not None else None
    order = sorted(range(n), key=lambda i: (-float(ranking[i]), i)) + list(range(n, len(hits)))
    out = []
    for rank, i in enumerate(order, start=1):
        hit = hits[i]
        if i < n:
            hit = replace(hit, score=float(ranking[i]), logit=logits[i], relevance=float(relevance[i]) if relevance is not None else None)
        out.append(replace(hit, rank=rank))
    return out


def _failed(stage: str, exc: Exception, kept: str = "the first-stage order") -> str:
    """The error text of a failed stage, logged in one line (the traceback at debug level only)."""
    error = f"{type(exc).__name__}: {exc}"
    logger.error("re-ranker failed (%s in %s); returning %s", error, stage, kept)
    logger.debug("re-ranker traceback", exc_info=True)
    return error
