"""Loading retrieval test collections in BEIR layout.

A dataset folder holds::

    corpus.jsonl        one {"_id", "title"?, "text"} object per line
    queries.jsonl       one {"_id", "text"} object per line
    qrels/<split>.tsv   header "query-id<TAB>corpus-id<TAB>score", then one judgment per line

Lines may end in LF or CRLF. Scores are integers; a score > 0 means relevant and a
higher score means more relevant (graded judgments). Problems with the files raise
:class:`DatasetError` naming the file (and line, where there is one); judgments naming
documents or queries that do not exist are skipped with one warning carrying the count.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lrt_rerank.text import lone_surrogate_at

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
"""query id -> {document id -> relevance grade}."""


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and body joined, the text both the first stage and the re-ranker see."""
        if self.title and self.text:
            return f"{self.title} {self.text}"
        return self.title or self.text


@dataclass
class Dataset:
    path: Path
    split: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels

    @property
    def name(self) -> str:
        return self.path.name

    def eval_query_ids(self) -> list[str]:
        """Queries of the split with at least one relevant (score > 0) judgment, in qrels order."""
        return [qid for qid, judged in self.qrels.items() if any(g > 0 for g in judged.values())]


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (a BEIR dataset needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv)")
    return path


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its LF/CRLF ending), skipping blank lines."""
    try:
        with path.open("r", encoding="utf-8", newline="") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from exc


def _read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in _read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
        except RecursionError:
            raise DatasetError(f"{path}:{number}: malformed JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        for field in required:
            value = record.get(field)
            if field == "_id" and isinstance(value, int) and not isinstance(value, bool):
                record[field] = str(value)
            elif not isinstance(value, str):
                problem = "missing" if value is None else f"not a string ({type(value).__name__})"
                raise DatasetError(f"{path}:{number}: field {field!r} is {problem}")
            else:
                _require_unicode(path, number, field, value)
        yield number, record


def _require_unicode(path: Path, number: int, field: str, value: str) -> None:
    """Refuse lone surrogates (JSON can escape them) here, not when the text reaches the tokenizer."""
    at = lone_surrogate_at(value)
    if at is not None:
        raise DatasetError(
            f"{path}:{number}: field {field!r} holds a lone surrogate ({value[at]!r}), not valid Unicode"
        )


def _optional_str(path: Path, number: int, record: dict[str, object], field: str) -> str:
    value = record.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{path}:{number}: field {field!r} is not a string ({type(value).__name__})")
    _require_unicode(path, number, field, value)
    return value


def load_corpus(path: Path) -> dict[str, Document]:
    """Read ``corpus.jsonl``: ``_id`` and ``text`` required, ``title`` optional; other fields ignored."""
    _require_file(path)
    corpus: dict[str, Document] = {}
    for number, record in _read_jsonl(path, ("_id",)):
        doc_id = str(record["_id"])
        if doc_id in corpus:
            raise DatasetError(f"{path}:{number}: duplicate document id {doc_id!r}")
        title = _optional_str(path, number, record, "title")
        text = _optional_str(path, number, record, "text")
        if not title.strip() and not text.strip():
            raise DatasetError(f"{path}:{number}: document {doc_id!r} has neither 'title' nor 'text'")
        corpus[doc_id] = Document(doc_id, title, text)
    if not corpus:
        raise DatasetError(f"{path}: no documents")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    """Read ``queries.jsonl``: ``_id`` and ``text`` required; other fields ignored."""
    _require_file(path)
    queries: dict[str, str] = {}
    for number, record in _read_jsonl(path, ("_id", "text")):
        query_id = str(record["_id"])
        if query_id in queries:
            raise DatasetError(f"{path}:{number}: duplicate query id {query_id!r}")
        queries[query_id] = str(record["text"])
    return queries


def load_qrels(path: Path) -> Qrels:
    """Read a qrels TSV (header line optional). A repeated (query, document) pair keeps its last grade."""
    _require_file(path)
    qrels: Qrels = {}
    for number, line in _read_lines(path):
        fields = line.split("\t")
        if number == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(fields) != 3:
            raise DatasetError(
                f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}"
            )
        query_id, doc_id, score_text = (field.strip() for field in fields)
        try:
            grade = int(score_text)
        except ValueError:
            try:
                as_float = float(score_text)
            except ValueError:
                raise DatasetError(f"{path}:{number}: score {score_text!r} is not a number") from None
            if not as_float.is_integer():
                raise DatasetError(f"{path}:{number}: score {score_text!r} is not an integer grade") from None
            grade = int(as_float)
        if not query_id or not doc_id:
            raise DatasetError(f"{path}:{number}: empty query-id or corpus-id")
        qrels.setdefault(query_id, {})[doc_id] = grade
    return qrels


def drop_unknown(
    qrels: Qrels, doc_ids: set[str] | dict[str, Document], query_ids: set[str] | dict[str, str], source: Path
) -> Qrels:
    """Remove judgments naming documents or queries that do not exist, warning once with the counts."""
    kept: Qrels = {}
    unknown_docs: set[str] = set()
    unknown_queries: set[str] = set()
    skipped_lines = 0
    for query_id, judged in qrels.items():
        if query_id not in query_ids:
            unknown_queries.add(query_id)
            skipped_lines += len(judged)
            continue
        for doc_id, grade in judged.items():
            if doc_id in doc_ids:
                kept.setdefault(query_id, {})[doc_id] = grade
            else:
                unknown_docs.add(doc_id)
                skipped_lines += 1
    if unknown_docs or unknown_queries:
        logger.warning(
            "%s: skipped %d judgment(s) naming %d unknown document(s) and %d unknown quer%s",
            source,
            skipped_lines,
            len(unknown_docs),
            len(unknown_queries),
            "y" if len(unknown_queries) == 1 else "ies",
        )
    return kept


def load_dataset(path: str | Path, split: str = "test") -> Dataset:
    """Load a BEIR-layout folder: the whole corpus, all queries, and the judgments of ``split``."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory (expected a BEIR dataset folder)")
    qrels_path = _require_file(root / "qrels" / f"{split}.tsv")
    corpus = load_corpus(root / "corpus.jsonl")
    queries = load_queries(root / "queries.jsonl")
    qrels = drop_unknown(load_qrels(qrels_path), corpus, queries, qrels_path)
    return Dataset(path=root, split=split, corpus=corpus, queries=queries, qrels=qrels)
