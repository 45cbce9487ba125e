"""Weighted RRF: a weight per ranked signal, checked against the Rust core's RRF and chosen by `tune` where it is known best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank import rrf
from lrt_rerank.first_stage.base import Candidate
from lrt_rerank.opensearch.pipeline import node_fusion_refusal
from lrt_rerank.rerank.fusion import Fusion, FusionFormatError, load_fusion, signals_of
from lrt_rerank.tune import Judged, candidate_functions, choose, per_query_mrr
from synthetic_lists import ranked, synthetic_judged

PRIOR_ONLY = {"bm25": 0.0, "dense": 0.0, "prior": 1.0, "reranker": 0.0}


@pytest.mark.parametrize(("k", "weights"), [(60, (2.0, 1.0)), (5, (1.0, 4.0)), (20, (0.5, 3.0))])
def test_weighted_rrf_order_is_the_rust_cores_weighted_rrf(k: int, weights: tuple[float, float]) -> None:
    rng = np.random.default_rng(k)
    ids = [f"d{i}" for i in range(40)]
    bm25 = [ids[i] for i in rng.permutation(40)]
    dense = [ids[i] for i in rng.permutation(40)]
    reference = rrf([bm25, dense], k=float(k), weights=list(weights))
    assert len({round(score, 12) for _, score in reference}) == len(reference)  # no ties to break
    candidates = [doc_id for doc_id, _ in rrf([bm25, dense], k=60.0)]  # the first stage's order
    fusion = Fusion("rrf", PRIOR_ONLY, rrf_k=k, rrf_weights={"bm25": weights[0], "dense": weights[1]})
    scores = fusion.scores(signals_of(candidates, ranked(bm25), ranked(dense)))
    assert [candidates[i] for i in np.argsort(-scores, kind="stable")] == [doc_id for doc_id, _ in reference]


def judged_queries(queries: int = 30) -> list[Judged]:
    """Each query: the relevant document is BM25's first and dense's 20th; a distractor is dense's first
    and BM25's third. Whenever dense weighs as much as BM25 or more, the distractor's RRF score is the
    higher one (at every k); weighing BM25 above dense (with a small k) puts the relevant document first."""
    return synthetic_judged(
        queries,
        lambda relevant, distractor, rest: {
            "bm25": [relevant, rest[0], distractor, *rest[1:]],
            "dense": [distractor, *rest[:18], relevant, *rest[18:]],
        },
    )


def test_tune_chooses_the_known_best_rrf_weights() -> None:
    functions = [f for f in candidate_functions() if f.function == "rrf"]
    judged = judged_queries()
    mrr = per_query_mrr(functions, judged)
    dense_alike = [i for i, f in enumerate(functions) if f.rrf_weights["dense"] >= f.rrf_weights["bm25"]]
    assert mrr[dense_alike].mean(axis=1).max() < 1.0
    chosen, figures = choose(functions, mrr)
    assert figures["adopted"] and chosen.rrf_weights["bm25"] > chosen.rrf_weights["dense"]
    assert mrr[functions.index(chosen)].mean() == 1.0 and figures["cross_validation"]["gain_over_rrf"] > 0


def test_rrf_weights_are_saved_read_back_and_default_to_equal(tmp_path: Path) -> None:
    fusion = Fusion("rrf", PRIOR_ONLY, rrf_k=20, rrf_weights={"bm25": 4.0, "dense": 1.0})
    loaded = load_fusion(fusion.save(tmp_path / "fusion.json"))
    assert loaded == fusion and loaded.describe() == "RRF k=20 weighted 4 bm25 : 1 dense"
    record = json.loads((tmp_path / "fusion.json").read_text())
    del record["rrf_weights"]  # a fusion.json written before weighted RRF
    (tmp_path / "old.json").write_text(json.dumps(record))
    assert not load_fusion(tmp_path / "old.json").weighted_rrf
    record["rrf_weights"] = {"bm25": 0, "dense": 1}
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(FusionFormatError, match=r"bad.json: field 'rrf_weights.bm25' must be a finite number > 0, got 0"):
        load_fusion(tmp_path / "bad.json")


def test_the_node_keeps_plain_rrf_and_says_why_for_weighted_rrf() -> None:
    weighted = Fusion("rrf", PRIOR_ONLY, rrf_weights={"bm25": 2.0, "dense": 1.0})
    assert not weighted.is_first_stage_order
    assert "takes no weights" in str(node_fusion_refusal(weighted, "2.19.1"))
    assert node_fusion_refusal(Fusion("rrf", PRIOR_ONLY, rrf_weights={"bm25": 3.0, "dense": 3.0}), "2.19.1") is None


def test_a_pool_of_one_match_normalises_as_opensearchs_min_max() -> None:
    """One BM25 match in the pool: OpenSearch's min_max gives it 1 (and the documents BM25 missed 0)."""
    candidates = ["a", "b", "c"]
    signals = signals_of(candidates, [Candidate("b", 7.5, 1)], ranked(["c", "a", "b"]))
    fusion = Fusion("linear", {"bm25": 0.3, "dense": 0.7, "prior": 0.0, "reranker": 0.0}, "minmax")
    dense = np.array([0.5, 0.0, 1.0])  # a is dense's 2nd of 3, b its last, c its first
    np.testing.assert_allclose(fusion.scores(signals), 0.3 * np.array([0.0, 1.0, 0.0]) + 0.7 * dense, atol=1e-6)
