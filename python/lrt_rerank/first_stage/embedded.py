"""In-process first stage: BM25 (bm25s) + exact dense search (BiEncoder) + RRF (Rust core).

An index is a directory::

    manifest.json     format name and version, document count, BM25 settings (with its analyzer,
                      :mod:`~lrt_rerank.first_stage.analyzer`) and bi-encoder settings
    bm25/             the bm25s index (``bm25s.BM25.save``)
    embeddings.npy    float32 (n_docs, dim), L2-normalised rows, in document order; an empty
                      document (no title, no text) has a zero row and is never retrieved
    embeddings-NAME.npy  the same for each further bi-encoder (``dense_extra`` in the manifest),
                      searched as the system ``dense:NAME``
    docs.jsonl        the document store: {"_id", "title", "text"} per line, in document order

``manifest.json`` is written last, so a directory whose build was interrupted has none and is
refused. An index written by another format version is refused with a clear error.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from lrt_rerank.datasets import Document
from lrt_rerank.first_stage.analyzer import DEFAULT_STEMMER, Analyzer
from lrt_rerank.first_stage.base import EXTRA_DENSE, FUSION_DEPTH, RRF_K, Candidate, FirstStage, System, wants_search
from lrt_rerank.models.resolve import default_model_dir
from lrt_rerank.models.store import file_sha256

# bm25s pins its logger at DEBUG on import; let it follow the application's logging level instead.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

FORMAT = "lrt-rerank-embedded-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BM25_DIR = "bm25"
EMBEDDINGS = "embeddings.npy"
DOCS = "docs.jsonl"


class IndexFormatError(RuntimeError):
    """The index directory is missing, incomplete or from an incompatible version."""


class EmbeddedFirstStage(FirstStage):
    """BM25 + dense + RRF over an index directory, all in this process."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        documents: list[Document],
        retriever: bm25s.BM25,
        embeddings: npt.NDArray[np.float32],
        encoder: Any,
        extra: Sequence[tuple[str, npt.NDArray[np.float32], Any]] = (),
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.documents = documents
        self._position = {document.id: position for position, document in enumerate(documents)}
        self._retriever = retriever
        self._embeddings = embeddings
        #: documents with nothing to embed (zero rows): left out of dense results
        self._unembedded = ~np.any(embeddings, axis=1)
        self._encoder = encoder
        #: further bi-encoders by system name ``dense:NAME``: (embeddings, encoder)
        self._extra = {f"{EXTRA_DENSE}{name}": (rows, enc) for name, rows, enc in extra}
        self.dense_signals = ("dense", *self._extra)
        self.analyzer = Analyzer.from_record(manifest["bm25"], str(path / MANIFEST))

    # ----------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        out_dir: str | Path,
        model_dir: str | Path | None = None,
        encoder: Any = None,
        batch_size: int = 64,
        progress: bool = True,
        overwrite: bool = False,
        stemmer: str = DEFAULT_STEMMER,
        known_embeddings: Mapping[str, npt.NDArray[np.float32]] | None = None,
        extra_model_dirs: Sequence[str | Path] = (),
    ) -> EmbeddedFirstStage:
        """Index ``documents`` into ``out_dir`` and return the opened first stage.

        ``encoder`` is a loaded ``BiEncoder``; without one, the bi-encoder in ``model_dir``
        (default: the package's default bi-encoder) is loaded. Embedding shows a progress bar.
        ``stemmer``: the BM25 analyzer's ("english" or "none"). ``extra_model_dirs``: further bi-encoders,
        each with its own embeddings file, searched as ``dense:NAME`` (NAME: its card's name) and fused by
        ``rrf``. ``known_embeddings``: rows a bi-encoder (by :func:`embedding_key`) already gave these
        documents, in order (another index of the same corpus): not embedded again.
        """
        from lrt_rerank import BiEncoder

        analyzer = Analyzer(stemmer)
        docs = list(documents)
        if not docs:
            raise ValueError("cannot index an empty corpus")
        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out}: directory is not empty (pass overwrite=True / --force to replace it)")
            if not (out / MANIFEST).is_file():
                raise FileExistsError(f"{out}: not empty and not an lrt-rerank index; refusing to delete it")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)

        resolved_model_dir = Path(model_dir) if model_dir is not None else Path(default_model_dir("bi-encoder"))
        if encoder is None:
            encoder = BiEncoder.load(str(resolved_model_dir))
        texts = [document.full_text for document in docs]

        retriever = bm25s.BM25()
        retriever.index(analyzer.tokenize(texts), show_progress=False)
        retriever.save(str(out / BM25_DIR), show_progress=False)

        known = dict(known_embeddings or {})
        empty = [d.is_empty for d in docs]

        def embeddings_of(model: Path, enc: Any) -> npt.NDArray[np.float32]:
            rows = known.get(embedding_key({"model_sha256": file_sha256(model / "model.onnx"), **_encoding(enc)}))
            if rows is None:
                return _embed_corpus(enc, texts, empty, batch_size, progress)
            if rows.shape != (len(docs), int(enc.dim)):
                raise ValueError(f"embeddings of shape {rows.shape} given for {len(docs)} documents of dim {enc.dim}")
            return rows

        embeddings = embeddings_of(resolved_model_dir, encoder)
        np.save(out / EMBEDDINGS, embeddings)
        extra, extra_records = [], []
        for extra_dir in map(Path, extra_model_dirs):
            extra_encoder = BiEncoder.load(str(extra_dir))
            name = str(extra_encoder.card.get("name") or extra_dir.name)
            if name in [e[0] for e in extra] or extra_dir.resolve() == resolved_model_dir.resolve():
                raise ValueError(f"dense model {extra_dir} is given twice")
            rows = embeddings_of(extra_dir, extra_encoder)
            np.save(out / f"embeddings-{name}.npy", rows)
            extra.append((name, rows, extra_encoder))
            extra_records.append({"name": name, "embeddings": f"embeddings-{name}.npy", **_dense_record(extra_dir, extra_encoder, rows)})

        with (out / DOCS).open("w", encoding="utf-8") as handle:
            for document in docs:
                handle.write(
                    json.dumps({"_id": document.id, "title": document.title, "text": document.text}, ensure_ascii=False)
                    + "\n"
                )

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "documents": len(docs),
            "bm25": {
                "library": "bm25s",
                "k1": retriever.k1,
                "b": retriever.b,
                "method": retriever.method,
                **analyzer.record(),
            },
            "dense": _dense_record(resolved_model_dir, encoder, embeddings),
            "fusion": {"method": "rrf", "k": RRF_K, "depth": FUSION_DEPTH},
        }
        if extra_records:
            manifest["dense_extra"] = extra_records
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return cls(out, manifest, docs, retriever, embeddings, encoder, extra)

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def open(
        cls, index_dir: str | Path, model_dir: str | Path | None = None, encoder: Any = None
    ) -> EmbeddedFirstStage:
        """Load an index built by :meth:`build`.

        The bi-encoder comes from ``encoder``, else ``model_dir``, else the directory recorded
        in the manifest (falling back to the default bi-encoder); its ``model.onnx`` must be the
        one the index was built with.
        """
        from lrt_rerank import BiEncoder

        path = Path(index_dir)
        manifest = read_manifest(path)
        for name in (BM25_DIR, EMBEDDINGS, DOCS):
            if not (path / name).exists():
                raise IndexFormatError(f"{path / name}: missing from the index; rebuild it with `lrt-rerank index`")

        dense = manifest["dense"]
        if model_dir is None:
            recorded = Path(dense["model_dir"])
            model_dir = recorded if (recorded / "model.onnx").is_file() else Path(default_model_dir("bi-encoder"))
        _check_model(path, Path(model_dir), dense)
        if encoder is None:
            encoder = BiEncoder.load(str(model_dir), max_length=int(dense["max_length"]))

        documents = _read_docs(path / DOCS)
        if len(documents) != manifest["documents"]:
            raise IndexFormatError(
                f"{path}: inconsistent index (manifest says {manifest['documents']} documents, "
                f"found {len(documents)} stored documents); rebuild it"
            )
        embeddings = _load_embeddings(path, EMBEDDINGS, manifest["documents"], dense["dim"])
        extra = []
        for record in manifest.get("dense_extra", []):
            _check_model(path, Path(record["model_dir"]), record)
            rows = _load_embeddings(path, record["embeddings"], manifest["documents"], record["dim"])
            extra.append((record["name"], rows, BiEncoder.load(record["model_dir"], max_length=int(record["max_length"]))))
        retriever = bm25s.BM25.load(str(path / BM25_DIR), show_progress=False)
        return cls(path, manifest, documents, retriever, embeddings, encoder, extra)

    # ------------------------------------------------------------------------------- search
    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        if not wants_search(query, k, system, self.dense_signals):
            return []
        if system == "bm25":
            return self._bm25(query, k)
        if system == "rrf":
            return self._rrf(query, k)
        return self._dense(query, k, system)

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        texts = []
        for doc_id in ids:
            position = self._position.get(doc_id)
            if position is None:
                raise KeyError(f"document {doc_id!r} is not in the index {self.path}")
            texts.append(self.documents[position].full_text)
        return texts

    def document(self, doc_id: str) -> Document:
        position = self._position.get(doc_id)
        if position is None:
            raise KeyError(f"document {doc_id!r} is not in the index {self.path}")
        return self.documents[position]

    def _bm25(self, query: str, k: int) -> list[Candidate]:
        tokens = self.analyzer.tokenize(query, return_ids=False)[0]
        if not tokens:
            return []
        scores = self._retriever.get_scores(tokens)
        # Documents sharing no term with the query score 0: they are not matches, leave them out.
        return _top_k(scores, k, self.documents, minimum=0.0)

    def _dense(self, query: str, k: int, system: str = "dense") -> list[Candidate]:
        embeddings, encoder = (self._embeddings, self._encoder) if system == "dense" else self._extra[system]
        vector = np.asarray(encoder.embed_queries([query]), dtype=np.float32).reshape(-1)
        scores = embeddings @ vector
        scores[self._unembedded] = -np.inf
        return _top_k(scores, k, self.documents, minimum=-np.inf)

    def _rrf(self, query: str, k: int) -> list[Candidate]:
        from lrt_rerank import rrf

        depth = max(k, FUSION_DEPTH)
        runs = [[c.id for c in self._bm25(query, depth)]]
        runs += [[c.id for c in self._dense(query, depth, system)] for system in self.dense_signals]
        fused = rrf(runs, k=RRF_K, top_k=k)
        return [Candidate(doc_id, float(score), rank) for rank, (doc_id, score) in enumerate(fused, start=1)]


def _top_k(scores: npt.NDArray[Any], k: int, documents: Sequence[Document], minimum: float | None) -> list[Candidate]:
    """Best ``k`` by score; ties broken by document order; scores <= ``minimum`` dropped."""
    n = scores.shape[0]
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[part].min()
        # Include every document tied with the k-th score, so the tie-break below is by position.
        pool = np.flatnonzero(scores >= threshold)
    else:
        pool = np.arange(n)
    order = pool[np.lexsort((pool, -scores[pool]))][:k]
    if minimum is not None:
        order = order[scores[order] > minimum]
    return [Candidate(documents[i].id, float(scores[i]), rank) for rank, i in enumerate(order.tolist(), start=1)]


def _embed_corpus(
    encoder: Any, texts: list[str], empty: list[bool], batch_size: int, progress: bool
) -> npt.NDArray[np.float32]:
    """Embed in length-sorted slices (less padding) with a progress bar; rows in input order.
    Empty documents are not embedded: their rows stay zero."""
    order = sorted((i for i in range(len(texts)) if not empty[i]), key=lambda i: len(texts[i]))
    result = np.zeros((len(texts), int(encoder.dim)), dtype=np.float32)
    with tqdm(total=len(order), desc="Embedding documents", unit="doc", disable=not progress) as bar:
        for offset in range(0, len(order), batch_size):
            positions = order[offset : offset + batch_size]
            result[positions] = np.asarray(encoder.embed_documents([texts[i] for i in positions]), dtype=np.float32)
            bar.update(len(positions))
    return result


def _dense_record(model_dir: Path, encoder: Any, embeddings: npt.NDArray[np.float32]) -> dict[str, Any]:
    """A bi-encoder's manifest entry: where it is, its model.onnx sha256, dimension and max length."""
    return {
        "model_dir": str(model_dir.resolve()),
        "model_sha256": file_sha256(model_dir / "model.onnx"),
        "dim": int(embeddings.shape[1]),
        **_encoding(encoder),
    }


def _encoding(encoder: Any) -> dict[str, Any]:
    """What else than the model decides a document's row: the max length, and the document prefix where there is one."""
    prefix = getattr(encoder, "document_prefix", "")
    return {"max_length": int(encoder.max_length), **({"document_prefix": prefix} if prefix else {})}


def embedding_key(record: dict[str, Any]) -> str:
    """The identity of a manifest dense record's rows: model.onnx sha256, max length, document prefix."""
    return f"{record['model_sha256']}|{record['max_length']}|{record.get('document_prefix', '')}"


def _check_model(index_dir: Path, model_dir: Path, record: dict[str, Any]) -> None:
    """The bi-encoder in ``model_dir`` is the one ``record`` says the index was built with."""
    model_path = model_dir / "model.onnx"
    if not model_path.is_file():
        raise IndexFormatError(f"{model_path}: bi-encoder model not found")
    if file_sha256(model_path) != record["model_sha256"]:
        raise IndexFormatError(
            f"{index_dir}: built with a different bi-encoder (model.onnx sha256 {record['model_sha256'][:12]}…, "
            f"{model_path} has another); rebuild the index or pass the original model directory"
        )


def _load_embeddings(index_dir: Path, name: str, documents: int, dim: int) -> npt.NDArray[np.float32]:
    """An embeddings file of the index, checked against the manifest's document count and dimension."""
    try:
        embeddings = np.load(index_dir / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{index_dir / name}: unreadable ({exc}); rebuild the index with `lrt-rerank index`") from exc
    if embeddings.ndim != 2 or embeddings.shape != (documents, dim):
        raise IndexFormatError(
            f"{index_dir}: inconsistent index (manifest says {documents} documents of dim {dim}, "
            f"found {name} of shape {embeddings.shape}); rebuild it"
        )
    return embeddings.astype(np.float32, copy=False)


def read_manifest(index_dir: Path) -> dict[str, Any]:
    """Read and validate ``manifest.json``; raise :class:`IndexFormatError` with the reason."""
    manifest_path = index_dir / MANIFEST
    if not index_dir.is_dir():
        raise IndexFormatError(f"{index_dir}: no such index directory (build one with `lrt-rerank index`)")
    if not manifest_path.is_file():
        raise IndexFormatError(
            f"{manifest_path}: missing; {index_dir} is not an lrt-rerank index or its build did not finish"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{manifest_path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{manifest_path}: not an lrt-rerank embedded index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{index_dir}: index format version {version} is not supported by this lrt-rerank "
            f"(expects {FORMAT_VERSION}); rebuild it with `lrt-rerank index`"
        )
    return manifest


def _read_docs(path: Path) -> list[Document]:
    documents = []
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                documents.append(Document(record["_id"], record["title"], record["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise IndexFormatError(
                    f"{path}:{number}: corrupt document store line ({exc}); rebuild the index"
                ) from exc
    return documents
