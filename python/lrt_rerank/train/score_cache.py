"""The on-disk cache of teacher scores: one SQLite file, one row per (teacher, query, passage).

A row is keyed by the teacher's sha256 (its ``model.onnx``, or ``model.safetensors`` for a training
checkpoint), the max length it scores at, and the sha256 of the query text and of the passage text,
so a score is reused whatever list, split or run asks for the same pair again, and a changed
teacher, tokenizer length or text never reads a stale one. Scores are committed in small batches
as they are made, so an interrupted distillation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

CACHE_FILE = "teacher-scores.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    teacher TEXT NOT NULL,
    max_length INTEGER NOT NULL,
    query TEXT NOT NULL,
    passage TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (teacher, max_length, query, passage)
) WITHOUT ROWID
"""


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ScoreCache:
    """Teacher scores of one teacher (``sha256`` at ``max_length``) in ``directory/teacher-scores.sqlite``."""

    def __init__(self, directory: Path, sha256: str, max_length: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CACHE_FILE
        self.teacher = sha256
        self.max_length = max_length
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a teacher-score cache ({exc}); delete it to start a new one") from exc

    def get(self, query: str, passages: Sequence[str]) -> list[float | None]:
        """Cached scores of ``query`` with each passage, ``None`` where the pair was never scored."""
        keys = [text_key(p) for p in passages]
        found: dict[str, float] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._db.execute(
                f"SELECT passage, score FROM scores WHERE teacher = ? AND max_length = ? AND query = ? AND passage IN ({','.join('?' * len(chunk))})",
                (self.teacher, self.max_length, text_key(query), *chunk),
            )
            found.update(rows.fetchall())
        return [found.get(k) for k in keys]

    def put(self, query: str, pairs: Iterable[tuple[str, float]]) -> None:
        """Store ``(passage, score)`` pairs of ``query`` and commit."""
        q = text_key(query)
        self._db.executemany(
            "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
            [(self.teacher, self.max_length, q, text_key(p), float(s)) for p, s in pairs],
        )
        self._db.commit()

    def count(self) -> int:
        """Rows of this teacher (at this max length)."""
        row = self._db.execute("SELECT COUNT(*) FROM scores WHERE teacher = ? AND max_length = ?", (self.teacher, self.max_length)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
