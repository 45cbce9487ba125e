"""BEIR loader: layout, line endings, graded qrels, and bad-input errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from lrt_rerank.datasets import DatasetError, load_dataset, load_qrels

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": "", "text": "Dogs bark."},
    {"_id": "d3", "text": "Birds sing."},
]
QUERIES = [
    {"_id": "q1", "text": "cat sounds"},
    {"_id": "q2", "text": "dog sounds"},
    {"_id": "q3", "text": "no judgments for me"},
    {"_id": "q4", "text": "only a zero judgment"},
]


def write_dataset(root: Path, qrels_lines: list[str], newline: str = "\n", corpus: list[dict] | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_bytes(
        newline.join(json.dumps(d) for d in (corpus or CORPUS)).encode() + newline.encode()
    )
    (root / "queries.jsonl").write_bytes(newline.join(json.dumps(q) for q in QUERIES).encode() + newline.encode())
    body = newline.join(["query-id\tcorpus-id\tscore", *qrels_lines]) + newline
    (root / "qrels" / "test.tsv").write_bytes(body.encode())
    return root


GOOD_QRELS = ["q1\td1\t2", "q1\td3\t1", "q2\td2\t1", "q4\td1\t0"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_loads_lf_and_crlf_alike(tmp_path: Path, newline: str) -> None:
    dataset = load_dataset(write_dataset(tmp_path / "ds", GOOD_QRELS, newline))
    assert set(dataset.corpus) == {"d1", "d2", "d3"}
    assert dataset.corpus["d1"].full_text == "Cats Cats purr."
    assert dataset.corpus["d2"].full_text == "Dogs bark."  # empty title adds no leading space
    assert dataset.corpus["d3"].title == ""
    assert dataset.queries["q2"] == "dog sounds"
    # graded judgments, no stray "\r" in ids or grades
    assert dataset.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}, "q4": {"d1": 0}}
    assert dataset.split == "test"


def test_eval_queries_are_those_with_a_relevant_judgment(tmp_path: Path) -> None:
    dataset = load_dataset(write_dataset(tmp_path / "ds", GOOD_QRELS))
    # q3 has no judgments, q4 only a grade-0 one: both ignored
    assert dataset.eval_query_ids() == ["q1", "q2"]


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS)
    (root / missing).unlink()
    with pytest.raises(DatasetError, match=missing.replace("/", ".")):
        load_dataset(root)


def test_missing_split_is_named(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS)
    with pytest.raises(DatasetError, match=r"qrels.dev\.tsv"):
        load_dataset(root, split="dev")


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "nope")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS)
    lines = (root / "queries.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "q3", "text": '  # truncated JSON on line 3
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"queries\.jsonl:3: malformed JSON"):
        load_dataset(root)


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, corpus=[*CORPUS, {"title": "no id"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:4: field '_id' is missing"):
        load_dataset(root)


def test_duplicate_document_id(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, corpus=[*CORPUS, {"_id": "d1", "text": "again"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:4: duplicate document id 'd1'"):
        load_dataset(root)


def test_unknown_documents_and_queries_warn_with_counts_and_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qrels = [*GOOD_QRELS, "q1\tghost1\t1", "q2\tghost2\t1", "q2\tghost1\t2", "q9\td1\t1"]
    root = write_dataset(tmp_path / "ds", qrels)
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.datasets"):
        dataset = load_dataset(root)
    assert dataset.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}, "q4": {"d1": 0}}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "skipped 4 judgment(s)" in messages[0]
    assert "2 unknown document(s)" in messages[0]
    assert "1 unknown query" in messages[0]
    assert "test.tsv" in messages[0]


def test_qrels_errors_name_line(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d2 1\n")
    with pytest.raises(DatasetError, match=r"q\.tsv:3: expected 3 tab-separated fields"):
        load_qrels(path)
    path.write_text("q1\td1\thigh\n")
    with pytest.raises(DatasetError, match=r"q\.tsv:1: score 'high' is not a number"):
        load_qrels(path)


def test_qrels_without_header_and_float_grades(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1.0\r\nq1\td2\t2\r\n\r\n")
    assert load_qrels(path) == {"q1": {"d1": 1, "d2": 2}}


def test_numeric_ids_are_strings(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", ["1\t7\t1"], corpus=[{"_id": 7, "text": "seven"}])
    (root / "queries.jsonl").write_text(json.dumps({"_id": 1, "text": "number seven"}) + "\n")
    dataset = load_dataset(root)
    assert dataset.qrels == {"1": {"7": 1}}
    assert dataset.corpus["7"].text == "seven"
