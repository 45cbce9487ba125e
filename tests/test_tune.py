"""`lrt-rerank tune` and the tuned fusion (lrt_rerank.tune, lrt_rerank.rerank.fusion): the choice on synthetic
lists whose best function is known, the adoption guard, the refusal of the test split, fusion.json's round
trip and validation, and the order the pipeline gives under a fusion against an independent computation on a
real embedded index (a slice of SciFact)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_beir import tiny_scifact_with_index

from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.evaluate import TUNED_SYSTEM, evaluate
from lrt_rerank.first_stage.embedded import EmbeddedFirstStage
from lrt_rerank.pipeline import Pipeline
from lrt_rerank.rerank.fusion import Fusion, FusionFormatError, Signals, load_fusion, parse_fusion
from lrt_rerank.tune import Judged, candidate_functions, check_split, choose, collect, per_query_mrr

N = 20


def _lists(seed: int, queries: int, relevant_by: str) -> list[Judged]:
    """``queries`` lists of ``N`` candidates with one relevant document, never first in first-stage order.
    ``relevant_by="dense"``: the dense score puts it first and BM25 says nothing; ``"none"``: no signal
    points at it (RRF's order is as good as any)."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(queries):
        position = int(rng.integers(1, N))
        bm25 = rng.normal(size=N)
        dense = rng.normal(size=N)
        if relevant_by == "dense":
            dense[position] = dense.max() + 1.0
        relevant = np.zeros(N, dtype=bool)
        relevant[position] = True
        ranks = np.arange(1, N + 1, dtype=np.int64)
        signals = Signals(bm25, dense, ranks, rng.permutation(ranks))
        out.append(Judged(f"q{q}", [f"d{i}" for i in range(N)], signals, relevant))
    return out


def test_synthetic_lists_whose_best_function_is_dense_alone_adopt_it() -> None:
    functions = candidate_functions()
    chosen, figures = choose(functions, per_query_mrr(functions, _lists(1, 60, "dense")))
    assert figures["adopted"] and figures["cross_validation"]["gain_ci95"][0] > 0
    assert chosen.function == "linear" and chosen.weights["dense"] > 0
    assert chosen.weights["bm25"] == 0 and chosen.weights["prior"] == 0 and chosen.weights["reranker"] == 0
    assert figures["best_in_sample"]["MRR@10"] == 1.0 and figures["cross_validation"]["MRR@10"] == 1.0


def test_the_reranker_weight_is_chosen_when_only_the_logit_knows() -> None:
    judged = []
    for query in _lists(2, 40, "none"):
        logits = np.where(query.relevant, 3.0, 0.0) + np.random.default_rng(len(judged)).normal(scale=0.1, size=N)
        judged.append(Judged(query.query_id, query.ids, query.signals, query.relevant, logits))
    functions = candidate_functions(with_reranker=True)
    chosen, figures = choose(functions, per_query_mrr(functions, judged))
    assert figures["adopted"] and chosen.weights["reranker"] > 0 and chosen.uses_reranker


def test_the_guard_keeps_rrf_where_nothing_beats_it() -> None:
    functions = candidate_functions()
    assert functions[0] == Fusion()  # the baseline: the first stage's RRF, k=60
    mrr = per_query_mrr(functions, _lists(3, 60, "none"))
    chosen, figures = choose(functions, mrr)
    assert chosen == Fusion() and not figures["adopted"]
    assert figures["cross_validation"]["gain_ci95"][0] <= 0
    assert figures["best_in_sample"]["MRR@10"] >= figures["rrf"]  # in-sample noise is not adopted
    first_stage_first = _lists(4, 30, "none")
    for query in first_stage_first:
        query.relevant[:] = False
        query.relevant[0] = True  # RRF's first is relevant: nothing can beat it
    chosen, figures = choose(functions, per_query_mrr(functions, first_stage_first))
    assert chosen == Fusion() and figures["reason"] == "no candidate beats the baseline RRF on this split"


def test_per_query_mrr_is_the_mrr_of_each_functions_order() -> None:
    from lrt_rerank.evaluate import reciprocal_rank

    judged = _lists(5, 8, "dense")
    functions = candidate_functions()[::37]
    mrr = per_query_mrr(functions, judged)
    for f, function in enumerate(functions):
        for j, query in enumerate(judged):
            order = np.argsort(-function.scores(query.signals), kind="stable")
            qrels = {query.ids[i]: int(query.relevant[i]) for i in range(N)}
            assert mrr[f, j] == pytest.approx(reciprocal_rank([query.ids[i] for i in order], qrels, 10))


def test_rrf_positions_follow_rrf_with_that_k() -> None:
    signals = Signals(np.zeros(4), np.zeros(4), np.array([1, 2, 3, 0]), np.array([4, 3, 1, 2]))
    for k in (1, 60):
        score = [1 / (k + 1) + 1 / (k + 4), 1 / (k + 2) + 1 / (k + 3), 1 / (k + 3) + 1 / (k + 1), 1 / (k + 2)]
        expected = np.empty(4, dtype=np.int64)
        expected[np.argsort(-np.array(score), kind="stable")] = np.arange(4)
        np.testing.assert_array_equal(signals.rrf_positions(k), expected)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_tuning_on_the_test_split_is_refused_in_one_line(split: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=f"--split {split}"):
        check_split(split)
    out = tmp_path / "fusion.json"
    assert main(["tune", "--dataset", str(tmp_path), "--split", split, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--split {split}" in err and not out.exists()


def test_fusion_json_round_trips(tmp_path: Path) -> None:
    fusion = Fusion("linear", {"bm25": 0.5, "dense": 2.0, "prior": 0.25, "reranker": 1.0}, "minmax", 20,
                    {"dataset": "d", "split": "train", "queries": 12}, {"adopted": True})
    path = fusion.save(tmp_path / "f" / "fusion.json")
    loaded = load_fusion(path)
    assert loaded == fusion and loaded.source == str(path) and loaded.to_json() == fusion.to_json()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": "other"}, "format"),
        ({"function": "rbf"}, "function"),
        ({"weights": {"bm25": -1}}, "weights.bm25"),
        ({"weights": {"dense": "1"}}, "weights.dense"),
        ({"weights": {"boost": 1}}, "weights.boost"),
        ({"weights": {"prior": 0}}, "weights"),
        ({"function": "rrf", "weights": {"bm25": 1, "prior": 1}}, "weights"),
        ({"normalisation": "l2"}, "normalisation"),
        ({"rrf_k": 0}, "rrf_k"),
        ({"fitted_on": []}, "fitted_on"),
    ],
)
def test_a_bad_fusion_json_names_the_file_and_the_field(change: dict[str, object], field: str, tmp_path: Path) -> None:
    record = {**Fusion("linear", {"bm25": 1.0, "dense": 0.0, "prior": 1.0, "reranker": 0.0}).to_json(), **change}
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(record))
    with pytest.raises(FusionFormatError, match=rf"{path}: field '{field}'"):
        load_fusion(path)
    with pytest.raises(FusionFormatError, match="not JSON"):
        path.write_text("{")
        load_fusion(path)
    with pytest.raises(FusionFormatError, match="expected a JSON object"):
        parse_fusion([1])


# ------------------------------------------------------------------ on a real embedded index
@pytest.fixture(scope="module")
def tiny(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A slice of SciFact (24 train, 8 dev queries) and its embedded index (the default bi-encoder)."""
    return tiny_scifact_with_index(shared_data, tmp_path_factory.mktemp("tune"))


def _independent_order(stage: EmbeddedFirstStage, query: str, fusion: Fusion, logits: np.ndarray | None = None) -> list[str]:
    """The fused order of the RRF top 50 from the systems' own lists, with numpy only."""
    ids = [c.id for c in stage.search(query, 50, "rrf")]
    columns = []
    for system in ("bm25", "dense"):
        found = {c.id: c.score for c in stage.search(query, 200, system)}
        raw = np.array([found.get(d, min(found.values())) for d in ids])
        columns.append((raw - raw.mean()) / (raw.std() + 1e-9))
    prior = -np.log(np.arange(1, len(ids) + 1))
    w = fusion.weights
    score = w["bm25"] * columns[0] + w["dense"] * columns[1] + w["prior"] * (prior - prior.mean()) / prior.std()
    if logits is not None:
        score = score + w["reranker"] * (logits - logits.mean()) / (logits.std() + 1e-9)
    return [ids[i] for i in np.argsort(-score, kind="stable")]


class LengthScorer:
    """A re-ranker that prefers shorter passages (deterministic, no model)."""

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        return -np.array([len(p) for p in passages], dtype=np.float32) / 100.0


def test_the_pipelines_order_under_a_fusion_is_the_independent_one(tiny: tuple[Path, Path]) -> None:
    root, index = tiny
    dataset = load_dataset(root, "train")
    stage = EmbeddedFirstStage.open(index)
    fusion = Fusion("linear", {"bm25": 1.0, "dense": 0.5, "prior": 0.25, "reranker": 0.0})
    combined = Fusion("linear", {"bm25": 1.0, "dense": 0.5, "prior": 0.25, "reranker": 2.0})
    with pytest.raises(ValueError, match="weights.reranker"):
        Pipeline(stage, None, fusion=combined)
    for qid in dataset.eval_query_ids()[:6]:
        query = dataset.queries[qid]
        hits = Pipeline(stage, None, fusion=fusion).search(query, k=50)
        assert [h.id for h in hits] == _independent_order(stage, query, fusion)
        assert not any(h.reranked for h in hits)
        with_logits = Pipeline(stage, LengthScorer(), fusion=combined).search(query, k=50)
        texts = stage.get_texts([c.id for c in stage.search(query, 50, "rrf")])
        logits = LengthScorer().score(query, texts).astype(np.float64)
        assert [h.id for h in with_logits] == _independent_order(stage, query, combined, logits)
        assert [h.id for h in Pipeline(stage, None, fusion=Fusion()).search(query, k=50)] == [c.id for c in stage.search(query, 50, "rrf")]


def test_tune_then_eval_with_the_fusion(tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, index = tiny
    out = tmp_path / "fusion.json"
    assert main(["tune", "--dataset", str(root), "--split", "train", "--index", str(index), "--out", str(out), "--folds", "3"]) == 0
    fusion = load_fusion(out)
    train = load_dataset(root, "train")
    assert fusion.fitted_on["split"] == "train" and fusion.fitted_on["queries"] == len(train.eval_query_ids())
    assert fusion.figures["adopted"] == (fusion != Fusion())
    capsys.readouterr()
    assert main(["eval", "--dataset", str(root), "--split", "dev", "--index", str(index), "--reranker", "none",
                 "--fusion", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| tuned fusion |" in table and "| RRF(BM25, dense) |" in table and "| BM25 |" in table


def test_tunes_measure_is_evals(tiny: tuple[Path, Path]) -> None:
    root, index = tiny
    dataset: Dataset = load_dataset(root, "train")
    stage = EmbeddedFirstStage.open(index)
    fusion = Fusion("linear", {"bm25": 0.25, "dense": 1.0, "prior": 0.5, "reranker": 0.0}, "minmax")
    mrr = per_query_mrr([fusion], collect(dataset, stage, progress=False))
    results = evaluate(dataset, stage, None, progress=False, systems=("rrf",), fusion=fusion)
    assert results[-1].system == TUNED_SYSTEM
    assert results[-1].metrics["MRR@10"] == pytest.approx(float(mrr.mean()))


class Broken:
    def score(self, query: str, passages: list[str]) -> np.ndarray:
        raise RuntimeError("model gone")


def test_a_failing_reranker_under_a_fusion_fails_open_to_the_first_stage_order(tiny: tuple[Path, Path]) -> None:
    root, index = tiny
    stage = EmbeddedFirstStage.open(index)
    query = load_dataset(root, "train").queries[load_dataset(root, "train").eval_query_ids()[0]]
    combined = Fusion("linear", {"bm25": 1.0, "dense": 1.0, "prior": 0.0, "reranker": 1.0})
    result = Pipeline(stage, Broken(), fusion=combined).run(query, k=20)
    assert result.status.value == "failed" and "model gone" in (result.error or "")
    assert [h.id for h in result.hits] == [c.id for c in stage.search(query, 20, "rrf")]
