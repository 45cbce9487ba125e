"""Several bi-encoders in one embedded index (``index --dense-model A,B``): each further one's own
embeddings and ``dense:NAME`` signal, RRF over all, the cache keyed by the set and reusing rows, and
N-way (weighted) fusion with ``tune`` over N signals on synthetic lists whose best weights are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank import BiEncoder, rrf
from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset, Document, load_dataset
from lrt_rerank.first_stage.embedded import EmbeddedFirstStage
from lrt_rerank.first_stage.index_cache import cached_index
from lrt_rerank.opensearch.pipeline import node_fusion_refusal
from lrt_rerank.rerank.fusion import Fusion, FusionFormatError, load_fusion, parse_fusion, signals_of
from lrt_rerank.tune import Judged, candidate_functions, choose, per_query_mrr, rrf_weight_grid
from synthetic_lists import ranked, synthetic_judged
from tiny_beir import COOK, QRELS, QUERIES, SWIM, write_beir

DOCS = [
    Document("run", "Running", "Runners run every morning in the park."),
    SWIM,
    COOK,
    Document("sun", "Vitamin D", "Sunlight on the skin makes vitamin D."),
    Document("car", "Cars", "Cars have four wheels and an engine."),
]


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer bi-encoder whose card asks for e5's prefixes (another model.onnx than the 1-layer one)."""
    from lrt_rerank.models.minilm import build_minilm_model

    path = build_minilm_model(tmp_path_factory.mktemp("models") / "be-2l", "bi-encoder", num_layers=2, max_length=32)
    card = json.loads((path / "card.json").read_text())
    card.update(name="be-2l", query_instruction="query: ", document_prefix="passage: ")
    (path / "card.json").write_text(json.dumps(card, indent=2))
    return path


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", DOCS, QUERIES, QRELS)


def test_a_further_model_is_its_own_dense_signal_with_its_prefixes(tmp_path: Path, small_bi_encoder_dir: Path, second_model: Path) -> None:
    stage = EmbeddedFirstStage.build(DOCS, tmp_path / "idx", model_dir=small_bi_encoder_dir, extra_model_dirs=[second_model], progress=False)
    assert stage.dense_signals == ("dense", "dense:be-2l")
    record = stage.manifest["dense_extra"][0]
    assert (record["name"], record["embeddings"], record["document_prefix"]) == ("be-2l", "embeddings-be-2l.npy", "passage: ")
    # the reference: the same model, prefixes written out by hand, exact cosine ranking
    encoder = BiEncoder.load(second_model)
    rows = encoder.embed([f"passage: {d.full_text}" for d in DOCS])
    query = encoder.embed(["query: baking breads"])[0]
    expected = [DOCS[i].id for i in np.argsort(-(rows @ query), kind="stable")]
    assert [c.id for c in stage.search("baking breads", 5, "dense:be-2l")] == expected
    first = [c.id for c in stage.search("baking breads", 5, "dense")]
    bm25 = [c.id for c in stage.search("baking breads", 5, "bm25")]
    assert [c.id for c in stage.search("baking breads", 5, "rrf")] == [d for d, _ in rrf([bm25, first, expected], k=60.0, top_k=5)]
    reopened = EmbeddedFirstStage.open(tmp_path / "idx")
    assert reopened.dense_signals == stage.dense_signals
    assert [c.id for c in reopened.search("baking breads", 5, "dense:be-2l")] == expected
    with pytest.raises(ValueError, match="'dense:other'.*dense, dense:be-2l"):
        stage.search("baking breads", 5, "dense:other")  # type: ignore[arg-type]


def test_an_index_with_one_model_keeps_one_dense_signal(tmp_path: Path, small_bi_encoder_dir: Path) -> None:
    stage = EmbeddedFirstStage.build(DOCS, tmp_path / "idx", model_dir=small_bi_encoder_dir, progress=False)
    assert "dense_extra" not in stage.manifest
    assert EmbeddedFirstStage.open(tmp_path / "idx").dense_signals == ("dense",)


def test_the_cache_is_keyed_by_the_dense_set_and_reuses_each_models_rows(
    tmp_path: Path, tiny_beir: Path, small_bi_encoder_dir: Path, second_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lrt_rerank.first_stage.embedded as embedded

    dataset: Dataset = load_dataset(tiny_beir, "test")
    single = cached_index(dataset, progress=False, dense_model=str(small_bi_encoder_dir), home=tmp_path)
    embedded_texts: list[int] = []
    real = embedded._embed_corpus

    def counting(encoder, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        embedded_texts.append(len(texts))
        return real(encoder, texts, *args, **kwargs)

    monkeypatch.setattr(embedded, "_embed_corpus", counting)
    both = cached_index(dataset, progress=False, dense_model=f"{small_bi_encoder_dir},{second_model}", home=tmp_path)
    assert both.path != single.path and both.dense_signals == ("dense", "dense:be-2l")
    assert embedded_texts == [len(DOCS)], "only the further model embeds the corpus"
    assert np.array_equal(both._embeddings, single._embeddings)
    unstemmed = cached_index(dataset, progress=False, dense_model=f"{small_bi_encoder_dir},{second_model}", home=tmp_path, stemmer="none")
    assert embedded_texts == [len(DOCS)], "another analyzer re-embeds nothing"
    assert np.array_equal(unstemmed._extra["dense:be-2l"][0], both._extra["dense:be-2l"][0])
    again = cached_index(dataset, progress=False, dense_model=f"{small_bi_encoder_dir},{second_model}", home=tmp_path)
    assert again.path == both.path


def test_index_and_eval_cli_with_two_models(
    tmp_path: Path, tiny_beir: Path, small_bi_encoder_dir: Path, second_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "idx"
    assert main(["index", "--dataset", str(tiny_beir), "--out", str(out), "--dense", f"{small_bi_encoder_dir},{second_model}"]) == 0
    capsys.readouterr()
    assert main(["eval", "--dataset", str(tiny_beir), "--index", str(out), "--reranker", "none", "--json"]) == 0
    systems = [json.loads(line)["system"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert systems == ["bm25", "dense", "dense:be-2l", "rrf"]
    assert main(["eval", "--dataset", str(tiny_beir), "--index", str(out), "--reranker", "none"]) == 0
    assert "| RRF(BM25, dense, dense:be-2l) |" in capsys.readouterr().out
    assert main(["index", "--dataset", str(tiny_beir), "--out", str(tmp_path / "bad"), "--dense", f"{small_bi_encoder_dir},nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dense model 'nope'" in err[0]
    assert main(["index", "--dataset", str(tiny_beir), "--out", str(tmp_path / "twice"), "--dense", "bge-small,bge-small-en-v1.5"]) != 0
    assert "'bge-small-en-v1.5' names a model already in the list" in capsys.readouterr().err


# ------------------------------------------------------------------ N-way fusion, synthetic lists
def three_signal_queries(queries: int = 30) -> list[Judged]:
    """The relevant document is BM25's 3rd, dense's 25th and e5's 1st; a distractor is BM25's and dense's
    1st and e5's 25th, and another document second in all three. Equal weights put both above the relevant
    one; only weighing e5 above the others, at a small k, puts the relevant document first."""
    return synthetic_judged(
        queries,
        lambda relevant, distractor, rest: {
            "bm25": [distractor, rest[0], relevant, *rest[1:]],
            "dense": [distractor, *rest[:23], relevant, *rest[23:]],
            "dense:e5": [relevant, *rest[:23], distractor, *rest[23:]],
        },
    )


def test_n_way_weighted_rrf_is_the_rust_cores_weighted_rrf() -> None:
    judged = three_signal_queries(1)[0]
    fusion = Fusion("rrf", {"bm25": 0.0, "dense": 0.0, "prior": 1.0, "reranker": 0.0}, rrf_k=5,
                    rrf_weights={"bm25": 1.0, "dense": 2.0, "dense:e5": 4.0})
    signals = judged.signals
    lists = [sorted((d for d, r in zip(judged.ids, ranks) if r > 0), key=lambda d: ranks[judged.ids.index(d)])
             for ranks in (signals.bm25_rank, signals.dense_rank, signals.extra["dense:e5"].rank)]
    reference = [d for d, _ in rrf(lists, k=5.0, weights=[1.0, 2.0, 4.0])]
    scores = fusion.scores(signals)
    assert [judged.ids[i] for i in np.argsort(-scores, kind="stable")][:10] == reference[:10]


def test_tune_over_three_signals_finds_the_known_best_weights() -> None:
    judged = three_signal_queries()
    functions = [f for f in candidate_functions(further=["dense:e5"]) if f.function == "rrf"]
    assert len(functions) == 8 * len(rrf_weight_grid(3)) == 8 * 19
    mrr = per_query_mrr(functions, judged)
    # plain RRF: the Rust core's order of the three lists (the candidates' order) puts others first
    first_stage = np.array([1.0 / (q.ids.index(q.query_id + "d0") + 1) for q in judged])
    assert np.array_equal(mrr[0], first_stage) and first_stage.max() < 0.5
    chosen, figures = choose(functions, mrr)
    assert figures["adopted"] and mrr[functions.index(chosen)].mean() == 1.0
    weights = chosen.rrf_weight_vector(("bm25", "dense", "dense:e5"))
    assert weights[2] > max(weights[:2]) and chosen.rrf_k < 60
    # the chosen fusion is written and read back with its third weight
    again = parse_fusion(chosen.to_json())
    assert again.rrf_weights == chosen.rrf_weights and again.further_signals == ("dense:e5",)
    assert np.array_equal(again.scores(judged[0].signals), chosen.scores(judged[0].signals))
    assert "dense:e5" in (node_fusion_refusal(again, "2.19.0") or "")


def test_linear_fusion_weighs_a_further_signal() -> None:
    judged = three_signal_queries()
    e5_only = Fusion("linear", {"bm25": 0.0, "dense": 0.0, "prior": 0.0, "reranker": 0.0, "dense:e5": 1.0}, "minmax")
    assert per_query_mrr([e5_only], judged).mean() == 1.0
    with pytest.raises(ValueError, match="'dense:e5', which the first stage does not have"):
        e5_only.scores(signals_of(["a"], ranked(["a"]), ranked(["a"])))


def test_a_fusion_json_from_before_further_signals_loads_and_ranks_three(tmp_path: Path) -> None:
    old = {
        "format": "lrt-rerank-fusion", "format_version": 1, "function": "rrf",
        "weights": {"bm25": 0, "dense": 0, "prior": 1, "reranker": 0}, "normalisation": "zscore", "rrf_k": 60,
        "fitted_on": {}, "figures": {},
    }
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(old))
    fusion = load_fusion(path)
    assert fusion.further_signals == () and fusion.is_first_stage_order
    judged = three_signal_queries(1)[0]
    # equal weights over all signals: the first stage's own RRF order
    assert list(np.argsort(-fusion.scores(judged.signals), kind="stable")) == list(range(len(judged.ids)))
    bad = {**old, "rrf_weights": {"bm25": 1, "dense": 1, "sparse": 2}}
    with pytest.raises(ValueError, match="field 'rrf_weights.sparse' is not a ranked signal"):
        parse_fusion(bad, "f.json")


def test_serve_refuses_a_fusion_over_further_dense_signals(tmp_path: Path) -> None:
    from lrt_rerank.service.served import fusion_env

    fusion = Fusion("rrf", {"bm25": 0.0, "dense": 0.0, "prior": 1.0, "reranker": 0.0}, rrf_weights={"bm25": 1, "dense": 1, "dense:e5": 2})
    path = fusion.save(tmp_path / "fusion.json")
    with pytest.raises(FusionFormatError, match=r"weighs the dense signals dense:e5; first_stage_scores carry BM25 and one dense"):
        fusion_env(path)


def test_opensearch_index_takes_one_dense_model(tiny_beir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["opensearch", "index", "--dataset", str(tiny_beir), "--index", "tiny", "--dense", "bge-small,e5-small-v2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lrt-rerank opensearch index: error: --dense-model bge-small,e5-small-v2: an OpenSearch index holds one dense model"]
