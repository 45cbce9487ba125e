"""The fusion teacher (``train all --teacher-fusion``): the first stage's own scores, fused at score level
with a cross-encoder teacher's logit, as the teacher the LRT distils.

RRF keeps only the ranks of BM25 and dense retrieval. For a query's RRF top 50 the fusion teacher scores

    t = a * z(BM25 score) + b * z(dense cosine) + d * z(teacher logit)

and ranks by ``t + c * prior(position)`` (:mod:`lrt_rerank.interpolation`); ``z`` standardises over the
query's candidates, and a candidate missing from one system's top 200 gets that system's lowest score
there. ``a, b, c`` are chosen on the train split's judged queries (nothing is fitted to them, so train
is a fair place to choose), ``d`` on dev, which the cross-encoder teacher was not trained on. The
student is fitted to ``t`` with the prior weight ``c`` (residual training); at run time it reads only
the query and the passage, so what it keeps of the fusion it keeps in its weights.

Numpy only (no torch), so ``benches/fusion_probe.py`` shares it. The first-stage features are those of the
tuned fusion (:func:`lrt_rerank.rerank.fusion.first_stage_features`), which ``lrt-rerank tune`` chooses for
every path.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from lrt_rerank.evaluate import score_run
from lrt_rerank.interpolation import rank_prior
from lrt_rerank.rerank.fusion import first_stage_features, zscore

__all__ = ["FusionWeights", "choose_first_stage_weights", "choose_teacher_weight", "first_stage_features", "fused_run", "mrr_at_10"]

FIRST_STAGE_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
TEACHER_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)

Array = npt.NDArray[np.float64]
Features = dict[str, tuple[list[str], Array]]  # query id -> (candidate ids, [2, n] z(BM25), z(dense))


@dataclass(frozen=True)
class FusionWeights:
    """``a`` (BM25), ``b`` (dense), ``c`` (first-stage position prior) and ``d`` (teacher logit)."""

    bm25: float
    dense: float
    prior: float
    teacher: float = 0.0

    def target(self, features: Array, teacher_logits: Array | None = None) -> Array:
        """``t``, the score the student is fitted to (the prior term is added in training, as at run time)."""
        out = self.bm25 * features[0] + self.dense * features[1]
        if self.teacher:
            if teacher_logits is None:
                raise ValueError("a fusion with a teacher weight needs the teacher's logits")
            out = out + self.teacher * zscore(teacher_logits)
        return out

    def ranking(self, features: Array, teacher_logits: Array | None = None) -> Array:
        """``t + c * prior(position)``: what the fusion teacher ranks by."""
        return self.target(features, teacher_logits) + self.prior * rank_prior(features.shape[1])

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def fused_run(features: Features, weights: FusionWeights, logits: Mapping[str, Array] | None = None) -> dict[str, list[str]]:
    """Each query's candidates ordered by the fusion (ties keep the first-stage order)."""
    run = {}
    for qid, (ids, x) in features.items():
        scores = weights.ranking(x, None if logits is None else logits[qid])
        run[qid] = [ids[i] for i in np.argsort(-scores, kind="stable")]
    return run


def mrr_at_10(qrels: Mapping[str, Mapping[str, int]], run: dict[str, list[str]]) -> float:
    return score_run(run, qrels, list(run))["MRR@10"]


def choose_first_stage_weights(qrels: Mapping[str, Mapping[str, int]], features: Features,
                               grid: Sequence[float] = FIRST_STAGE_GRID) -> tuple[FusionWeights, float]:
    """The ``(a, b, c)`` of ``grid``³ with the best MRR@10 over judged queries (ties: the smallest sum, then the
    grid's order); returns the weights and that MRR@10."""
    judged = {q: f for q, f in features.items() if q in qrels}
    if not judged:
        raise ValueError("no judged query to choose fusion weights on")
    best: tuple[float, float, FusionWeights] | None = None
    for a, b, c in itertools.product(grid, grid, grid):
        if a + b + c <= 0:
            continue
        weights = FusionWeights(a, b, c)
        value = mrr_at_10(qrels, fused_run(judged, weights))
        key = (round(value, 6), -(a + b + c))
        if best is None or key > best[:2]:
            best = (*key, weights)
    assert best is not None
    return best[2], best[0]


def choose_teacher_weight(qrels: Mapping[str, Mapping[str, int]], features: Features, logits: Mapping[str, Array],
                          base: FusionWeights, grid: Sequence[float] = TEACHER_GRID) -> tuple[FusionWeights, dict[float, float]]:
    """``base`` with the teacher weight ``d`` of ``grid`` that gives the best MRR@10 (ties: the smaller ``d``),
    and the whole curve."""
    judged = {q: f for q, f in features.items() if q in qrels}
    if not judged:
        raise ValueError("no judged query to choose the teacher's fusion weight on")
    curve = {float(d): mrr_at_10(qrels, fused_run(judged, FusionWeights(base.bm25, base.dense, base.prior, float(d)), logits)) for d in grid}
    d = max(curve, key=lambda w: (round(curve[w], 6), -w))
    return FusionWeights(base.bm25, base.dense, base.prior, d), curve
