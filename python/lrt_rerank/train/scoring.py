"""Scoring first-stage candidate lists with a torch scorer, and dev/test metrics of the re-ranked lists.

Metrics come from :mod:`lrt_rerank.evaluate` (the project's one implementation). The
interpolation helpers add the first-stage position prior to the re-ranker's logits
(:mod:`lrt_rerank.interpolation`), the way the weight is chosen on dev and recorded in the model card.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import score_run
from lrt_rerank.interpolation import combine
from lrt_rerank.train.data import Candidates, PairEncoder, passage_text
from lrt_rerank.train.model import PairScorer

ScoreFn = Callable[[str, list[str]], np.ndarray]
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)


def torch_score_fn(model: PairScorer, encoder: PairEncoder, batch_size: int = 32) -> ScoreFn:
    """``(query, passages) -> logits`` with the model in eval mode, passages sorted by length per batch."""

    def score(query: str, passages: list[str]) -> np.ndarray:
        model.eval()
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
        out = np.empty(len(passages), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = encoder.encode([query] * len(idx), [passages[i] for i in idx])
                out[idx] = model(**batch).float().numpy()
        return out

    return score


def score_candidates(
    score: ScoreFn, dataset: Dataset, candidates: Candidates, query_ids: Sequence[str], depth: int, progress: bool = True, desc: str = "scoring"
) -> dict[str, np.ndarray]:
    """Re-ranker logits for the first ``depth`` candidates of each query."""
    out: dict[str, np.ndarray] = {}
    for qid in tqdm(query_ids, desc=desc, disable=not progress, leave=False):
        ids = candidates.ids[qid][:depth]
        out[qid] = np.asarray(score(dataset.queries[qid], [passage_text(dataset, d) for d in ids]), dtype=np.float64) if ids else np.zeros(0)
    return out


def reranked_run(candidates: Candidates, logits: dict[str, np.ndarray], weight: float = 0.0) -> dict[str, list[str]]:
    """Re-ranked lists by ``logit + weight * prior(first-stage position)`` (:func:`lrt_rerank.interpolation.combine`;
    weight 0 is the logit alone); the tail beyond the re-ranked candidates keeps its first-stage order."""
    run: dict[str, list[str]] = {}
    for qid, scores in logits.items():
        ids = candidates.ids[qid]
        n = scores.size
        combined = combine(scores, weight)
        order = sorted(range(n), key=lambda i: (-combined[i], i))
        run[qid] = [ids[i] for i in order] + list(ids[n:])
    return run


def metrics_for(dataset: Dataset, run: dict[str, list[str]]) -> dict[str, float]:
    return score_run(run, dataset.qrels, list(run))


def best_weight(
    dataset: Dataset, candidates: Candidates, logits: dict[str, np.ndarray], grid: Sequence[float] = WEIGHT_GRID
) -> tuple[float, dict[float, float]]:
    """The interpolation weight with the best MRR@10 (ties: the smaller weight) and the whole curve."""
    curve = {float(w): metrics_for(dataset, reranked_run(candidates, logits, float(w)))["MRR@10"] for w in grid}
    best = max(curve, key=lambda w: (round(curve[w], 6), -w))
    return best, curve
