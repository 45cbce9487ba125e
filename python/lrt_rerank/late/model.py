"""``ColBERT``: a late-interaction re-ranker (``Reranker`` of :mod:`lrt_rerank.rerank`) over the Rust core.

``score(query, passages)`` encodes the query (tokens L2-normalised, [MASK] expansion as the card says),
takes each passage's token matrix from the first source that has it (the embeddings stored with an
index, then the document cache), encodes the rest (and puts them in the cache), and returns MaxSim
scores (float32, input order). Documents longer than the card's ``document_length`` are truncated.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lrt_rerank import _core
from lrt_rerank.inputs import check_positive, check_text, check_texts
from lrt_rerank.late.store import text_hash
from lrt_rerank.models.store import (
    CARD,
    LATE_INTERACTION,
    MODEL,
    ModelCard,
    file_sha256,
    open_model_dir,
)
from lrt_rerank.backends import load_with_backend
from lrt_rerank.runtime import ensure_runtime

if TYPE_CHECKING:
    from lrt_rerank.late.cache import DocumentCache
    from lrt_rerank.late.store import StoredEmbeddings

__all__ = ["ColBERT", "EncodedDocuments", "open_late_interaction_dir", "text_hash"]

PathLike = str | os.PathLike[str]
Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EncodedDocuments:
    """Documents' token matrices stacked in one float32 (tokens, dim) array, with each one's token count."""

    data: Matrix
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.lengths)

    def matrices(self) -> list[Matrix]:
        ends = np.cumsum(self.lengths)
        return [self.data[e - n : e] for e, n in zip(ends, self.lengths)]

    @classmethod
    def stack(cls, matrices: Sequence[Matrix], dim: int) -> EncodedDocuments:
        data = np.concatenate(matrices).astype(np.float32, copy=False) if matrices else np.zeros((0, dim), np.float32)
        return cls(np.ascontiguousarray(data), [int(m.shape[0]) for m in matrices])


def _card_int(card: dict[str, Any], key: str, path: Path, low: int = 0) -> int:
    value = card.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise _core.ModelError(f"{path}: field {key!r} must be an integer >= {low}, got {value!r}")
    return value


def _card_flag(card: dict[str, Any], key: str, path: Path) -> bool:
    value = card.get(key)
    if not isinstance(value, bool):
        raise _core.ModelError(f"{path}: field {key!r} must be true or false, got {value!r}")
    return value


def _marker(card: dict[str, Any], key: str, path: Path) -> int | None:
    return None if card.get(key) is None else _card_int(card, key, path)


def open_late_interaction_dir(model_dir: PathLike) -> tuple[Path, ModelCard]:
    """A late-interaction model directory (a ColBERT snapshot is imported once first) and its card."""
    from lrt_rerank.models.importers.colbert import (
        imported_colbert_dir,
        is_colbert_snapshot,
    )

    ensure_runtime()
    path = Path(model_dir)
    if is_colbert_snapshot(path):
        path = imported_colbert_dir(path)
    return path, open_model_dir(path, LATE_INTERACTION, f"{LATE_INTERACTION} (ColBERT) model")


class ColBERT:
    """Scores passages by MaxSim of L2-normalised token embeddings (ColBERT / PyLate).

    ``documents_encoded`` counts the passages run through the model since load (stored and cached
    ones are not), so a caller can check that a re-rank over stored embeddings encoded none.
    """

    def __init__(self, core: _core.ColbertCore, model_dir: Path, card: ModelCard) -> None:
        self._core = core
        self.model_dir = model_dir
        self.card: dict[str, Any] = card.data
        self.sha256 = file_sha256(model_dir / MODEL)
        self.store: StoredEmbeddings | None = None
        self.document_cache: DocumentCache | None = None
        self.documents_encoded = 0

    @classmethod
    def load(
        cls,
        model_dir: PathLike,
        threads: int | None = None,
        batch_size: int | None = None,
        token_budget: int | None = None,
        document_cache: DocumentCache | None = None,
        backend: str = "ort",
        precision: str | None = None,
    ) -> ColBERT:
        """Load a late-interaction model directory, or import a PyLate / colbert-ai snapshot folder first.
        ``backend`` and ``precision``: as for :meth:`lrt_rerank.CrossEncoder.load`."""
        check_positive(threads=threads, batch_size=batch_size, token_budget=token_budget)
        path, card = open_late_interaction_dir(model_dir)
        c, where = card.data, path / CARD
        core = load_with_backend(
            _core.ColbertCore,
            path,
            c,
            _card_int(c, "query_length", where, 5),
            _card_int(c, "document_length", where, 5),
            _card_int(c, "mask_id", where),
            query_marker=_marker(c, "query_marker_id", where),
            document_marker=_marker(c, "document_marker_id", where),
            query_expansion=_card_flag(c, "query_expansion", where),
            attend_expansion=_card_flag(c, "attend_expansion", where),
            skiplist=[int(i) for i in c.get("skiplist_ids", [])],
            threads=threads,
            batch_size=batch_size or 32,
            token_budget=token_budget,
            backend=backend,
            precision=precision,
        )
        model = cls(core, path, card)
        model.document_cache = document_cache
        return model

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.model_dir.name))

    @property
    def max_length(self) -> int:
        """Tokens of a document the model reads (the card's ``document_length``; longer ones are truncated)."""
        return int(self.card["document_length"])

    @property
    def dim(self) -> int:
        return self._core.dim

    @property
    def threads(self) -> int:
        """Threads of the model's sessions; MaxSim splits a re-rank's documents over as many."""
        return int(self._core.threads)

    @property
    def fingerprint(self) -> str:
        """Keys cached scores and document embeddings: the sha256 of model.onnx and the encoding settings."""
        keys = ("query_length", "document_length", "query_expansion", "attend_expansion", "skiplist_ids")
        settings = "|".join(f"{k}={self.card.get(k)}" for k in keys)
        return f"{self.sha256}:colbert:{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    def encode_query(self, query: str) -> Matrix:
        """The query's token matrix (query_length rows with expansion), float32, rows L2-normalised."""
        # stripped, as sentence-transformers' tokenize does before PyLate sees the text
        data, _ = self._core.encode_queries([check_text("query", query).strip()])
        return data

    def encode_documents(self, passages: Sequence[str]) -> EncodedDocuments:
        """Each passage's token matrix (padding and skiplist tokens removed), always through the model."""
        texts = check_texts("passages", passages)
        data, lengths = self._core.encode_documents([t.strip() for t in texts])
        self.documents_encoded += len(texts)
        return EncodedDocuments(data, list(lengths))

    def score_encoded(self, query: str | Matrix, encoded: EncodedDocuments | Sequence[Matrix]) -> npt.NDArray[np.float32]:
        """MaxSim of the query (text or its matrix) against already encoded documents, in their order."""
        q = self.encode_query(query) if isinstance(query, str) else np.ascontiguousarray(query, dtype=np.float32)
        docs = encoded if isinstance(encoded, EncodedDocuments) else EncodedDocuments.stack(list(encoded), self.dim)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"the query matrix must be (tokens, {self.dim}), got {q.shape}")
        return _core.maxsim(q, np.ascontiguousarray(docs.data, dtype=np.float32), docs.lengths, threads=self.threads)

    def document_matrices(self, passages: Sequence[str]) -> list[Matrix]:
        """Each passage's token matrix from the store, the cache, or (for the rest) the model."""
        texts = check_texts("passages", passages)
        keys = [text_hash(t) for t in texts]
        found: list[Matrix | None] = [None] * len(texts)
        if self.store is not None:
            found = self.store.lookup(keys)
        if self.document_cache is not None:
            missing = [i for i, m in enumerate(found) if m is None]
            for i, m in zip(missing, self.document_cache.get_many(self.fingerprint, [keys[i] for i in missing])):
                found[i] = m
        todo = [i for i, m in enumerate(found) if m is None]
        if todo:
            fresh = self.encode_documents([texts[i] for i in todo]).matrices()
            for i, m in zip(todo, fresh):
                found[i] = m
            if self.document_cache is not None:
                self.document_cache.put_many(self.fingerprint, [keys[i] for i in todo], fresh)
        return [m for m in found if m is not None]

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        """MaxSim scores (float32), one per passage, in input order.

        Passages in the index store are scored from their stored rows in Rust; the rest as
        :meth:`document_matrices` finds them (cache, then the model)."""
        texts = check_texts("passages", passages)
        q = self.encode_query(query)
        scores = np.zeros(len(texts), np.float32)
        todo = list(range(len(texts)))
        if self.store is not None:
            spans = self.store.spans([text_hash(t) for t in texts])
            stored = [i for i, s in enumerate(spans) if s is not None]
            if stored:
                scores[stored] = self.store.maxsim(q, [s for s in spans if s is not None], self.threads)
            todo = [i for i, s in enumerate(spans) if s is None]
        if todo:
            matrices = self.document_matrices([texts[i] for i in todo])
            scores[todo] = self.score_encoded(q, EncodedDocuments.stack(matrices, self.dim))
        return scores

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None) -> list[tuple[int, float]]:
        """(index, score) pairs, score descending, ties by index."""
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        scores = self.score(query, passages)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [(i, float(scores[i])) for i in order[:top_k]]

    def query_ids(self, queries: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(ids, attention mask) of each query as fed to the model (for parity checks)."""
        return self._core.query_ids([q.strip() for q in check_texts("queries", queries)])

    def document_ids(self, passages: Sequence[str]) -> list[list[int]]:
        return self._core.document_ids([p.strip() for p in check_texts("passages", passages)])

    def __repr__(self) -> str:
        return f"ColBERT({self.model_dir}, dim={self.dim})"
