"""`index`, `search`, `eval` and `demo` sub-commands, run through their argparse registration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank.commands import pipeline as commands

DOCS = {
    "cat1": ("Cats", "Domestic cats purr when they are content and hunt mice at night."),
    "cat2": ("Cat food", "Cats are obligate carnivores and need taurine in their food."),
    "dog1": ("Dogs", "Dogs bark at strangers and love to fetch sticks in the park."),
    "dog2": ("Dog training", "Training a puppy to sit takes patience and treats."),
    "tea1": ("Green tea", "Green tea contains catechins and a little caffeine."),
    "tea2": ("Black tea", "Black tea leaves are fully oxidised before drying."),
    "sun1": ("The Sun", "The Sun is a G-type main-sequence star."),
    "car1": ("Electric cars", "Electric cars are driven by motors powered by batteries."),
}
QUERIES = {"q1": "why do cats purr", "q2": "training a dog to sit", "q3": "caffeine in tea", "q4": "unjudged query"}
QRELS = [("q1", "cat1", 2), ("q1", "cat2", 1), ("q2", "dog2", 1), ("q3", "tea1", 1), ("q3", "tea2", 1)]


def make_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as out:
        for query_id, text in QUERIES.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (root / "qrels" / "test.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lrt-rerank")
    commands.register(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def index(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "tiny-index"
    assert run_cli("index", "--dataset", str(dataset), "--out", str(out)) == 0
    return out


def test_index_writes_a_loadable_directory(index: Path) -> None:
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["documents"] == len(DOCS)
    assert manifest["format_version"] == 1
    assert (index / "embeddings.npy").is_file() and (index / "docs.jsonl").is_file()


def test_index_refuses_existing_without_force(index: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("index", "--dataset", str(dataset), "--out", str(index)) == 2
    assert "not empty" in capsys.readouterr().err


def test_index_missing_corpus_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("index", "--dataset", str(tmp_path), "--out", str(tmp_path / "idx")) == 2
    assert "corpus.jsonl: missing" in capsys.readouterr().err


def test_search_table_and_json(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("search", str(index), "purring cats", "--k", "3", "--reranker", "none") == 0
    out = capsys.readouterr().out
    assert "cat1" in out and "re-rank: disabled" in out
    assert run_cli("search", str(index), "purring cats", "--k", "3", "--json") == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 3 and all(h["reranked"] for h in hits)
    assert {"id", "score", "rank", "first_stage_rank", "reranked", "title"} <= set(hits[0])


def test_search_interpolation_flag_overrides_the_card(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def hits(*extra: str) -> list[dict[str, object]]:
        assert run_cli("search", str(index), "purring cats", "--k", "8", "--json", *extra) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    from lrt_rerank import CrossEncoder

    bare = {h["id"]: float(h["score"]) for h in hits("--interpolation", "0")}  # type: ignore[arg-type]
    card_weight = CrossEncoder.load().card["interpolation"]["weight"]
    for weight, extra in ((3.0, ("--interpolation", "3")), (card_weight, ())):  # the card's weight by default
        weighted = hits(*extra)
        prior = -np.log(np.arange(1, len(weighted) + 1))
        z = (prior - prior.mean()) / prior.std()
        for h in weighted:  # logit + weight * z(-log first-stage rank), computed here independently
            expected = bare[str(h["id"])] + weight * z[int(h["first_stage_rank"]) - 1]  # type: ignore[arg-type]
            assert float(h["score"]) == pytest.approx(expected, abs=1e-4)  # type: ignore[arg-type]


def test_search_zero_budget_keeps_first_stage_order(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("search", str(index), "purring cats", "--k", "3", "--budget-ms", "0") == 0
    out = capsys.readouterr().out
    assert "re-rank: out_of_budget (0 re-ranked)" in out
    assert run_cli("search", str(index), "purring cats", "--k", "3", "--budget-ms", "0", "--json") == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["first_stage_rank"] for h in hits] == [1, 2, 3] and not any(h["reranked"] for h in hits)


def test_search_empty_query_prints_no_hits(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("search", str(index), "   ", "--json") == 0
    assert capsys.readouterr().out == ""


def test_search_incompatible_index(index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(index, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli("search", str(old), "cats") == 2
    err = capsys.readouterr().err
    assert "format version 0 is not supported" in err and "lrt-rerank index" in err


def test_eval_json_lines_and_plot(
    dataset: Path, index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "tradeoff.png"
    assert run_cli("eval", "--dataset", str(dataset), "--index", str(index), "--json", "--plot", str(plot)) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["system"] for r in records] == ["bm25", "dense", "rrf", "rrf+rerank"]
    for record in records:
        assert {"MRR@10", "NDCG@5", "NDCG@10", "R@50", "p50_ms", "p95_ms", "p99_ms"} <= set(record)
        assert record["queries"] == 3  # q4 has no judgments
        assert 0.0 <= record["MRR@10"] <= 1.0
    # the three judged queries are easy for BM25: the top hit is relevant for each
    assert records[0]["MRR@10"] == pytest.approx(1.0)
    assert records[3]["rerank_p50_ms"] > 0.0 and records[0]["rerank_p50_ms"] == 0.0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_eval_markdown_without_reranker(dataset: Path, index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("eval", "--dataset", str(dataset), "--index", str(index), "--reranker", "none") == 0
    out = capsys.readouterr().out
    assert "| BM25 |" in out and "| RRF(BM25, dense) |" in out and "re-ranker |" not in out
    assert "3 queries" in out


def test_eval_bad_dataset_names_file_and_line(tmp_path: Path, index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "bad")
    with (root / "queries.jsonl").open("a") as out:
        out.write("{not json}\n")
    assert run_cli("eval", "--dataset", str(root), "--index", str(index), "--reranker", "none") == 2
    assert "queries.jsonl:5: malformed JSON" in capsys.readouterr().err
    assert run_cli("eval", "--dataset", str(root), "--split", "dev", "--index", str(index)) == 2
    assert "dev.tsv: missing" in capsys.readouterr().err


def test_demo_runs_and_reuses_its_index(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the demo on the tiny dataset: the bundled NFCorpus takes minutes to index
    monkeypatch.setattr(commands, "bundled_dataset_dir", lambda: dataset)
    monkeypatch.setattr(commands, "cache_home", lambda: tmp_path)
    assert run_cli("demo", "--rerank-queries", "2") == 0
    out = capsys.readouterr().out
    assert "[4/4] Evaluation" in out and "| RRF + re-ranker |" in out
    assert "the first 2 of 3 queries" in out
    built = list((tmp_path / "indexes").iterdir())
    assert len(built) == 1 and (built[0] / "manifest.json").is_file()
    stamp = (built[0] / "embeddings.npy").stat().st_mtime_ns
    assert run_cli("demo", "--reranker", "none") == 0
    assert (built[0] / "embeddings.npy").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert "re-ranker |" not in capsys.readouterr().out


def test_bundled_dataset_is_complete() -> None:
    from lrt_rerank.datasets import load_dataset

    root = commands.bundled_dataset_dir()
    assert (root / "ATTRIBUTION.md").read_text().count("CC BY-SA 4.0") >= 1
    dataset = load_dataset(root, "test")
    assert len(dataset.corpus) == 3633 and len(dataset.eval_query_ids()) == 323
    assert sum(len(judged) for judged in dataset.qrels.values()) == 12334


def test_corpus_with_empty_documents_evaluates_and_never_returns_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_dataset(tmp_path / "with-empty")
    with (root / "corpus.jsonl").open("a") as out:  # as in BEIR's Cranfield: documents with no text at all
        out.write(json.dumps({"_id": "blank1", "title": "", "text": ""}) + "\n")
        out.write(json.dumps({"_id": "blank2", "text": "  "}) + "\n")
    out_dir = tmp_path / "with-empty-index"
    assert run_cli("index", "--dataset", str(root), "--out", str(out_dir)) == 0
    assert "2 document(s) with neither title nor text" in caplog.text
    embeddings = np.load(out_dir / "embeddings.npy")
    assert embeddings.shape[0] == len(DOCS) + 2 and not embeddings[-2:].any()
    capsys.readouterr()
    assert run_cli("eval", "--dataset", str(root), "--index", str(out_dir), "--json") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["queries"] for r in records] == [3, 3, 3, 3]
    # every document comes back for a query with k larger than the corpus, except the two empty ones
    assert run_cli("search", str(out_dir), "cats and dogs and tea", "--k", "20", "--reranker", "none", "--json") == 0
    hits = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert set(hits) == set(DOCS)
