"""The fusion teacher of `train all --teacher-fusion` (lrt_rerank.train.fusion): its first-stage features
against an independent standardisation, and its weight choice on data where the answer is known."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from lrt_rerank.first_stage.base import Candidate, FirstStage, System
from lrt_rerank.train.fusion import FusionWeights, choose_first_stage_weights, choose_teacher_weight, first_stage_features


class FixedScores(FirstStage):
    """A first stage whose systems return fixed (id, score) lists, best first."""

    def __init__(self, hits: dict[str, list[tuple[str, float]]]) -> None:
        self.hits = hits
        self.pools: list[int] = []

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        self.pools.append(k)
        return [Candidate(d, s, r) for r, (d, s) in enumerate(self.hits[system][:k], start=1)]

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        return list(ids)


def test_features_standardise_each_systems_scores_and_give_a_missing_candidate_the_pools_lowest() -> None:
    bm25 = [("a", 12.0), ("b", 7.5), ("c", 3.0)]  # "d" is beyond BM25's pool
    dense = [("d", 0.91), ("a", 0.80), ("c", 0.42), ("b", 0.40)]
    stage = FixedScores({"bm25": bm25, "dense": dense})
    got = first_stage_features(stage, "q", ["a", "b", "c", "d"], pool=200)
    raw_bm25 = np.array([12.0, 7.5, 3.0, 3.0])
    raw_dense = np.array([0.80, 0.40, 0.42, 0.91])
    for row, raw in zip(got, (raw_bm25, raw_dense)):
        expected = (raw - raw.mean()) / raw.std()
        np.testing.assert_allclose(row, expected, atol=1e-6)
        assert row.mean() == pytest.approx(0.0, abs=1e-9) and row.std() == pytest.approx(1.0, abs=1e-6)
    assert stage.pools == [200, 200]
    none = first_stage_features(FixedScores({"bm25": [], "dense": dense}), "q", ["a", "d"])
    np.testing.assert_allclose(none[0], [0.0, 0.0]), "a system that finds nothing contributes nothing"


def _synthetic(seed: int, queries: int = 40, n: int = 20) -> tuple[dict[str, dict[str, int]], dict[str, tuple[list[str], np.ndarray]], dict[str, np.ndarray]]:
    """Lists whose relevant document sits at a random position (never first); BM25 scores it highest, dense
    says nothing, and in 1 query of 4 a decoy just above it outscores it in BM25 while the teacher's logit
    points at the relevant one."""
    rng = np.random.default_rng(seed)
    qrels, feats, logits = {}, {}, {}
    for q in range(queries):
        ids = [f"q{q}d{i}" for i in range(n)]
        rel = int(rng.integers(1, n))
        bm25 = rng.normal(scale=0.1, size=n)
        bm25[rel] = 1.0
        teacher = rng.normal(size=n)
        if q % 4 == 0:
            bm25[rel - 1] = 1.5  # earlier in the first-stage order too, so the position prior cannot rescue it
            teacher[rel] = teacher.max() + 3.0
        qrels[f"q{q}"] = {ids[rel]: 1}
        feats[f"q{q}"] = (ids, np.vstack([(bm25 - bm25.mean()) / bm25.std(), np.zeros(n)]))
        logits[f"q{q}"] = teacher
    return qrels, feats, logits


def test_first_stage_weights_follow_the_signal_that_ranks_judged_documents_and_the_teacher_weight_its_corrections() -> None:
    qrels, feats, logits = _synthetic(seed=3)
    base, mrr = choose_first_stage_weights(qrels, feats)
    assert (base.bm25, base.dense, base.prior) == (0.25, 0.0, 0.0), "BM25 alone, at the grid's smallest weight (ties: smallest sum)"
    assert mrr == pytest.approx(0.75 + 0.25 * 0.5), "BM25 alone puts the relevant document first in 3 of 4 queries, second in the rest"
    fused, curve = choose_teacher_weight(qrels, feats, logits, base)
    assert fused.teacher > 0 and (fused.bm25, fused.dense, fused.prior) == (base.bm25, base.dense, base.prior)
    assert curve[fused.teacher] > curve[0.0] == pytest.approx(mrr)
    with pytest.raises(ValueError, match="teacher's logits"):
        fused.target(feats["q0"][1])


def test_target_is_the_weighted_sum_and_ranking_adds_the_position_prior() -> None:
    x = np.array([[1.0, 0.0, -1.0], [0.5, -1.0, 0.5]])
    logits = np.array([2.0, 4.0, 0.0])
    w = FusionWeights(bm25=1.0, dense=2.0, prior=0.5, teacher=1.0)
    z = (logits - logits.mean()) / logits.std()
    np.testing.assert_allclose(w.target(x, logits), x[0] + 2 * x[1] + z, atol=1e-6)
    prior = -np.log([1.0, 2.0, 3.0])
    np.testing.assert_allclose(w.ranking(x, logits) - w.target(x, logits), 0.5 * (prior - prior.mean()) / prior.std(), atol=1e-9)
