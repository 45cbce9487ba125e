"""Quality of every candidate pipeline on a split's judged queries: each (model, max length) scores each
query's first-stage candidates once; every depth, weight and cascade is then ordered by the re-ranking
core itself over those recorded scores, so the planner measures exactly what the pipeline will run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import bootstrap_gains, interval95, ndcg, reciprocal_rank
from lrt_rerank.first_stage.base import Candidate, FirstStage
from lrt_rerank.plan.grid import Config
from lrt_rerank.rerank import RerankCore, Reranker, Stage

CANDIDATES = 100
"""First-stage candidates per query (the deepest re-rank depth)."""


@dataclass(frozen=True)
class JudgedQuery:
    """One judged query's first-stage candidates, their texts and its judgments."""

    query_id: str
    query: str
    candidates: list[Candidate]
    texts: list[str]
    judged: Mapping[str, int]


class Recorded:
    """A re-ranker that answers from recorded scores of (query, passage) pairs."""

    def __init__(self) -> None:
        self.scores: dict[tuple[str, str], float] = {}

    def record(self, query: str, passages: Sequence[str], scores: npt.ArrayLike) -> None:
        values = np.asarray(scores, dtype=np.float32).reshape(-1)
        if values.shape[0] != len(passages):
            raise ValueError(f"re-ranker returned {values.shape[0]} scores for {len(passages)} passages")
        self.scores.update(((query, p), float(s)) for p, s in zip(passages, values, strict=True))

    def score(self, query: str, passages: list[str]) -> npt.NDArray[np.float32]:
        return np.asarray([self.scores[(query, p)] for p in passages], dtype=np.float32)


def collect(dataset: Dataset, first_stage: FirstStage, query_ids: Sequence[str], progress: bool = True) -> list[JudgedQuery]:
    """The first stage's top :data:`CANDIDATES` (RRF) and their texts for each of ``query_ids``."""
    out = []
    for qid in tqdm(query_ids, desc="plan: first stage", disable=not progress, leave=False):
        query = dataset.queries[qid]
        candidates = first_stage.search(query, CANDIDATES, "rrf")
        out.append(JudgedQuery(qid, query, candidates, first_stage.get_texts([c.id for c in candidates]), dataset.qrels[qid]))
    return out


def record_scores(
    judged: Sequence[JudgedQuery], loaders: Mapping[tuple[str, int | None], Callable[[], Reranker]], progress: bool = True
) -> dict[tuple[str, int | None], Recorded]:
    """Each (model, max length) scores every query's candidates once."""
    out = {}
    for key, load in loaders.items():
        reranker, recorded = load(), Recorded()
        for query in tqdm(judged, desc=f"plan: score {key[0]}@{key[1]}", disable=not progress, leave=False):
            if query.texts:
                recorded.record(query.query, query.texts, reranker.score(query.query, list(query.texts)))
        out[key] = recorded
    return out


def per_query_quality(
    configs: Sequence[Config], judged: Sequence[JudgedQuery], recorded: Mapping[tuple[str, int | None], Reranker]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``[configs, queries]``: the rank (1-10) of the first relevant hit in the top 10 (0: none), and NDCG@10."""
    first_relevant = np.zeros((len(configs), len(judged)), dtype=np.int64)
    ndcg10 = np.zeros((len(configs), len(judged)))
    for i, config in enumerate(configs):
        core = RerankCore.cascade([Stage(recorded[s.scored], s.depth, s.weight) for s in config.stages])
        for j, query in enumerate(judged):
            ranking = [h.id for h in core.rerank(query.query, query.candidates, query.texts).hits]
            rr = reciprocal_rank(ranking, query.judged, 10)
            first_relevant[i, j] = round(1.0 / rr) if rr > 0 else 0
            ndcg10[i, j] = ndcg(ranking, query.judged, 10)
    return first_relevant, ndcg10


def mrr_of(first_relevant: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """MRR@10 per query from the rank of the first relevant hit (0: none in the top 10)."""
    ranks = first_relevant.astype(np.float64)
    return np.divide(1.0, ranks, out=np.zeros_like(ranks), where=ranks > 0)


def summary(values: npt.NDArray[np.float64], baseline: npt.NDArray[np.float64]) -> dict[str, object]:
    """Mean of one candidate's per-query figure, its 95% bootstrap interval and that of its gain over ``baseline``."""
    means = bootstrap_gains(np.zeros_like(values), {"mean": values})["mean"]
    gains = bootstrap_gains(baseline, {"gain": values})["gain"]
    return {"mean": round(float(values.mean()), 4), "ci95": interval95(means), "gain_ci95": interval95(gains)}
