"""Creating the search index and bulk-loading documents with their bi-encoder embeddings.

The mapping (``opensearch/index-mapping.json``) holds ``title`` and ``text``, ``content`` (title
and text joined exactly as :attr:`Document.full_text`: what BM25 matches and what the
re-ranker reads), and ``embedding``, a ``knn_vector`` on the ``lucene`` engine (HNSW), whose
dimension is set from the bi-encoder. The analyzer ``lrt_bm25`` is the embedded first stage's, defined
once in :mod:`lrt_rerank.first_stage.analyzer` (runs of word characters, lower-cased, English stop
words, tokens of two or more characters, Snowball English stemming unless ``stemmer="none"``) and
recorded in the mapping's ``_meta``; the similarity has its BM25 parameters (k1 1.5, b 0.75).

The index has one shard, and one replica per data node beyond the first (0 on a single node, 1
on two nodes), so every node holds a copy and losing a node loses no acknowledged document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from opensearchpy import OpenSearch
from opensearchpy.helpers import streaming_bulk
from tqdm.auto import tqdm

from lrt_rerank.datasets import Document
from lrt_rerank.first_stage.analyzer import Analyzer
from lrt_rerank.opensearch import templates

MAPPING_TEMPLATE = "index-mapping.json"
META_KEY = "lrt_rerank"
"""Key under the mapping's ``_meta``: vector dimension, the bi-encoder's model.onnx sha256, the BM25 analyzer."""
ANALYZER_META = "analyzer"
"""Key under ``_meta.lrt_rerank`` holding :meth:`Analyzer.record`; an index without it is unstemmed."""
VECTOR_FIELD = "embedding"
CONTENT_FIELD = "content"
TEXT_FIELDS = ("title", "text", CONTENT_FIELD)


class Embedder(Protocol):
    """What indexing and query embedding need from a ``BiEncoder``."""

    @property
    def dim(self) -> int: ...

    def embed_documents(self, documents: list[str]) -> Any: ...

    def embed_queries(self, queries: list[str]) -> Any: ...


class IndexingError(RuntimeError):
    """The index cannot be created or is incompatible with the documents/encoder."""


@dataclass(frozen=True)
class IndexFailure:
    doc_id: str
    reason: str


@dataclass
class IndexReport:
    index: str
    total: int = 0
    indexed: int = 0
    failures: list[IndexFailure] = field(default_factory=list)


def index_body(
    dim: int, meta: dict[str, Any] | None = None, replicas: int = 0, analyzer: Analyzer | None = None
) -> dict[str, Any]:
    """The create-index body from the template, with the vector dimension set to ``dim``.

    ``meta`` is stored under ``mappings._meta.lrt_rerank`` (see :func:`index_meta`);
    ``replicas`` sets ``number_of_replicas``; ``analyzer`` (default: English stemming) becomes
    ``settings.analysis`` and is recorded in the ``_meta``.
    """
    analyzer = analyzer or Analyzer()
    if dim < 1:
        raise ValueError(f"vector dimension must be >= 1, got {dim}")
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    body = templates.load(MAPPING_TEMPLATE)
    try:
        body["settings"]["index"]["number_of_replicas"] = replicas
    except (KeyError, TypeError):
        raise templates.TemplateError(f"{templates.assets_dir() / MAPPING_TEMPLATE}: no settings.index object") from None
    try:
        body["mappings"]["properties"][VECTOR_FIELD]["dimension"] = dim
    except (KeyError, TypeError):
        raise templates.TemplateError(
            f"{templates.assets_dir() / MAPPING_TEMPLATE}: no mappings.properties.{VECTOR_FIELD} object"
        ) from None
    body["settings"]["analysis"] = analyzer.opensearch_analysis()
    body["mappings"]["_meta"] = {META_KEY: {"dim": dim, **(meta or {}), ANALYZER_META: analyzer.record()}}
    return body


def index_meta(client: OpenSearch, name: str) -> dict[str, Any]:
    """What :func:`index_body` recorded in the index mapping's ``_meta`` ({} for other indexes)."""
    mapping = client.indices.get_mapping(index=name)
    meta = next(iter(mapping.values()))["mappings"].get("_meta", {})
    recorded = meta.get(META_KEY, {})
    return recorded if isinstance(recorded, dict) else {}


def index_analyzer(client: OpenSearch, name: str) -> Analyzer:
    """The BM25 analyzer index ``name`` records (an index made before it was recorded: unstemmed)."""
    return Analyzer.from_record(index_meta(client, name).get(ANALYZER_META), f"OpenSearch index {name!r}")


def create_index(
    client: OpenSearch,
    name: str,
    dim: int,
    recreate: bool = False,
    meta: dict[str, Any] | None = None,
    analyzer: Analyzer | None = None,
) -> bool:
    """Create ``name`` from the template; return False when a compatible index already exists.

    A new index gets :func:`replicas_for` the cluster and ``analyzer`` (default: English stemming). An existing
    index is kept when its vector dimension is ``dim`` and its analyzer ``analyzer`` (None: whichever it has);
    with ``recreate`` it is deleted and created again. Otherwise :class:`IndexingError` explains the mismatch.
    """
    if client.indices.exists(index=name):
        if recreate:
            client.indices.delete(index=name)
        else:
            existing = vector_dimension(client, name)
            if existing != dim:
                raise IndexingError(
                    f"index {name!r} exists with {VECTOR_FIELD} dimension {existing}, but the bi-encoder gives {dim}; "
                    "recreate it (--recreate)"
                )
            existing_analyzer = index_analyzer(client, name)
            if analyzer is not None and existing_analyzer != analyzer:
                raise IndexingError(
                    f"index {name!r} exists with BM25 stemmer {existing_analyzer.stemmer}, not {analyzer.stemmer}; "
                    "recreate it (--recreate)"
                )
            return False
    client.indices.create(index=name, body=index_body(dim, meta, replicas_for(client), analyzer or Analyzer()))
    return True


def replicas_for(client: OpenSearch) -> int:
    """Replicas that put a copy of every shard on each data node: data nodes - 1."""
    return max(0, int(client.cluster.health()["number_of_data_nodes"]) - 1)


def vector_dimension(client: OpenSearch, name: str) -> int | None:
    """The ``knn_vector`` dimension of index ``name``, or None when it has no such field."""
    mapping = client.indices.get_mapping(index=name)
    properties = next(iter(mapping.values()))["mappings"].get("properties", {})
    vector = properties.get(VECTOR_FIELD)
    if not vector or vector.get("type") != "knn_vector":
        return None
    return int(vector["dimension"])


def index_documents(
    client: OpenSearch,
    name: str,
    documents: Iterable[Document],
    encoder: Embedder,
    batch_size: int = 64,
    recreate: bool = False,
    progress: bool = True,
    vectors: np.ndarray | None = None,
    stemmer: str | None = None,
) -> IndexReport:
    """Create the index if needed and bulk-load ``documents`` (``_id`` = document id) with embeddings.

    Embeddings come from ``encoder``, or from ``vectors`` (one row per document, in order,
    made by the same ``encoder``, e.g. an embedded index's ``embeddings.npy``). Documents go in
    corpus order (ties in BM25 then break as in the embedded first stage). A document the
    cluster rejects is recorded in ``report.failures`` with the reason and the load goes on;
    the index is refreshed at the end. ``stemmer``: the BM25 analyzer's ("english" or "none"; None: an existing
    index's, english for a new one).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    docs = list(documents)
    dim = int(encoder.dim)
    if vectors is not None and vectors.shape != (len(docs), dim):
        raise IndexingError(f"precomputed vectors have shape {vectors.shape}; expected ({len(docs)}, {dim}) for these documents")
    analyzer = Analyzer(stemmer) if stemmer is not None else None
    create_index(client, name, dim, recreate=recreate, meta=encoder_meta(encoder), analyzer=analyzer)
    report = IndexReport(index=name, total=len(docs))
    actions = _actions(name, docs, encoder, batch_size, vectors)
    with tqdm(total=len(docs), desc=f"Indexing into {name}", unit="doc", disable=not progress) as bar:
        for ok, item in streaming_bulk(
            client,
            actions,
            chunk_size=batch_size,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=2,
        ):
            result = next(iter(item.values()))
            if ok:
                report.indexed += 1
            else:
                report.failures.append(IndexFailure(str(result.get("_id")), _reason(result)))
            bar.update(1)
    client.indices.refresh(index=name)
    return report


def document_source(document: Document, vector: Sequence[float]) -> dict[str, Any]:
    """The indexed body. An empty document (no title, no text) gets no vector: it stays stored
    under its id but neither BM25 nor knn can retrieve it."""
    source: dict[str, Any] = {
        "doc_id": document.id,
        "title": document.title,
        "text": document.text,
        CONTENT_FIELD: document.full_text,
    }
    if not document.is_empty:
        source[VECTOR_FIELD] = list(vector)
    return source


def encoder_meta(encoder: Embedder) -> dict[str, Any]:
    """The bi-encoder's identity for the index ``_meta``: model.onnx sha256 when it has a model_dir."""
    from lrt_rerank.models.store import file_sha256

    model_dir = getattr(encoder, "model_dir", None)
    if model_dir is None:
        return {}
    return {"bi_encoder": Path(model_dir).name, "bi_encoder_sha256": file_sha256(Path(model_dir) / "model.onnx")}


def _actions(
    name: str, docs: list[Document], encoder: Embedder, batch_size: int, precomputed: np.ndarray | None
) -> Iterator[dict[str, Any]]:
    for offset in range(0, len(docs), batch_size):
        batch = docs[offset : offset + batch_size]
        if precomputed is not None:
            vectors = np.asarray(precomputed[offset : offset + batch_size], dtype=np.float32)
        else:
            vectors = np.asarray(encoder.embed_documents([d.full_text for d in batch]), dtype=np.float32)
        if vectors.shape != (len(batch), encoder.dim):
            raise IndexingError(f"bi-encoder returned shape {vectors.shape} for {len(batch)} texts (expected dim {encoder.dim})")
        for document, vector in zip(batch, vectors.tolist(), strict=True):
            yield {"_op_type": "index", "_index": name, "_id": document.id, "_source": document_source(document, vector)}


def _reason(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        caused = error.get("caused_by", {})
        detail = f" (caused by {caused.get('type')}: {caused.get('reason')})" if caused else ""
        return f"{error.get('type')}: {error.get('reason')}{detail}"
    if error:
        return str(error)
    return f"status {result.get('status')}"
