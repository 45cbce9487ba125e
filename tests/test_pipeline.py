"""Pipeline behaviour: ordering, latency budget (fail-open), re-ranker failures, empty queries,
plus the embedded first stage (index build, reload, version check) with the real core models."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank.datasets import Document
from lrt_rerank.first_stage.base import Candidate, FirstStage, System, check_system
from lrt_rerank.pipeline import Pipeline, RerankStatus


class ListFirstStage(FirstStage):
    """A first stage over an in-memory list: every query gets the documents in list order."""

    def __init__(self, n: int) -> None:
        self.ids = [f"doc{i}" for i in range(n)]
        self.texts = {doc_id: "x" * (i + 1) for i, doc_id in enumerate(self.ids)}  # doc_i has length i + 1
        self.calls = 0

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        check_system(system)
        self.calls += 1
        return [Candidate(doc_id, 1.0 / rank, rank) for rank, doc_id in enumerate(self.ids[:k], start=1)]

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        return [self.texts[doc_id] for doc_id in ids]


class LengthScorer:
    """Scores a passage by its length, so the re-ranked order is the reverse of the first stage."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.passages_scored = 0

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        time.sleep(self.delay_s * len(passages))
        self.passages_scored += len(passages)
        return np.array([len(p) for p in passages], dtype=np.float32)


class BrokenScorer:
    def __init__(self, result: object = None) -> None:
        self.result = result

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        if self.result is None:
            raise RuntimeError("model exploded")
        return self.result  # type: ignore[return-value]


def test_without_reranker_returns_first_stage_order() -> None:
    result = Pipeline(ListFirstStage(100)).run("q", k=10)
    assert [h.id for h in result.hits] == [f"doc{i}" for i in range(10)]
    assert result.status is RerankStatus.DISABLED
    assert not any(h.reranked for h in result.hits)
    assert [h.rank for h in result.hits] == list(range(1, 11))


def test_reranks_top_depth_then_keeps_the_rest() -> None:
    pipeline = Pipeline(ListFirstStage(100), LengthScorer(), rerank_depth=50)
    result = pipeline.run("q", k=100)
    ids = [h.id for h in result.hits]
    # top 50 re-ranked by length (longest first), 51..100 untouched
    assert ids[:50] == [f"doc{i}" for i in range(49, -1, -1)]
    assert ids[50:] == [f"doc{i}" for i in range(50, 100)]
    assert all(h.reranked for h in result.hits[:50]) and not any(h.reranked for h in result.hits[50:])
    assert result.hits[0].score == 50.0 and result.hits[0].first_stage_rank == 50
    assert result.hits[50].score == pytest.approx(1 / 51)  # first-stage score kept
    assert result.status is RerankStatus.COMPLETE and result.reranked == 50
    assert result.total_ms >= result.first_stage_ms


def test_k_smaller_than_depth_still_reranks_the_depth() -> None:
    hits = Pipeline(ListFirstStage(100), LengthScorer(), rerank_depth=30).search("q", k=3)
    assert [h.id for h in hits] == ["doc29", "doc28", "doc27"]


def test_equal_scores_keep_first_stage_order() -> None:
    class Constant:
        def score(self, query: str, passages: list[str]) -> np.ndarray:
            return np.zeros(len(passages), dtype=np.float32)

    hits = Pipeline(ListFirstStage(20), Constant(), rerank_depth=20).search("q", k=20)
    assert [h.first_stage_rank for h in hits] == list(range(1, 21))
    assert all(h.reranked for h in hits)


class CardScorer(LengthScorer):
    """A re-ranker whose model card asks for interpolation with the first stage."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.card = {"interpolation": {"weight": weight}}


def _expected_interpolated(n: int, weight: float) -> list[str]:
    """Independent computation: length logit + weight * standardised -log(first-stage position)."""
    logits = np.arange(1, n + 1, dtype=np.float64)
    prior = -np.log(np.arange(1, n + 1, dtype=np.float64))
    final = logits + weight * (prior - prior.mean()) / prior.std()
    order = sorted(range(n), key=lambda i: (-final[i], i))
    return [f"doc{i}" for i in order]


def test_card_interpolation_weight_is_applied() -> None:
    hits = Pipeline(ListFirstStage(20), CardScorer(8.0), rerank_depth=20).search("q", k=20)
    expected = _expected_interpolated(20, 8.0)
    assert [h.id for h in hits] == expected
    assert expected != [f"doc{i}" for i in range(19, -1, -1)]  # the weight changes the order
    prior = -np.log(np.arange(1, 21))
    top = int(expected[0][3:])
    assert hits[0].score == pytest.approx(top + 1 + 8.0 * (prior[top] - prior.mean()) / prior.std())


def test_explicit_interpolation_overrides_the_card() -> None:
    hits = Pipeline(ListFirstStage(20), CardScorer(8.0), rerank_depth=20, interpolation=0.0).search("q", k=20)
    assert [h.id for h in hits] == [f"doc{i}" for i in range(19, -1, -1)]
    hits = Pipeline(ListFirstStage(20), LengthScorer(), rerank_depth=20, interpolation=3.0).search("q", k=20)
    assert [h.id for h in hits] == _expected_interpolated(20, 3.0)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), "heavy"])
def test_bad_interpolation_weight_names_the_field(weight: object) -> None:
    with pytest.raises(ValueError, match="interpolation"):
        Pipeline(ListFirstStage(5), CardScorer(weight))  # type: ignore[arg-type]


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_returns_nothing_without_searching(query: str) -> None:
    first_stage = ListFirstStage(10)
    result = Pipeline(first_stage, LengthScorer()).run(query)
    assert result.hits == [] and result.status is RerankStatus.EMPTY
    assert first_stage.calls == 0


@pytest.mark.parametrize("scorer", [BrokenScorer(), BrokenScorer(np.array([1.0])), BrokenScorer(np.full(50, np.nan))])
def test_reranker_failure_returns_first_stage_order(scorer: BrokenScorer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="lrt_rerank.rerank"):
        result = Pipeline(ListFirstStage(100), scorer, rerank_depth=50).run("q", k=100)
    assert [h.id for h in result.hits] == [f"doc{i}" for i in range(100)]
    assert result.status is RerankStatus.FAILED and result.reranked == 0
    assert not any(h.reranked for h in result.hits)
    assert any("re-ranker failed" in r.getMessage() for r in caplog.records)


def test_zero_budget_reranks_nothing_and_loses_nothing() -> None:
    scorer = LengthScorer()
    result = Pipeline(ListFirstStage(100), scorer, rerank_depth=50).run("q", k=100, budget_ms=0)
    assert [h.id for h in result.hits] == [f"doc{i}" for i in range(100)]
    assert result.status is RerankStatus.OUT_OF_BUDGET and scorer.passages_scored == 0


def test_budget_reranks_what_fits_and_flags_the_rest() -> None:
    scorer = LengthScorer(delay_s=0.02)  # 20 ms per passage
    pipeline = Pipeline(ListFirstStage(100), scorer, rerank_depth=50, chunk_size=16)
    pipeline.search("warm-up", k=10)  # learns the cost per passage (about 20 ms)
    scorer.passages_scored = 0
    # 480 ms fit a chunk of 16 (320 ms) and a smaller one, not all 50 passages (1 s)
    result = pipeline.run("q", k=100, budget_ms=480)
    assert result.status is RerankStatus.PARTIAL
    assert 0 < result.reranked < 50 and scorer.passages_scored == result.reranked
    head, tail = result.hits[: result.reranked], result.hits[result.reranked :]
    assert all(h.reranked for h in head) and not any(h.reranked for h in tail)
    assert [h.first_stage_rank for h in tail] == list(range(result.reranked + 1, 101))
    assert sorted(h.id for h in result.hits) == sorted(f"doc{i}" for i in range(100))


def test_cold_pipeline_probes_before_spending_its_budget() -> None:
    from lrt_rerank.rerank.budget import PROBE_PASSAGES

    scorer = LengthScorer(delay_s=0.02)  # 20 ms per passage, unknown to a fresh pipeline
    result = Pipeline(ListFirstStage(100), scorer, rerank_depth=50, chunk_size=16).run("q", k=100, budget_ms=100)
    # a probe of 4 (about 80 ms), then at most what the learnt cost says fits in what is left; never a blind chunk of 16
    assert PROBE_PASSAGES <= scorer.passages_scored <= PROBE_PASSAGES + 2
    assert result.status is RerankStatus.PARTIAL and result.reranked == scorer.passages_scored


def test_generous_budget_is_complete() -> None:
    result = Pipeline(ListFirstStage(60), LengthScorer(), rerank_depth=50).run("q", k=10, budget_ms=60_000)
    assert result.status is RerankStatus.COMPLETE and result.reranked == 50


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="rerank_depth"):
        Pipeline(ListFirstStage(1), rerank_depth=-1)
    with pytest.raises(ValueError, match="k must be"):
        Pipeline(ListFirstStage(1)).search("q", k=0)
    with pytest.raises(ValueError, match="unknown first-stage system"):
        ListFirstStage(1).search("q", 1, "splade")  # type: ignore[arg-type]


# --------------------------------------------------------------------- embedded first stage
DOCS = [
    Document("cat", "Cats", "Cats are small domesticated felines that purr and hunt mice."),
    Document("dog", "Dogs", "Dogs are loyal canines that bark, fetch sticks and guard houses."),
    Document("tea", "Green tea", "Green tea is brewed from Camellia sinensis leaves and contains catechins."),
    Document("car", "Electric cars", "Battery electric vehicles use motors instead of combustion engines."),
    Document("sun", "The Sun", "The Sun is the star at the centre of the Solar System."),
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    out = tmp_path_factory.mktemp("index") / "idx"
    EmbeddedFirstStage.build(DOCS, out, progress=False)
    return out


def test_embedded_index_persists_and_searches(index_dir: Path) -> None:
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    stage = EmbeddedFirstStage.open(index_dir)
    assert stage.search("felines that purr", 1, "bm25")[0].id == "cat"
    assert stage.search("a hot drink made from leaves", 1, "dense")[0].id == "tea"
    fused = stage.search("dogs barking", 5, "rrf")
    assert fused[0].id == "dog" and [c.rank for c in fused] == list(range(1, len(fused) + 1))
    assert len(stage.search("car", 10, "dense")) == 5  # dense ranks everything
    assert [c.id for c in stage.search("motors engines", 10, "bm25")] == ["car"]  # BM25 only matches
    assert stage.search("the and of", 10, "bm25") == []  # stopwords only
    assert stage.search("  ", 10, "rrf") == []
    assert stage.get_texts(["sun"]) == ["The Sun The Sun is the star at the centre of the Solar System."]
    with pytest.raises(KeyError, match="nope"):
        stage.get_texts(["nope"])


def test_embedded_scores_match_bm25_and_cosine(index_dir: Path) -> None:
    from lrt_rerank import BiEncoder
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    stage = EmbeddedFirstStage.open(index_dir)
    top = stage.search("green tea leaves", 5, "dense")
    encoder = BiEncoder.load(stage.manifest["dense"]["model_dir"])
    query = encoder.embed(["green tea leaves"])[0]  # one text a call, as search embeds it
    # the stored vector: INT8 activations are quantized per batch, so re-embedding the document
    # alone would not give the vector it was indexed with
    doc = np.load(index_dir / "embeddings.npy")[[d.id for d in DOCS].index("tea")]
    assert top[0].id == "tea" and top[0].score == pytest.approx(float(query @ doc), abs=1e-4)
    # and the stored vector is the document's embedding, up to that batching effect
    assert float(doc @ encoder.embed([DOCS[2].full_text])[0]) > 0.99
    scores = [c.score for c in top]
    assert scores == sorted(scores, reverse=True)


def test_rrf_scores_follow_the_formula(index_dir: Path) -> None:
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    stage = EmbeddedFirstStage.open(index_dir)
    bm25 = {c.id: c.rank for c in stage.search("cats purr", 100, "bm25")}
    dense = {c.id: c.rank for c in stage.search("cats purr", 100, "dense")}
    for candidate in stage.search("cats purr", 5, "rrf"):
        expected = sum(1 / (60 + run[candidate.id]) for run in (bm25, dense) if candidate.id in run)
        assert candidate.score == pytest.approx(expected)


def test_incompatible_index_version_is_a_clear_error(index_dir: Path, tmp_path: Path) -> None:
    import shutil

    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage, IndexFormatError

    copy = tmp_path / "old"
    shutil.copytree(index_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format version 999 is not supported"):
        EmbeddedFirstStage.open(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="manifest.json: missing"):
        EmbeddedFirstStage.open(copy)
    with pytest.raises(IndexFormatError, match="no such index directory"):
        EmbeddedFirstStage.open(tmp_path / "absent")


def test_build_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        EmbeddedFirstStage.build(DOCS, tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="not an lrt-rerank index"):
        EmbeddedFirstStage.build(DOCS, tmp_path, progress=False, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_pipeline_with_real_cross_encoder(index_dir: Path) -> None:
    from lrt_rerank import CrossEncoder
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    stage = EmbeddedFirstStage.open(index_dir)
    encoder = CrossEncoder.load()
    result = Pipeline(stage, encoder, rerank_depth=3, interpolation=0.0).run("cats", k=5)
    assert result.status is RerankStatus.COMPLETE
    assert [h.reranked for h in result.hits] == [True, True, True, False, False]
    texts = stage.get_texts([h.id for h in result.hits[:3]])
    expected = encoder.score("cats", texts)
    assert [h.score for h in result.hits[:3]] == pytest.approx(expected.tolist(), abs=1e-5)
    # the default model's card asks for interpolation with the first-stage order
    weight = encoder.card["interpolation"]["weight"]
    prior = -np.log(np.arange(1, 4))
    z = (prior - prior.mean()) / prior.std()
    hits = Pipeline(stage, encoder, rerank_depth=3).run("cats", k=5).hits[:3]
    in_order = sorted(hits, key=lambda h: h.first_stage_rank)  # scored as one batch, as the pipeline does (INT8)
    logits = encoder.score("cats", stage.get_texts([h.id for h in in_order]))
    for hit, logit in zip(in_order, logits, strict=True):
        assert hit.score == pytest.approx(float(logit) + weight * z[hit.first_stage_rank - 1], abs=1e-4)


def test_pipeline_reports_the_rerankers_cache(index_dir: Path) -> None:
    from lrt_rerank import CrossEncoder, ScoreCache
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    cache = ScoreCache(capacity=100)
    pipeline = Pipeline(EmbeddedFirstStage.open(index_dir), CrossEncoder.load(cache=cache), rerank_depth=3)
    first = pipeline.search("green tea", k=3)
    second = pipeline.search("green tea", k=3)
    assert [h.id for h in first] == [h.id for h in second]
    assert [h.score for h in first] == pytest.approx([h.score for h in second])
    stats = pipeline.cache_stats()
    assert stats is not None and stats["hits"] == 3 and stats["misses"] == 3
