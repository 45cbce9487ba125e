"""Retrieval quality and latency evaluation.

Metrics (per query, then averaged over the evaluated queries — those of the split with at
least one relevant judgment):

* ``MRR@10``  reciprocal rank of the first relevant (grade > 0) document in the top 10, else 0;
* ``NDCG@k``  DCG = sum over ranks i <= k of (2^grade - 1) / log2(i + 1); the ideal DCG sorts
  all the query's judged grades in descending order; NDCG = DCG / ideal DCG;
* ``R@50``    relevant documents in the top 50 divided by all relevant documents of the query.

Latency is wall time per query in milliseconds, split into first stage, re-rank and total,
summarised by the 50th, 95th and 99th percentiles.

Differences between systems over the same queries get a paired bootstrap interval
(:func:`bootstrap_gains`, :func:`interval95`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.first_stage.base import EXTRA_DENSE, SYSTEMS, FirstStage, System, check_system
from lrt_rerank.pipeline import Pipeline, Reranker
from lrt_rerank.rerank import Stage
from lrt_rerank.rerank.fusion import Fusion

METRICS: tuple[str, ...] = ("MRR@10", "NDCG@5", "NDCG@10", "R@50")
PERCENTILES: tuple[int, ...] = (50, 95, 99)
STAGES: tuple[str, ...] = ("first_stage", "rerank", "total")
RERANKED_SYSTEM = "rrf+rerank"
TUNED_SYSTEM = "tuned"
PLAN_SYSTEM = "plan"
SYSTEM_LABELS: dict[str, str] = {
    "bm25": "BM25",
    "dense": "dense",
    "rrf": "RRF(BM25, dense)",
    RERANKED_SYSTEM: "RRF + re-ranker",
    TUNED_SYSTEM: "tuned fusion",
    PLAN_SYSTEM: "plan",
}
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def _gain(grade: int) -> float:
    return float(2**grade - 1) if grade > 0 else 0.0


def reciprocal_rank(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """1 / rank of the first document with grade > 0 among the first ``k``, else 0."""
    for position, doc_id in enumerate(ranking[:k], start=1):
        if judged.get(doc_id, 0) > 0:
            return 1.0 / position
    return 0.0


def ndcg(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """NDCG@k with gain 2^grade - 1 and discount log2(rank + 1); 0 when nothing is relevant."""
    dcg = sum(
        _gain(judged.get(doc_id, 0)) / math.log2(position + 1) for position, doc_id in enumerate(ranking[:k], start=1)
    )
    ideal_grades = sorted((grade for grade in judged.values() if grade > 0), reverse=True)[:k]
    ideal = sum(_gain(grade) / math.log2(position + 1) for position, grade in enumerate(ideal_grades, start=1))
    return dcg / ideal if ideal > 0 else 0.0


def recall(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Share of the query's relevant (grade > 0) documents found in the first ``k``."""
    relevant = {doc_id for doc_id, grade in judged.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def query_metrics(ranking: Sequence[str], judged: Mapping[str, int]) -> dict[str, float]:
    return {
        "MRR@10": reciprocal_rank(ranking, judged, 10),
        "NDCG@5": ndcg(ranking, judged, 5),
        "NDCG@10": ndcg(ranking, judged, 10),
        "R@50": recall(ranking, judged, 50),
    }


def score_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], query_ids: Iterable[str]
) -> dict[str, float]:
    """Mean of each metric over ``query_ids``; a query missing from ``run`` scores 0."""
    totals = dict.fromkeys(METRICS, 0.0)
    count = 0
    for query_id in query_ids:
        for name, value in query_metrics(run.get(query_id, ()), qrels[query_id]).items():
            totals[name] += value
        count += 1
    if count == 0:
        raise ValueError("no queries to evaluate")
    return {name: total / count for name, total in totals.items()}


def top_k_overlap(
    dataset: Dataset, first: FirstStage, second: FirstStage, system: System = "bm25", k: int = 10
) -> list[float]:
    """Per judged query, the share of ``second``'s top ``k`` of ``system`` that ``first``'s top ``k`` holds too."""
    overlaps = []
    for query_id in dataset.eval_query_ids():
        query = dataset.queries[query_id]
        ours = {c.id for c in first.search(query, k, system)}
        theirs = {c.id for c in second.search(query, k, system)}
        overlaps.append(len(ours & theirs) / max(1, len(theirs)))
    return overlaps


def bootstrap_gains(first: np.ndarray, systems: dict[str, np.ndarray], samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """Paired bootstrap over queries: for each of ``samples`` resamples (the same draws for every system),
    the mean per-query gain of each system over ``first``; returns [samples] arrays."""
    if any(values.shape != first.shape for values in systems.values()):
        raise ValueError("per-query figures must cover the same queries")
    draws = np.random.default_rng(seed).integers(0, first.size, size=(samples, first.size))
    return {label: (values - first)[draws].mean(axis=1) for label, values in systems.items()}


def interval95(values: np.ndarray) -> list[float]:
    """The central 95% of bootstrap resamples (2.5th and 97.5th percentiles), rounded to 4 places."""
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def latency_percentiles(samples_ms: Sequence[float]) -> dict[int, float]:
    """p50/p95/p99 (linear interpolation between samples) of a list of milliseconds."""
    if not samples_ms:
        return dict.fromkeys(PERCENTILES, 0.0)
    values = np.percentile(np.asarray(samples_ms, dtype=np.float64), PERCENTILES)
    return {p: float(v) for p, v in zip(PERCENTILES, values, strict=True)}


@dataclass
class SystemResult:
    """Quality and per-query latency of one system over one query set."""

    system: str
    metrics: dict[str, float]
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    queries: int = 0

    def percentiles(self, stage: str) -> dict[int, float]:
        return latency_percentiles(self.latency_ms.get(stage, []))

    def to_json(self) -> dict[str, object]:
        """Flat record: system, metrics, total-latency percentiles, then per-stage percentiles."""
        record: dict[str, object] = {"system": self.system}
        record.update({name: round(self.metrics[name], 4) for name in METRICS})
        total = self.percentiles("total")
        record.update({f"p{p}_ms": round(total[p], 3) for p in PERCENTILES})
        for stage in ("first_stage", "rerank"):
            values = self.percentiles(stage)
            record.update({f"{stage}_p{p}_ms": round(values[p], 3) for p in PERCENTILES})
        record["queries"] = self.queries
        return record


def json_lines(results: Iterable[SystemResult]) -> str:
    return "\n".join(json.dumps(result.to_json()) for result in results)


def system_labels(results: Sequence[SystemResult]) -> dict[str, str]:
    """:data:`SYSTEM_LABELS`, with RRF's naming every dense signal among ``results`` (``dense:NAME``)."""
    further = [r.system for r in results if r.system.startswith(EXTRA_DENSE)]
    if not further:
        return SYSTEM_LABELS
    return {**SYSTEM_LABELS, "rrf": f"RRF(BM25, dense, {', '.join(further)})"}


def markdown_table(results: Sequence[SystemResult]) -> str:
    """Quality and latency (p50 / p95 / p99 ms per stage) as one Markdown table."""
    header = ["system", *METRICS] + [f"{stage.replace('_', ' ')} ms p50/p95/p99" for stage in STAGES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    labels = system_labels(results)
    for result in results:
        cells = [labels.get(result.system, result.system)]
        cells += [f"{result.metrics[name]:.3f}" for name in METRICS]
        for stage in STAGES:
            values = result.percentiles(stage)
            cells.append(" / ".join(f"{values[p]:.1f}" for p in PERCENTILES))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_tradeoff(results: Sequence[SystemResult], path: str | Path, title: str = "") -> Path:
    """Save the quality/latency chart: MRR@10 against p95 total latency, one labelled point per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    labels = system_labels(results)
    for result in results:
        p95 = result.percentiles("total")[95]
        mrr = result.metrics["MRR@10"]
        axes.scatter([p95], [mrr], s=60)
        axes.annotate(
            labels.get(result.system, result.system), (p95, mrr), textcoords="offset points", xytext=(6, 6)
        )
    axes.set_xlabel("p95 latency per query (ms)")
    axes.set_ylabel("MRR@10")
    axes.set_title(title or "Quality vs latency")
    if (
        results
        and max(r.percentiles("total")[95] for r in results)
        / max(min(r.percentiles("total")[95] for r in results), 1e-3)
        > 50
    ):
        axes.set_xscale("log")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _run_first_stage_system(
    first_stage: FirstStage, system: System, dataset: Dataset, query_ids: Sequence[str], depth: int, progress: bool
) -> SystemResult:
    run: dict[str, list[str]] = {}
    timings: list[float] = []
    first_stage.search(dataset.queries[query_ids[0]], depth, system)  # warm-up, not timed
    for query_id in tqdm(query_ids, desc=f"eval {system}", disable=not progress, leave=False):
        start = time.perf_counter()
        candidates = first_stage.search(dataset.queries[query_id], depth, system)
        timings.append((time.perf_counter() - start) * 1000.0)
        run[query_id] = [candidate.id for candidate in candidates]
    metrics = score_run(run, dataset.qrels, query_ids)
    return SystemResult(
        system, metrics, {"first_stage": timings, "rerank": [0.0] * len(timings), "total": timings}, len(query_ids)
    )


def _run_pipeline(
    pipeline: Pipeline, dataset: Dataset, query_ids: Sequence[str], depth: int, progress: bool,
    system: str = RERANKED_SYSTEM,
) -> SystemResult:
    run: dict[str, list[str]] = {}
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    pipeline.run(dataset.queries[query_ids[0]], k=depth)  # warm-up, not timed
    for query_id in tqdm(query_ids, desc=f"eval {system}", disable=not progress, leave=False):
        result = pipeline.run(dataset.queries[query_id], k=depth)
        run[query_id] = [hit.id for hit in result.hits]
        stages["first_stage"].append(result.first_stage_ms)
        stages["rerank"].append(result.rerank_ms)
        stages["total"].append(result.total_ms)
    return SystemResult(system, score_run(run, dataset.qrels, query_ids), stages, len(query_ids))


def evaluate(
    dataset: Dataset,
    first_stage: FirstStage,
    reranker: Reranker | None = None,
    rerank_depth: int = 50,
    depth: int = 100,
    query_ids: Sequence[str] | None = None,
    progress: bool = True,
    on_result: Callable[[SystemResult], None] | None = None,
    systems: Sequence[str] = (*SYSTEMS, RERANKED_SYSTEM),
    interpolation: float | None = None,
    fusion: Fusion | None = None,
    plan: Sequence[Stage] | None = None,
) -> list[SystemResult]:
    """Evaluate BM25, dense and RRF (top ``depth`` each), with a re-ranker RRF + re-ranker, and with a
    ``fusion`` the tuned fusion (system ``tuned``: the pipeline with that fusion, and the re-ranker only
    when the fusion weighs its logit), and with a ``plan`` (the stages of a ``plan.json``) system ``plan``.

    ``interpolation`` is the pipeline's weight of the first-stage score (default: the model card's).

    ``query_ids`` defaults to every query of the split with a relevant judgment. ``systems``
    selects among ``bm25``, ``dense``, ``rrf`` and ``rrf+rerank`` (the last only runs with a
    re-ranker); ``dense`` brings each further dense signal of the first stage (``dense:NAME``) with it,
    and ``rrf`` fuses all of them. ``on_result`` is called as each system finishes (for streaming output).
    """
    known = (*SYSTEMS, RERANKED_SYSTEM, TUNED_SYSTEM, PLAN_SYSTEM)
    unknown = [system for system in systems if system not in known]
    if unknown:
        raise ValueError(f"unknown system {unknown[0]!r}; expected some of {', '.join(known)}")
    if fusion is not None and TUNED_SYSTEM not in systems:
        systems = (*systems, TUNED_SYSTEM)
    if plan is not None and PLAN_SYSTEM not in systems:
        systems = (*systems, PLAN_SYSTEM)
    if "dense" in systems:  # each further bi-encoder's ranking beside the first's
        at = list(systems).index("dense") + 1
        systems = (*systems[:at], *first_stage.dense_signals[1:], *systems[at:])
    ids = list(query_ids) if query_ids is not None else dataset.eval_query_ids()
    missing = [query_id for query_id in ids if query_id not in dataset.queries or query_id not in dataset.qrels]
    if missing:
        raise ValueError(f"{len(missing)} query id(s) have no query text or judgments, e.g. {missing[0]!r}")
    if not ids:
        raise ValueError(f"{dataset.path}: split {dataset.split!r} has no query with a relevant judgment")
    results: list[SystemResult] = []
    for system in systems:
        if system == RERANKED_SYSTEM:
            if reranker is None:
                continue
            pipeline = Pipeline(first_stage, reranker, rerank_depth=rerank_depth, candidates=depth, interpolation=interpolation)
            results.append(_run_pipeline(pipeline, dataset, ids, depth, progress))
        elif system == TUNED_SYSTEM:
            if fusion is None:
                continue
            tuned = Pipeline(first_stage, reranker if fusion.uses_reranker else None, rerank_depth=rerank_depth,
                             candidates=depth, fusion=fusion)
            results.append(_run_pipeline(tuned, dataset, ids, depth, progress, TUNED_SYSTEM))
        elif system == PLAN_SYSTEM:
            if plan is None:
                continue
            planned = Pipeline.of_stages(first_stage, plan, candidates=depth)
            results.append(_run_pipeline(planned, dataset, ids, depth, progress, PLAN_SYSTEM))
        else:
            results.append(_run_first_stage_system(first_stage, check_system(system), dataset, ids, depth, progress))
        if on_result is not None:
            on_result(results[-1])
    return results
