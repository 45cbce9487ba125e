"""Late interaction through the CLI: `models import` of PyLate and colbert-ai snapshots, and `index
--late-interaction` then `eval` / `search` with that re-ranker reading the stored embeddings (no document
encoded at query time), on a tiny BEIR folder cut from SciFact and the tiny random ColBERTs of
tests/test_colbert.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrt_rerank.cli import main
from lrt_rerank.late import ColBERT
from lrt_rerank.models.importers.colbert import import_colbert
from test_colbert import DOCUMENTS, QUERY, assert_close, imported_stanford_colbert, pylate_colbert, stanford_snapshot
from tiny_beir import make_tiny_scifact

pytestmark = pytest.mark.train


def test_models_import_recognises_a_pylate_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot, ref = pylate_colbert(tmp_path)
    out = tmp_path / "imported"
    assert main(["models", "import", str(snapshot), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    card = json.loads((out / "card.json").read_text())
    assert (card["kind"], card["layout"], card["query_length"], card["document_length"]) == ("late-interaction", "pylate", 16, 24)
    assert_close(ColBERT.load(out).score(QUERY, DOCUMENTS), ref["scores"])


def test_models_import_recognises_a_colbert_ai_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot, _, _ = stanford_snapshot(tmp_path)
    out = tmp_path / "imported"
    assert main(["models", "import", str(snapshot), "--out", str(out)]) == 0
    assert json.loads((out / "card.json").read_text())["layout"] == "colbert-ai"
    same = import_colbert(snapshot, tmp_path / "direct")
    np.testing.assert_array_equal(ColBERT.load(out).score(QUERY, DOCUMENTS), ColBERT.load(same).score(QUERY, DOCUMENTS))
    # options of cross-encoder / bi-encoder imports are refused by name, nothing written
    for flags in (["--int8"], ["--kind", "cross-encoder"], ["--max-length", "64"]):
        target = tmp_path / f"refused{len(flags)}{flags[0]}"
        assert main(["models", "import", str(snapshot), "--out", str(target), *flags]) == 1
        err = capsys.readouterr().err
        assert f"{snapshot}: a ColBERT snapshot" in err and f"{flags[0]} do not apply" in err
        assert not target.exists()


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return imported_stanford_colbert(tmp_path_factory.mktemp("colbert-cli"))


@pytest.fixture(scope="module")
def beir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_scifact(shared_data / "scifact", tmp_path_factory.mktemp("beir") / "tiny", train=2, dev=2, test=4, filler=16)


def stderr_line(err: str) -> str:
    (line,) = [x for x in err.splitlines() if x.startswith("late interaction:")]
    return line


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_index_then_eval_and_search_read_the_stored_embeddings(
    dtype: str, beir: Path, colbert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx = tmp_path / "idx"
    argv = ["index", "--dataset", str(beir), "--out", str(idx), "--late-interaction", str(colbert_dir), "--late-dtype", dtype]
    assert main(argv) == 0
    assert f"({dtype}, " in capsys.readouterr().out
    manifest = json.loads((idx / "late-interaction" / "manifest.json").read_text())
    documents = sum(1 for _ in (beir / "corpus.jsonl").open())
    assert (manifest["dtype"], manifest["documents"]) == (dtype, documents)

    assert main(["eval", "--dataset", str(beir), "--index", str(idx), "--reranker", str(colbert_dir), "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    reranked = [r for r in rows if r["rerank_p50_ms"] > 0]
    assert reranked and all(r["queries"] == 4 for r in reranked), rows  # the re-ranked system is reported
    assert stderr_line(captured.err) == (
        f"late interaction: 0 documents encoded at query time (the stored embeddings of {idx / 'late-interaction'})"
    )

    query = json.loads((beir / "queries.jsonl").read_text().splitlines()[0])["text"]
    assert main(["search", str(idx), query, "--reranker", str(colbert_dir), "--json"]) == 0
    captured = capsys.readouterr()
    hits = [json.loads(line) for line in captured.out.splitlines()]
    assert hits and all(h["reranked"] for h in hits)
    assert stderr_line(captured.err).startswith("late interaction: 0 documents encoded at query time")


def test_without_a_store_the_candidates_are_encoded(beir: Path, colbert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "plain"
    assert main(["index", "--dataset", str(beir), "--out", str(idx)]) == 0
    query = json.loads((beir / "queries.jsonl").read_text().splitlines()[0])["text"]
    assert main(["search", str(idx), query, "--reranker", str(colbert_dir), "--rerank-depth", "7", "--json"]) == 0
    line = stderr_line(capsys.readouterr().err)
    assert line == "late interaction: 7 documents encoded at query time (no stored embeddings)"
