"""Combining a re-ranker's logits with the first-stage score of the same candidates.

A re-ranker trained as a *residual* of the first stage (see ``lrt_rerank.train``) learns only
what the first stage gets wrong; its output is meant to be used as

    final = logit + weight * z(first-stage score)

where ``z`` standardises the first-stage scores over the candidates re-ranked for one query
(mean 0, standard deviation 1), so the term does not depend on the first stage's scale (RRF
scores, BM25 scores, OpenSearch hybrid scores alike). The model card records ``weight`` under
``interpolation``; 0 means the logit alone. Training, evaluation and the pipeline all call
:func:`combine`, so the formula lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def standardise(scores: Sequence[float] | npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``(s - mean) / std`` over one query's candidates; zeros when there are fewer than two or all are equal."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size < 2:
        return np.zeros_like(values)
    std = float(values.std())
    if not np.isfinite(std) or std == 0.0:
        return np.zeros_like(values)
    return (values - values.mean()) / std


def combine(
    logits: Sequence[float] | npt.NDArray[np.floating], first_stage: Sequence[float] | npt.NDArray[np.floating], weight: float
) -> npt.NDArray[np.float64]:
    """``logit + weight * z(first-stage score)``, element-wise, for one query's re-ranked candidates."""
    raw = np.asarray(logits, dtype=np.float64).reshape(-1)
    prior = np.asarray(first_stage, dtype=np.float64).reshape(-1)
    if raw.shape != prior.shape:
        raise ValueError(f"{raw.size} re-ranker scores for {prior.size} first-stage scores")
    if weight == 0.0:
        return raw
    return raw + weight * standardise(prior)


def card_weight(card: dict[str, object]) -> float:
    """The interpolation weight a model card asks for (``interpolation.weight``), 0.0 when absent."""
    section = card.get("interpolation")
    if section is None:
        return 0.0
    if not isinstance(section, dict) or not isinstance(section.get("weight", 0.0), (int, float)):
        raise ValueError("card.json: field 'interpolation.weight' must be a number")
    weight = float(section.get("weight", 0.0))
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"card.json: field 'interpolation.weight' must be a finite number >= 0, got {weight}")
    return weight
