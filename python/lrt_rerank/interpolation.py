"""Combining a re-ranker's logits with the first stage's ranking of the same candidates.

The re-ranked score of the candidate at first-stage position ``r`` (1-based) is

    final = logit + weight * prior(r),   prior = z(-log r)

where ``z`` standardises ``-log r`` over the ``n`` candidates re-ranked for the query (mean 0,
standard deviation 1). The prior uses the first stage's *order*, not its scores, so it means the
same for any first stage (RRF scores, BM25 scores, OpenSearch hybrid scores) and keeps the first
stage's tie-breaking; on NFCorpus dev it also did better than standardised RRF scores. A model
card records ``weight`` under ``interpolation`` (chosen on a tuning split); 0 means the logit
alone. Training (residual mode), evaluation and the pipeline all call these functions, so the
formula lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def rank_prior(n: int, depth: int | None = None) -> npt.NDArray[np.float64]:
    """``prior(r)`` for positions 1..``n``, standardised over the first ``depth`` (default ``n``) of them.

    Positions beyond ``depth`` extend the same scale (used for deeper training candidates).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    depth = n if depth is None else min(depth, n)
    values = -np.log(np.arange(1, n + 1, dtype=np.float64))
    head = values[:depth]
    if head.size < 2:
        return np.zeros_like(values)
    return (values - head.mean()) / head.std()


def combine(logits: Sequence[float] | npt.NDArray[np.floating], weight: float) -> npt.NDArray[np.float64]:
    """``logit + weight * prior(position)`` for one query's re-ranked candidates, given in first-stage order."""
    raw = np.asarray(logits, dtype=np.float64).reshape(-1)
    if weight == 0.0:
        return raw
    return raw + weight * rank_prior(raw.size)


def card_weight(card: dict[str, object]) -> float:
    """The interpolation weight a model card asks for (``interpolation.weight``), 0.0 when absent."""
    section = card.get("interpolation")
    if section is None:
        return 0.0
    if not isinstance(section, dict) or not isinstance(section.get("weight", 0.0), (int, float)) or isinstance(section.get("weight"), bool):
        raise ValueError("card.json: field 'interpolation.weight' must be a number")
    weight = float(section.get("weight", 0.0))
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"card.json: field 'interpolation.weight' must be a finite number >= 0, got {weight}")
    return weight


def resolve_weight(reranker: object, interpolation: float | None) -> float:
    """The weight to use: ``interpolation`` when given, else the re-ranker's card (``card`` attribute), else 0."""
    if interpolation is None:
        card = getattr(reranker, "card", None)
        interpolation = card_weight(card) if isinstance(card, dict) else 0.0
    if not np.isfinite(interpolation) or interpolation < 0:
        raise ValueError(f"interpolation must be a finite number >= 0, got {interpolation}")
    return float(interpolation)
