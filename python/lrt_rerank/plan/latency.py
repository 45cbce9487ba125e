"""Latency of every candidate pipeline on this machine, warm, without a score cache, with the model's
default threads (the service's): the first stage, then each (model, max length, depth) scoring call
(interleaved per query) are timed, and a candidate's per-query time is modelled as their sum; a few candidates
are also run whole through :class:`~lrt_rerank.pipeline.Pipeline` to report the model's error."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.pipeline import Pipeline
from lrt_rerank.plan.grid import Config
from lrt_rerank.plan.quality import CANDIDATES, JudgedQuery
from lrt_rerank.rerank import Reranker, Stage

LATENCY_QUERIES = 30
"""Queries timed per component (a seeded sample of the judged ones)."""

Key = tuple[str, int | None]


@dataclass
class Timings:
    """Per-query milliseconds of the first stage and of each (model, max length) scoring its top ``depth``."""

    first_stage_ms: npt.NDArray[np.float64]
    scoring_ms: dict[Key, dict[int, npt.NDArray[np.float64]]]

    def modelled(self, config: Config) -> npt.NDArray[np.float64]:
        """Per-query total of ``config``: the first stage plus each stage's scoring time at its depth."""
        total = self.first_stage_ms.copy()
        for stage in config.stages:
            total += self.scoring_ms[stage.scored][stage.depth]
        return total


def time_first_stage(first_stage: FirstStage, queries: Sequence[JudgedQuery]) -> npt.NDArray[np.float64]:
    """Milliseconds of the first stage's top :data:`CANDIDATES` for each query, after a warm-up."""
    if not queries:
        raise ValueError("no judged query to time")
    first_stage.search(queries[0].query, CANDIDATES, "rrf")
    out = np.zeros(len(queries))
    for j, query in enumerate(queries):
        began = time.perf_counter()
        first_stage.search(query.query, CANDIDATES, "rrf")
        out[j] = (time.perf_counter() - began) * 1000.0
    return out


def measure(
    first_stage_ms: npt.NDArray[np.float64], queries: Sequence[JudgedQuery], rerankers: Mapping[Key, Reranker],
    depths: Mapping[Key, Sequence[int]], progress: bool = True,
) -> Timings:
    """Time every (model, max length, depth) on each query, interleaved, after a warm-up at every depth (the
    runtime's buffers grow to the largest batch first, as in a warm service)."""
    warm = queries[0]
    for key, reranker in rerankers.items():
        for depth in depths[key]:
            reranker.score(warm.query, list(warm.texts[:depth]))
    scoring = {key: {d: np.zeros(len(queries)) for d in depths[key]} for key in rerankers}
    for j, query in enumerate(tqdm(queries, desc="plan: latency", disable=not progress, leave=False)):
        for key, reranker in rerankers.items():
            for depth in depths[key]:
                began = time.perf_counter()
                reranker.score(query.query, list(query.texts[:depth]))
                scoring[key][depth][j] = (time.perf_counter() - began) * 1000.0
    return Timings(first_stage_ms, scoring)


def direct(first_stage: FirstStage, queries: Sequence[JudgedQuery], stages: Sequence[Stage]) -> npt.NDArray[np.float64]:
    """Per-query total milliseconds of the whole pipeline (first stage included), after a warm-up."""
    pipeline = Pipeline.of_stages(first_stage, stages, CANDIDATES)
    pipeline.run(queries[0].query, k=10)
    return np.array([pipeline.run(q.query, k=10).total_ms for q in queries])
