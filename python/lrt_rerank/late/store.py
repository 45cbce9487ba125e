"""Document token embeddings computed at index time and stored beside an index, memory-mapped at query time.

``<index>/late-interaction/``: ``manifest.json`` (model fingerprint, dim, dtype, counts, bytes per document),
``tokens.npy`` (every document's token rows one after the other: float16, or int8 with ``scale.npy``, one
float32 scale per dimension, value = int8 × scale), ``offsets.npy`` (int64, documents + 1) and ``keys.npy``
(each document's 16-byte text hash, :func:`text_hash`). A re-rank looks candidates
up by their text's hash, so whatever passes the text (pipeline, eval, search) finds the stored rows; a text
not stored is encoded (and counted in ``ColBERT.documents_encoded``).

Documents longer than the model's ``document_length`` are stored truncated, as the model would score them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lrt_rerank import _core
from lrt_rerank.jsonfile import read_json

STORE_DIR = "late-interaction"
MANIFEST = "manifest.json"
DTYPES = ("float16", "int8")
FORMAT_VERSION = 1
Matrix = npt.NDArray[np.float32]


class EncodedLike(Protocol):
    data: Matrix
    lengths: list[int]


class DocumentEncoder(Protocol):
    """What the store needs of a late-interaction model: its identity and its document encoder."""

    model_dir: Path
    card: dict[str, Any]

    @property
    def fingerprint(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_documents(self, texts: Sequence[str]) -> EncodedLike: ...


def text_hash(text: str) -> bytes:
    """16-byte key of a document's text (the store's and the cache's)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def quantize_int8(rows: npt.NDArray[np.floating[Any]]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric int8 per dimension: scale[d] = max |rows[:, d]| / 127."""
    scale = (np.abs(rows).max(axis=0) / 127.0).astype(np.float32) if len(rows) else np.ones(rows.shape[1], np.float32)
    scale[scale == 0] = 1.0
    return np.clip(np.rint(rows / scale), -127, 127).astype(np.int8), scale


def write_store(
    model: DocumentEncoder, texts: Iterable[str], index_dir: Path, dtype: str = "float16", batch_size: int = 64,
    progress: Any = None,
) -> dict[str, Any]:
    """Encode every text with ``model`` and write the store into ``index_dir``; returns its manifest."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    texts = list(texts)
    out = index_dir / STORE_DIR
    staged = index_dir / f".{STORE_DIR}.partial"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    chunks: list[npt.NDArray[np.float16]] = []
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        encoded = model.encode_documents(texts[start : start + batch_size])
        chunks.append(encoded.data.astype(np.float16))
        lengths.extend(encoded.lengths)
        if progress is not None:
            progress(len(lengths), len(texts))
    tokens = np.concatenate(chunks) if chunks else np.zeros((0, model.dim), np.float16)
    if dtype == "int8":
        tokens, scale = quantize_int8(tokens.astype(np.float32))
        np.save(staged / "scale.npy", scale)
    np.save(staged / "tokens.npy", tokens)
    np.save(staged / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    np.save(staged / "keys.npy", np.frombuffer(b"".join(text_hash(t) for t in texts), np.uint8).reshape(-1, 16))
    stored = sum(f.stat().st_size for f in staged.iterdir())
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_fingerprint": model.fingerprint,
        "model_dir": str(model.model_dir.resolve()),
        "dim": model.dim,
        "dtype": dtype,
        "documents": len(texts),
        "tokens": int(tokens.shape[0]),
        "bytes": stored,
        "bytes_per_document": stored / max(1, len(texts)),
        "tokens_per_document": float(np.mean(lengths)) if lengths else 0.0,
        "long_documents": f"truncated at document_length {model.card.get('document_length')}",
    }
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staged.rename(out)
    return manifest


class StoredEmbeddings:
    """A store opened for lookups: the token rows memory-mapped, the keys in a dict."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.tokens = np.load(path / "tokens.npy", mmap_mode="r")
        self.offsets = np.load(path / "offsets.npy")
        self.scale = np.load(path / "scale.npy") if manifest["dtype"] == "int8" else None
        # float16 rows go to Rust as their bits (uint16), int8 as they are; both stay memory-mapped
        self._rows_view = self.tokens.view(np.uint16) if self.tokens.dtype == np.float16 else self.tokens
        keys = np.load(path / "keys.npy")
        self._rows = {bytes(k): i for i, k in enumerate(keys)}
        if len(self.offsets) != len(keys) + 1 or int(self.offsets[-1]) != self.tokens.shape[0]:
            raise _core.ModelError(f"{path / 'offsets.npy'}: does not fit {path / 'tokens.npy'} and {path / 'keys.npy'}")

    @classmethod
    def open(cls, index_dir: Path, model: DocumentEncoder | None = None) -> StoredEmbeddings:
        """The store of ``index_dir``; with ``model``, a ModelError unless it was made by that model."""
        path = index_dir / STORE_DIR
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise _core.ModelError(f"{manifest_path}: not found (build the index with --late-interaction MODEL_DIR)")
        manifest = read_json(manifest_path, "not valid JSON")
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION or manifest.get("dtype") not in DTYPES:
            raise _core.ModelError(f"{manifest_path}: not a late-interaction store of format {FORMAT_VERSION}")
        if model is not None and manifest.get("model_fingerprint") != model.fingerprint:
            raise _core.ModelError(
                f"{manifest_path}: made by model {manifest.get('model_dir')} ({manifest.get('model_fingerprint')}), "
                f"not by {model.model_dir} ({model.fingerprint}): rebuild the index with --late-interaction {model.model_dir}"
            )
        return cls(path, manifest)

    def __len__(self) -> int:
        return len(self._rows)

    def spans(self, keys: Sequence[bytes]) -> list[tuple[int, int] | None]:
        """Each text hash's stored rows as (start, end) into ``tokens`` (None where the text is not stored)."""
        rows = [self._rows.get(key) for key in keys]
        return [None if r is None else (int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]

    def maxsim(self, query: Matrix, spans: Sequence[tuple[int, int]], threads: int = 1) -> npt.NDArray[np.float32]:
        """MaxSim of ``query`` against the stored documents at ``spans``, scored from the stored float16 or
        int8 rows in Rust (no float32 copy of the rows in Python), ``threads`` threads."""
        return _core.maxsim_stored(query, self._rows_view, list(spans), scale=self.scale, threads=threads)

    def lookup(self, keys: Sequence[bytes]) -> list[Matrix | None]:
        """The float32 token matrix of each text hash (None where the text is not stored)."""
        out: list[Matrix | None] = []
        for key in keys:
            row = self._rows.get(key)
            if row is None:
                out.append(None)
                continue
            block = np.asarray(self.tokens[self.offsets[row] : self.offsets[row + 1]], dtype=np.float32)
            out.append(block * self.scale if self.scale is not None else block)
        return out
