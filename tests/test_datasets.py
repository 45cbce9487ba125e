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


# ------------------------------------------------------------------ corpora as they come


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_empty_documents_are_kept_and_counted_in_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = [*CORPUS, {"_id": "e1", "title": "", "text": ""}, {"_id": "e2", "text": " \t"}, {"_id": "e3"}]
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, corpus=corpus)
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.datasets"):
        dataset = load_dataset(root)
    assert {"e1", "e2", "e3"} <= set(dataset.corpus)
    assert [d.is_empty for d in dataset.corpus.values()] == [False, False, False, True, True, True]
    messages = _warnings(caplog)
    assert len(messages) == 1
    assert "corpus.jsonl: 3 document(s) with neither title nor text (lines 4, 5, 6)" in messages[0]


def test_exact_duplicate_is_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, corpus=[*CORPUS, dict(CORPUS[1]), dict(CORPUS[1])])
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.datasets"):
        dataset = load_dataset(root)
    assert list(dataset.corpus) == ["d1", "d2", "d3"]
    (message,) = _warnings(caplog)
    assert "corpus.jsonl: dropped 2 exact repeat(s) of a document already read (lines 4, 5)" in message


def test_duplicate_with_other_content_names_both_lines(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, corpus=[*CORPUS, {"_id": "d2", "title": "", "text": "Dogs growl."}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:4: duplicate document id 'd2' with other content than line 2"):
        load_dataset(root)
    root = write_dataset(tmp_path / "ds2", GOOD_QRELS)
    with (root / "queries.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "q1", "text": "kitten noises"}) + "\n")
    with pytest.raises(DatasetError, match=r"queries\.jsonl:5: duplicate query id 'q1' with other content than line 1"):
        load_dataset(root)


def test_unknown_judgments_name_their_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_dataset(tmp_path / "ds", [*GOOD_QRELS, "q1\tghost\t1", "q9\td1\t1"])
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.datasets"):
        load_dataset(root)
    (message,) = _warnings(caplog)
    # the header is line 1, GOOD_QRELS lines 2-5
    assert message.endswith("(lines 6, 7)")


def test_utf8_byte_order_mark_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, newline="\r\n")
    for name in ("corpus.jsonl", "qrels/test.tsv"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.datasets"):
        dataset = load_dataset(root)
    assert set(dataset.corpus) == {"d1", "d2", "d3"}  # the first id is "d1", not "\ufeffd1"
    assert dataset.qrels["q1"] == {"d1": 2, "d3": 1}  # the header is still recognised
    messages = _warnings(caplog)
    assert len(messages) == 2
    assert all("UTF-8 byte-order mark" in m for m in messages)


def test_utf16_is_refused_with_the_file_named(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS)
    path = root / "queries.jsonl"
    path.write_bytes(path.read_text().encode("utf-16"))
    with pytest.raises(DatasetError, match=r"queries\.jsonl: UTF-16 text \(byte-order mark\); convert it to UTF-8"):
        load_dataset(root)


def test_mixed_line_endings_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_dataset(tmp_path / "ds", GOOD_QRELS, newline="\r\n")
    with (root / "corpus.jsonl").open("ab") as handle:
        handle.write(json.dumps({"_id": "d4", "text": "Fish swim."}).encode() + b"\n")
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.datasets"):
        dataset = load_dataset(root)
    assert dataset.corpus["d4"].text == "Fish swim."
    (message,) = _warnings(caplog)
    assert "corpus.jsonl: mixes line endings (3 CRLF, 1 LF lines)" in message
