"""The BM25 analyzer: English stemming by default, recorded by each index, the same on the embedded path and the node."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset, Document, load_dataset
from lrt_rerank.evaluate import evaluate, top_k_overlap
from lrt_rerank.first_stage.analyzer import Analyzer
from lrt_rerank.first_stage.embedded import MANIFEST, EmbeddedFirstStage
from lrt_rerank.first_stage.index_cache import cached_index
from opensearch_fixtures import OpenSearchNode
from tiny_beir import COOK, QRELS, QUERIES, SWIM, write_beir

DOCS = [
    Document("run", "Mornings", "She runs every morning; the runner ran ten kilometres."),
    SWIM,
    COOK,
]


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", DOCS, QUERIES, QRELS)


def bm25_ids(stage: EmbeddedFirstStage, query: str) -> list[str]:
    return [c.id for c in stage.search(query, 10, "bm25")]


def test_default_index_stems_and_records_english(tmp_path: Path, small_bi_encoder_dir: Path) -> None:
    stage = EmbeddedFirstStage.build(DOCS, tmp_path / "idx", model_dir=small_bi_encoder_dir, progress=False)
    assert json.loads((tmp_path / "idx" / MANIFEST).read_text())["bm25"]["stemmer"] == "english"
    reopened = EmbeddedFirstStage.open(tmp_path / "idx", model_dir=small_bi_encoder_dir)
    assert reopened.analyzer == Analyzer("english")
    for query, doc in QRELS.items():
        assert bm25_ids(reopened, QUERIES[query]) == [doc]  # no document holds the query's word as written
    assert bm25_ids(stage, "the of into") == []


def test_an_unstemmed_index_matches_words_only_as_written(tmp_path: Path, small_bi_encoder_dir: Path) -> None:
    stage = EmbeddedFirstStage.build(DOCS, tmp_path / "idx", model_dir=small_bi_encoder_dir, progress=False, stemmer="none")
    assert stage.analyzer.stemmer == "none"
    assert bm25_ids(stage, "running") == []
    assert set(bm25_ids(stage, "runs swimmer")) == {"run", "swim"}


def test_index_built_before_the_analyzer_option_opens_as_built_and_eval_says_so(
    tmp_path: Path, small_bi_encoder_dir: Path, tiny_beir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "old"
    EmbeddedFirstStage.build(DOCS, index, model_dir=small_bi_encoder_dir, progress=False, stemmer="none")
    manifest = json.loads((index / MANIFEST).read_text())
    manifest["bm25"] = {"library": "bm25s", "k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "stemmer": None}
    (index / MANIFEST).write_text(json.dumps(manifest))  # exactly what an earlier version wrote

    old = EmbeddedFirstStage.open(index, model_dir=small_bi_encoder_dir)
    assert old.analyzer == Analyzer("none") and bm25_ids(old, "running") == []

    argv = ["eval", "--dataset", str(tiny_beir), "--index", str(index), "--dense-model", str(small_bi_encoder_dir)]
    assert main([*argv, "--reranker", "none"]) == 0
    assert "BM25 analyzer: no stemming" in capsys.readouterr().out

    assert main([*argv, "--reranker", "none", "--stemmer", "english"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "lrt-rerank eval: error: --stemmer english: the first stage's index was built with stemmer none; "
        "rebuild it or leave --stemmer out"
    ]


def test_index_cli_takes_the_stemmer_and_eval_reports_it(
    tmp_path: Path, small_bi_encoder_dir: Path, tiny_beir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "idx"
    assert main(["index", "--dataset", str(tiny_beir), "--out", str(out), "--dense-model", str(small_bi_encoder_dir)]) == 0
    assert "BM25 analyzer: Snowball English (Porter2) stemming, 33 English stop words" in capsys.readouterr().out
    assert main(["eval", "--dataset", str(tiny_beir), "--index", str(out), "--reranker", "none", "--json"]) == 0
    captured = capsys.readouterr()
    bm25 = next(json.loads(line) for line in captured.out.splitlines() if '"bm25"' in line)
    assert bm25["MRR@10"] == 1.0  # every query finds its document only through the stemmer
    assert "Snowball English" in captured.err


def test_cached_index_is_keyed_by_analyzer_and_reuses_the_embeddings(
    tmp_path: Path, tiny_beir: Path, small_bi_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lrt_rerank.first_stage.embedded as embedded

    dataset: Dataset = load_dataset(tiny_beir, "test")
    unstemmed = cached_index(dataset, progress=False, dense_model=str(small_bi_encoder_dir), home=tmp_path, stemmer="none")

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was embedded again")

    monkeypatch.setattr(embedded, "_embed_corpus", no_embedding)
    stemmed = cached_index(dataset, progress=False, dense_model=str(small_bi_encoder_dir), home=tmp_path)
    assert stemmed.path != unstemmed.path
    assert (stemmed.analyzer.stemmer, unstemmed.analyzer.stemmer) == ("english", "none")
    assert np.array_equal(stemmed._embeddings, unstemmed._embeddings)
    assert bm25_ids(stemmed, "running") == ["run"] and bm25_ids(unstemmed, "running") == []
    again = cached_index(dataset, progress=False, dense_model=str(small_bi_encoder_dir), home=tmp_path, stemmer="none")
    assert again.path == unstemmed.path


def test_an_unknown_stemmer_recorded_by_an_index_is_named() -> None:
    with pytest.raises(ValueError, match=r"idx/manifest.json: records BM25 stemmer 'porter'"):
        Analyzer.from_record({"stemmer": "porter"}, "idx/manifest.json")


# ------------------------------------------------------------------------- on a real node
@pytest.mark.integration
def test_node_analyzer_gives_the_embedded_tokens(opensearch_node: OpenSearchNode, nfcorpus_test: Dataset) -> None:
    """Lucene's analysis of `lrt_bm25` against bm25s + PyStemmer, token for token, on 300 NFCorpus documents.

    Lucene's Snowball English is an older revision of Porter2 than PyStemmer's (snowball 2 added exceptions
    such as organic -> organic, interval -> interval, lateral -> lateral, where Lucene gives organ, interv,
    later): 0.9947 of the tokens agree (porter_stem: 0.953), the rest differ in stems only."""
    from lrt_rerank.opensearch.indexing import index_body

    client, name = opensearch_node.client, "lrt-test-analyzer"
    if client.indices.exists(index=name):
        client.indices.delete(index=name)
    client.indices.create(index=name, body=index_body(8))
    try:
        texts = [d.full_text for d in list(nfcorpus_test.corpus.values())[:300]]
        expected = Analyzer().tokenize(texts, return_ids=False)
        agree = total = 0
        for text, tokens in zip(texts, expected, strict=True):
            answer = client.indices.analyze(index=name, body={"analyzer": "lrt_bm25", "text": text})
            node = [t["token"] for t in answer["tokens"]]
            assert len(node) == len(tokens), (text, node, tokens)  # the same words kept: stems may differ
            agree += sum(a == b for a, b in zip(node, tokens, strict=True))
            total += len(tokens)
        assert agree / total >= 0.99, f"{agree} of {total} tokens agree"
    finally:
        client.indices.delete(index=name)


@pytest.mark.integration
def test_node_bm25_ranks_as_the_embedded_bm25(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, embedded_nfcorpus: EmbeddedFirstStage, nfcorpus_test: Dataset, bi_encoder
) -> None:
    """NFCorpus test, 323 queries: the stemmed BM25 top 10 overlap per query, MRR@10 within 0.01."""
    from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage

    stage = OpenSearchFirstStage.connect(opensearch_node.url, opensearch_nfcorpus, encoder=bi_encoder)
    assert stage.analyzer == embedded_nfcorpus.analyzer == Analyzer("english")
    overlaps = top_k_overlap(nfcorpus_test, stage, embedded_nfcorpus)
    assert np.mean(overlaps) >= 0.9 and np.percentile(overlaps, 10) >= 0.7, (np.mean(overlaps), sorted(overlaps)[:10])
    remote = evaluate(nfcorpus_test, stage, None, progress=False, systems=("bm25",))[0]
    local = evaluate(nfcorpus_test, embedded_nfcorpus, None, progress=False, systems=("bm25",))[0]
    assert abs(remote.metrics["MRR@10"] - local.metrics["MRR@10"]) <= 0.01, (remote.metrics, local.metrics)


@pytest.mark.integration
def test_node_index_made_before_the_analyzer_was_recorded_stays_unstemmed(opensearch_node: OpenSearchNode, bi_encoder) -> None:
    from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
    from lrt_rerank.opensearch.indexing import META_KEY, IndexingError, index_body, index_documents

    client, name = opensearch_node.client, "lrt-test-old-analyzer"
    if client.indices.exists(index=name):
        client.indices.delete(index=name)
    body = index_body(bi_encoder.dim, analyzer=Analyzer("none"))
    del body["mappings"]["_meta"][META_KEY]["analyzer"]  # as an earlier version created it
    client.indices.create(index=name, body=body)
    try:
        report = index_documents(client, name, DOCS, bi_encoder, progress=False)  # the index's own analyzer
        assert report.indexed == len(DOCS)
        stage = OpenSearchFirstStage.connect(opensearch_node.url, name, encoder=bi_encoder)
        assert stage.analyzer == Analyzer("none")
        assert stage.search("running", 10, "bm25") == []
        assert [c.id for c in stage.search("runs", 10, "bm25")] == ["run"]
        with pytest.raises(IndexingError, match=f"index '{name}' exists with BM25 stemmer none, not english"):
            index_documents(client, name, DOCS, bi_encoder, progress=False, stemmer="english")
    finally:
        client.indices.delete(index=name)


@pytest.mark.integration
def test_opensearch_index_cli_records_the_stemmer(
    opensearch_node: OpenSearchNode, tiny_beir: Path, small_bi_encoder_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrt_rerank.opensearch.indexing import index_analyzer

    name = "lrt-test-cli-stemmer"
    argv = ["opensearch", "index", "--dataset", str(tiny_beir), "--index", name, "--url", opensearch_node.url]
    argv += ["--dense-model", str(small_bi_encoder_dir), "--recreate"]
    try:
        assert main([*argv, "--stemmer", "none"]) == 0
        assert index_analyzer(opensearch_node.client, name) == Analyzer("none")
        assert main(argv) == 0  # recreated: the default analyzer
        assert index_analyzer(opensearch_node.client, name) == Analyzer("english")
        assert main(argv[:-1] + ["--stemmer", "none"]) == 1  # kept, with another analyzer: refused
        assert "exists with BM25 stemmer english, not none; recreate it (--recreate)" in capsys.readouterr().err
    finally:
        opensearch_node.client.indices.delete(index=name)
