"""``lrt-rerank tune``: choose the ranking function of the first stage (and a re-ranker's weight) on a
split's judged queries, with a guard that keeps RRF where nothing beats it.

For each judged query the first stage's RRF top :data:`DEPTH` and their signals are collected
(:func:`lrt_rerank.rerank.fusion.first_stage_signals`, with ``--reranker`` its logits too). The candidate
functions (:func:`candidate_functions`, all :class:`~lrt_rerank.rerank.fusion.Fusion`) are

* RRF over a grid of ``k`` (:data:`RRF_K_GRID`), the first stage's own ``k`` first, each with the
  per-signal weights of :func:`rrf_weight_grid` (equal weights first) over its N ranked signals (BM25,
  dense and each further dense signal ``dense:NAME``);
* convex combinations ``a * N(BM25) + b * N(dense) + c * prior`` over :data:`WEIGHT_GRID` for each
  normalisation ``N`` (z-score, min-max); with a re-ranker also ``+ d * z(logit)`` over :data:`RERANKER_GRID`;
  with further dense signals also ``+ e * N(cosine)`` each over the smaller :data:`FURTHER_GRID` (the grid
  grows by its size with every signal).

Every function's MRR@10 is computed on every query once (:func:`per_query_mrr`, re-ordering the top
:data:`DEPTH` as the re-ranking core does). :func:`cross_validate` then estimates the gain of the whole
procedure "take the best function on the other folds" by ``folds``-fold cross-validation: each query is
scored by the function chosen without it. The 95% paired-bootstrap interval of that out-of-fold gain
over RRF (:func:`lrt_rerank.evaluate.bootstrap_gains`) decides: a function other than the first stage's
RRF is adopted, refitted on all the split's queries, only if the interval's lower bound is above 0;
otherwise RRF is written, with the evidence. The test split is never tuned on.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import bootstrap_gains, interval95
from lrt_rerank.first_stage.base import RRF_K, FirstStage
from lrt_rerank.first_stage.index_cache import corpus_digest
from lrt_rerank.rerank.fusion import NORMALISATIONS, RRF_SIGNALS, Fusion, Normalisation, Signals, first_stage_signals, terms
from lrt_rerank.rerank.types import Reranker

DEPTH = 50
"""Candidates re-ordered per query (the re-ranking core's default depth)."""
RRF_K_GRID = (RRF_K, 1, 5, 10, 20, 40, 100, 200)
RRF_WEIGHT_LEVELS = (1.0, 2.0, 4.0)
"""The weights a ranked signal may get in weighted RRF; the ratios are what count."""
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
FURTHER_GRID = (0.0, 0.5, 1.0)
"""Weights of a further dense signal's ``N(cosine)`` in the convex combinations."""
RERANKER_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
FOLDS = 5
SEED = 0
TUNING_SPLITS = ("train", "dev")


@dataclass(frozen=True)
class Judged:
    """One judged query's RRF top candidates: their signals, which are relevant, and the re-ranker's logits."""

    query_id: str
    ids: list[str]
    signals: Signals
    relevant: npt.NDArray[np.bool_]
    logits: npt.NDArray[np.float64] | None = None


def check_split(split: str) -> str:
    """``split`` if tuning may use it; the test split (and any other) is refused in one line."""
    if split == "test":
        raise ValueError("--split test: tuning on the test split is refused (tune on train or dev, report on test)")
    if split not in TUNING_SPLITS:
        raise ValueError(f"--split {split}: expected one of {', '.join(TUNING_SPLITS)}")
    return split


def collect(
    dataset: Dataset,
    first_stage: FirstStage,
    reranker: Reranker | None = None,
    query_ids: Sequence[str] | None = None,
    depth: int = DEPTH,
    progress: bool = True,
) -> list[Judged]:
    """The RRF top ``depth`` of each judged query (default: all of the split's), with signals and logits."""
    out = []
    ids_of = list(query_ids) if query_ids is not None else dataset.eval_query_ids()
    for qid in tqdm(ids_of, desc=f"tune {dataset.name}/{dataset.split}", disable=not progress, leave=False):
        query = dataset.queries[qid]
        ids = [c.id for c in first_stage.search(query, depth, "rrf")]
        logits = None
        if reranker is not None and ids:
            logits = np.asarray(reranker.score(query, first_stage.get_texts(ids)), dtype=np.float64).reshape(-1)
        relevant = np.array([dataset.qrels[qid].get(d, 0) > 0 for d in ids], dtype=bool)
        out.append(Judged(qid, ids, first_stage_signals(first_stage, query, ids), relevant, logits))
    return out


def rrf_weight_grid(signals: int) -> list[tuple[float, ...]]:
    """Weight vectors of ``signals`` ranked signals in weighted RRF: each weight one of
    :data:`RRF_WEIGHT_LEVELS`, the smallest 1 (the ratios are what count); equal weights first, then by
    the largest weight, one signal raised before several. 5 for two signals, 19 for three."""
    grid = [w for w in itertools.product(RRF_WEIGHT_LEVELS, repeat=signals) if min(w) == 1.0]
    return sorted(grid, key=lambda w: (max(w), sum(x > 1.0 for x in w), [-x for x in w]))


def candidate_functions(with_reranker: bool = False, further: Sequence[str] = ()) -> list[Fusion]:
    """RRF over :data:`RRF_K_GRID` x :func:`rrf_weight_grid` (the first stage's own first), then the convex
    combinations; ``further``: the first stage's further dense signals (``dense:NAME``)."""
    names = (*RRF_SIGNALS, *further)
    functions = [
        Fusion("rrf", _weights(0.0, 0.0, 1.0), rrf_k=k, rrf_weights=dict(zip(names, w, strict=True)))
        for k in RRF_K_GRID
        for w in rrf_weight_grid(len(names))
    ]
    reranker_grid = RERANKER_GRID if with_reranker else (0.0,)
    further_grids = [FURTHER_GRID] * len(further)
    for normalisation in NORMALISATIONS:
        for a, b, c, d, *e in itertools.product(WEIGHT_GRID, WEIGHT_GRID, WEIGHT_GRID, reranker_grid, *further_grids):
            if a == b == d == 0.0 and not any(e):
                continue  # the prior alone is RRF
            weights = {**_weights(a, b, c, d), **dict(zip(further, e, strict=True))}
            functions.append(Fusion("linear", weights, normalisation))
    return functions


def _weights(bm25: float, dense: float, prior: float, reranker: float = 0.0) -> dict[str, float]:
    return {"bm25": bm25, "dense": dense, "prior": prior, "reranker": reranker}


def per_query_mrr(functions: Sequence[Fusion], judged: Sequence[Judged]) -> npt.NDArray[np.float64]:
    """``[functions, queries]``: MRR@10 of each query's candidates ordered by each function (ties in
    first-stage order). The functions sharing a normalisation and an RRF ``k`` and weights share their terms."""
    names = judged[0].signals.names if judged else RRF_SIGNALS
    further = names[len(RRF_SIGNALS) :]
    groups: dict[tuple[Normalisation, int, tuple[float, ...]], list[int]] = {}
    for i, function in enumerate(functions):
        groups.setdefault((function.normalisation, function.rrf_k, function.rrf_weight_vector(names)), []).append(i)
    weights = np.vstack([f.vector(further) for f in functions])
    out = np.zeros((len(functions), len(judged)))
    for j, query in enumerate(judged):
        if not query.relevant.any():
            continue  # no relevant candidate: 0 for every function
        scores = np.empty((len(functions), len(query.ids)))
        for (normalisation, rrf_k, rrf_weights), rows in groups.items():
            scores[rows] = weights[rows] @ terms(query.signals, query.logits, normalisation, rrf_k, rrf_weights)
        top = query.relevant[np.argsort(-scores, axis=1, kind="stable")[:, :10]]
        out[:, j] = np.where(top.any(axis=1), 1.0 / (top.argmax(axis=1) + 1.0), 0.0)
    return out


def cross_validate(mrr: npt.NDArray[np.float64], folds: int = FOLDS, seed: int = SEED) -> tuple[npt.NDArray[np.float64], list[int]]:
    """Out-of-fold MRR@10 of each query (scored by the function with the best mean on the other folds;
    ties: the earlier function) and the function chosen for each fold."""
    queries = mrr.shape[1]
    if queries < 2 * folds:
        raise ValueError(f"{queries} judged queries: cross-validation with {folds} folds needs at least {2 * folds}")
    fold_of = np.empty(queries, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(queries)] = np.arange(queries) % folds
    out = np.zeros(queries)
    chosen = []
    for fold in range(folds):
        held = fold_of == fold
        best = int(np.argmax(mrr[:, ~held].mean(axis=1)))
        out[held] = mrr[best, held]
        chosen.append(best)
    return out, chosen


class Described(Protocol):
    """A candidate :func:`choose` picks from (a fusion, a planned pipeline): it describes itself."""

    def describe(self) -> str: ...


C = TypeVar("C", bound=Described)


def choose(functions: Sequence[C], mrr: npt.NDArray[np.float64], folds: int = FOLDS, seed: int = SEED) -> tuple[C, dict[str, Any]]:
    """The adopted function (``functions[0]``, the baseline RRF, unless the cross-validated gain's 95%
    interval is above 0) and the evidence. ``lrt-rerank plan`` uses the same guard over pipelines."""
    baseline = mrr[0]
    out_of_fold, chosen = cross_validate(mrr, folds, seed)
    interval = interval95(bootstrap_gains(baseline, {"tuned": out_of_fold}, seed=seed)["tuned"])
    best = int(np.argmax(mrr.mean(axis=1)))
    adopted = interval[0] > 0 and best != 0
    if adopted:
        reason = f"the cross-validated gain's 95% interval {interval} is above 0"
    elif best == 0:
        reason = "no candidate beats the baseline RRF on this split"
    else:
        reason = f"the cross-validated gain's 95% interval {interval} does not exclude 0: RRF kept"
    figures = {
        "metric": "MRR@10",
        "queries": int(mrr.shape[1]),
        "candidates": len(functions),
        "rrf": round(float(baseline.mean()), 4),
        "best_in_sample": {"function": functions[best].describe(), "MRR@10": round(float(mrr[best].mean()), 4)},
        "cross_validation": {
            "folds": folds,
            "seed": seed,
            "MRR@10": round(float(out_of_fold.mean()), 4),
            "gain_over_rrf": round(float((out_of_fold - baseline).mean()), 4),
            "gain_ci95": interval,
            "chosen_per_fold": [functions[i].describe() for i in chosen],
        },
        "adopted": adopted,
        "reason": reason,
    }
    return functions[best] if adopted else functions[0], figures


def qrels_digest(dataset: Dataset, query_ids: Sequence[str]) -> str:
    """sha256 over the judgments of ``query_ids`` (query, document, grade; in the given order, documents sorted)."""
    digest = hashlib.sha256()
    for qid in query_ids:
        for doc_id, grade in sorted(dataset.qrels[qid].items()):
            digest.update(f"{qid}\t{doc_id}\t{grade}\n".encode())
    return digest.hexdigest()


def sample_queries(dataset: Dataset, max_queries: int | None, seed: int = SEED) -> list[str]:
    """The split's judged queries, or a seeded random ``max_queries`` of them (in qrels order)."""
    ids = dataset.eval_query_ids()
    if max_queries is None or max_queries >= len(ids):
        return ids
    if max_queries < 1:
        raise ValueError(f"--max-queries must be >= 1, got {max_queries}")
    keep = set(np.random.default_rng(seed).choice(len(ids), size=max_queries, replace=False).tolist())
    return [qid for i, qid in enumerate(ids) if i in keep]


def tune(dataset: Dataset, first_stage: FirstStage, reranker: Reranker | None = None, *, reranker_name: str | None = None,
         max_queries: int | None = None, folds: int = FOLDS, progress: bool = True) -> Fusion:
    """The fusion for ``dataset``'s split (train or dev), with what it was fitted on and the figures."""
    check_split(dataset.split)
    query_ids = sample_queries(dataset, max_queries)
    if not query_ids:
        raise ValueError(f"{dataset.path}: split {dataset.split!r} has no query with a relevant judgment")
    judged = collect(dataset, first_stage, reranker, query_ids, progress=progress)
    functions = candidate_functions(with_reranker=reranker is not None, further=first_stage.dense_signals[1:])
    chosen, figures = choose(functions, per_query_mrr(functions, judged), folds)
    fitted_on = {
        "dataset": dataset.name,
        "corpus_sha256": corpus_digest(dataset),
        "qrels_sha256": qrels_digest(dataset, query_ids),
        "split": dataset.split,
        "queries": len(query_ids),
        "depth": DEPTH,
        "reranker": reranker_name,
        "bm25_stemmer": first_stage.analyzer.stemmer if first_stage.analyzer is not None else None,
        "dense_signals": list(first_stage.dense_signals),
        "date": datetime.date.today().isoformat(),
    }
    return Fusion(
        chosen.function, chosen.weights, chosen.normalisation, chosen.rrf_k, fitted_on, figures, rrf_weights=chosen.rrf_weights
    )

