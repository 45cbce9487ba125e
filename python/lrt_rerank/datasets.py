"""Loading retrieval test collections in BEIR layout.

A dataset folder holds::

    corpus.jsonl        one {"_id", "title"?, "text"?} object per line
    queries.jsonl       one {"_id", "text"} object per line
    qrels/<split>.tsv   header "query-id<TAB>corpus-id<TAB>score" (optional), then one judgment per line

Scores are integers; a score > 0 means relevant and a higher score means more relevant (graded
judgments). Real corpora are not always clean; each case is handled as follows, and every
message names the file (and the line, where there is one):

=============================  ===========================================================
what                           what happens
=============================  ===========================================================
CRLF line endings              accepted (Windows files); a file *mixing* LF and CRLF gets
                               one warning, since it was probably pasted together
UTF-8 byte-order mark          accepted, with one warning per file
UTF-16/32 (a BOM says so),     :class:`DatasetError`: convert the file to UTF-8
other non-UTF-8 bytes
empty document (no title,      kept and indexed, so ids and judgments stay valid; it is
no text)                       never retrieved. One warning counts them (first lines named)
duplicate id, same record      the repeat is dropped; one warning counts them
duplicate id, other content    :class:`DatasetError` naming both lines: which record is
                               meant cannot be guessed
judgment naming an unknown     skipped; one warning counts them and names the first lines
document or query
repeated judgment              the last grade counts
malformed line                 :class:`DatasetError` naming the line and the field
=============================  ===========================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lrt_rerank.inputs import lone_surrogate_at

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
    def is_empty(self) -> bool:
        """Neither title nor text holds anything but whitespace: nothing to match or embed."""
        return not self.title.strip() and not self.text.strip()

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


_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its LF/CRLF ending), skipping blank lines."""
    with path.open("rb") as probe:
        head = probe.read(4)
    for bom, encoding in _OTHER_BOMS.items():
        if head.startswith(bom):
            raise DatasetError(f"{path}: {encoding} text (byte-order mark); convert it to UTF-8")
    if head.startswith(_UTF8_BOM):
        logger.warning("%s: starts with a UTF-8 byte-order mark; ignored", path)
    endings = {"\r\n": 0, "\n": 0}
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.endswith("\r\n"):
                    endings["\r\n"] += 1
                elif raw.endswith("\n"):
                    endings["\n"] += 1
                line = raw.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from exc
    if endings["\r\n"] and endings["\n"]:
        logger.warning(
            "%s: mixes line endings (%d CRLF, %d LF lines); read both alike", path, endings["\r\n"], endings["\n"]
        )


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


_NAMED_LINES = 5
"""How many line numbers a counting warning names."""


def _lines_named(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:_NAMED_LINES])
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{', ...' if len(numbers) > _NAMED_LINES else ''}"


class _Repeats:
    """Duplicate ids: identical repeats are dropped and counted; a different record is an error."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self.first_line: dict[str, int] = {}
        self.repeated: list[int] = []

    def is_repeat(self, item_id: str, number: int, same_as_first: bool) -> bool:
        first = self.first_line.get(item_id)
        if first is None:
            self.first_line[item_id] = number
            return False
        if not same_as_first:
            raise DatasetError(
                f"{self.path}:{number}: duplicate {self.what} id {item_id!r} with other content than line {first}"
            )
        self.repeated.append(number)
        return True

    def warn(self) -> None:
        if self.repeated:
            logger.warning(
                "%s: dropped %d exact repeat(s) of a %s already read (%s)",
                self.path,
                len(self.repeated),
                self.what,
                _lines_named(self.repeated),
            )


def load_corpus(path: Path) -> dict[str, Document]:
    """Read ``corpus.jsonl``: ``_id`` required, ``title`` and ``text`` optional; other fields ignored.

    A document with neither title nor text is kept (it is indexed but never retrieved); one
    warning counts such documents."""
    _require_file(path)
    corpus: dict[str, Document] = {}
    repeats = _Repeats(path, "document")
    empty: list[int] = []
    for number, record in _read_jsonl(path, ("_id",)):
        doc_id = str(record["_id"])
        document = Document(
            doc_id, _optional_str(path, number, record, "title"), _optional_str(path, number, record, "text")
        )
        if repeats.is_repeat(doc_id, number, corpus.get(doc_id) == document):
            continue
        if document.is_empty:
            empty.append(number)
        corpus[doc_id] = document
    if not corpus:
        raise DatasetError(f"{path}: no documents")
    repeats.warn()
    if empty:
        logger.warning(
            "%s: %d document(s) with neither title nor text (%s): indexed, never retrieved",
            path,
            len(empty),
            _lines_named(empty),
        )
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    """Read ``queries.jsonl``: ``_id`` and ``text`` required; other fields ignored."""
    _require_file(path)
    queries: dict[str, str] = {}
    repeats = _Repeats(path, "query")
    for number, record in _read_jsonl(path, ("_id", "text")):
        query_id = str(record["_id"])
        text = str(record["text"])
        if not repeats.is_repeat(query_id, number, queries.get(query_id) == text):
            queries[query_id] = text
    repeats.warn()
    return queries


def load_qrels(path: Path) -> Qrels:
    """Read a qrels TSV (header line optional). A repeated (query, document) pair keeps its last grade."""
    return _read_qrels(path)[0]


def _read_qrels(path: Path) -> tuple[Qrels, dict[tuple[str, str], int]]:
    """The judgments and, for each (query, document), the line it was read from."""
    _require_file(path)
    qrels: Qrels = {}
    lines: dict[tuple[str, str], int] = {}
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
        lines[(query_id, doc_id)] = number
    return qrels, lines


def drop_unknown(
    qrels: Qrels,
    doc_ids: set[str] | dict[str, Document],
    query_ids: set[str] | dict[str, str],
    source: Path,
    lines: dict[tuple[str, str], int] | None = None,
) -> Qrels:
    """Remove judgments naming documents or queries that do not exist, warning once with the counts
    (and the first skipped lines, when ``lines`` maps each judgment to its line)."""
    kept: Qrels = {}
    unknown_docs: set[str] = set()
    unknown_queries: set[str] = set()
    skipped: list[tuple[str, str]] = []
    for query_id, judged in qrels.items():
        for doc_id, grade in judged.items():
            if query_id not in query_ids:
                unknown_queries.add(query_id)
            elif doc_id not in doc_ids:
                unknown_docs.add(doc_id)
            else:
                kept.setdefault(query_id, {})[doc_id] = grade
                continue
            skipped.append((query_id, doc_id))
    if skipped:
        where = f" ({_lines_named(sorted(lines[pair] for pair in skipped))})" if lines is not None else ""
        logger.warning(
            "%s: skipped %d judgment(s) naming %d unknown document(s) and %d unknown quer%s%s",
            source,
            len(skipped),
            len(unknown_docs),
            len(unknown_queries),
            "y" if len(unknown_queries) == 1 else "ies",
            where,
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
    judged, lines = _read_qrels(qrels_path)
    qrels = drop_unknown(judged, corpus, queries, qrels_path, lines)
    return Dataset(path=root, split=split, corpus=corpus, queries=queries, qrels=qrels)
