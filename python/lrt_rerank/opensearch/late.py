"""Late interaction at index time for OpenSearch: every document's ColBERT tokens encoded once, stored in
the node (3.x: rescored there by k-NN's ``lateInteractionScore``) and/or in the service's Redis document cache.

* In the node: the field :data:`TOKENS_FIELD` (an ``object`` with ``enabled: false``: kept in ``_source``,
  not indexed) holds the token rows as JSON, float16 values or, compact, int8 (``round(127 x)``; the rows are
  L2-normalised, so one scale for every document keeps the order). :func:`rescore_in_node` runs
  ``lateInteractionScore`` in a ``script_score`` over the candidates; with ``innerproduct`` the node scores
  each query token ``1 + max dot`` (Lucene's scaling of a non-negative inner product), so its order is MaxSim's.
* In Redis: the entries the service's document cache reads (:func:`lrt_rerank.late.cache.cache_key` of the
  model fingerprint and the ``content`` text, :func:`~lrt_rerank.late.cache.pack`), so the rerank pipeline
  encodes no document at query time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from opensearchpy import OpenSearch

from lrt_rerank.late.cache import cache_key, pack
from lrt_rerank.late.model import text_hash

if TYPE_CHECKING:
    from lrt_rerank.late import ColBERT

TOKENS_FIELD = "colbert_tokens"
NODE_DTYPES = ("float16", "int8")
INT8_SCALE = 127.0
SCRIPT = "lateInteractionScore(params.query_vectors, params.field, params._source, params.space_type)"
LATE_INTERACTION_SINCE = (3, 3)
"""k-NN added the ``lateInteractionScore`` Painless function in OpenSearch 3.3."""
Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LateIndexReport:
    """What :func:`index_late_interaction` wrote: documents, token rows, and bytes per document per target."""

    documents: int
    tokens: int
    node_dtype: str | None
    node_json_bytes: int
    redis_bytes: int

    def per_document(self, total: int) -> float:
        return total / max(1, self.documents)


def node_has_late_interaction(client: OpenSearch) -> bool:
    """Whether the node's k-NN has ``lateInteractionScore`` (OpenSearch 3.3 or newer)."""
    version = str(client.info()["version"]["number"])
    return tuple(int(x) for x in version.split(".")[:2]) >= LATE_INTERACTION_SINCE


def node_rows_json(matrix: Matrix, dtype: str) -> str:
    """The token rows as the node stores them, as JSON: float16 values (their shortest decimal form) or int8
    ``round(127 x)``."""
    if dtype == "int8":
        values = np.clip(np.rint(matrix * INT8_SCALE), -127, 127).astype(np.int8).astype(str)
    elif dtype == "float16":
        values = matrix.astype(np.float16).astype(str)
    else:
        raise ValueError(f"dtype must be one of {NODE_DTYPES}, got {dtype!r}")
    return "[" + ",".join("[" + ",".join(row) + "]" for row in values) + "]"


def encoded_batches(model: ColBERT, texts: Sequence[str], batch_size: int) -> Iterator[tuple[int, list[Matrix]]]:
    """(start, token matrices) of ``texts`` in batches, each text through the model once."""
    for start in range(0, len(texts), batch_size):
        yield start, model.encode_documents(list(texts[start : start + batch_size])).matrices()


def index_late_interaction(
    model: ColBERT,
    ids: Sequence[str],
    texts: Sequence[str],
    client: OpenSearch | None = None,
    index: str | None = None,
    node_dtype: str = "float16",
    redis_url: str | None = None,
    batch_size: int = 64,
) -> LateIndexReport:
    """Encode each text once; store the rows in the node (``client``/``index``) and/or Redis (``redis_url``).

    ``texts`` must be the documents' ``content`` values: the text the service is sent and keys its cache by.
    """
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if client is None and redis_url is None:
        raise ValueError("nothing to fill: give the node (client and index) or a Redis URL")
    tier = None
    if redis_url is not None:
        from lrt_rerank.late.cache import RedisDocumentTier
        from lrt_rerank.rerank.redis_tier import RedisSettings

        tier = RedisDocumentTier(RedisSettings(redis_url, socket_timeout_s=10.0))
    if client is not None:
        if index is None:
            raise ValueError("index is required with a client")
        client.indices.put_mapping(index=index, body={"properties": {TOKENS_FIELD: {"type": "object", "enabled": False}}})
    tokens = node_bytes = redis_bytes = 0
    try:
        for start, matrices in encoded_batches(model, texts, batch_size):
            batch_ids = ids[start : start + len(matrices)]
            tokens += sum(len(m) for m in matrices)
            if tier is not None:
                blobs = [pack(m) for m in matrices]
                keys = [cache_key(model.fingerprint, text_hash(t)) for t in texts[start : start + len(matrices)]]
                tier.put_many(keys, blobs)
                redis_bytes += sum(len(b) + len(k) for b, k in zip(blobs, keys, strict=True))
            if client is not None:
                node_bytes += _bulk_update(client, str(index), batch_ids, [node_rows_json(m, node_dtype) for m in matrices])
    finally:
        if tier is not None:
            tier.close()
    if client is not None:
        client.indices.refresh(index=index)
    return LateIndexReport(len(ids), tokens, node_dtype if client is not None else None, node_bytes, redis_bytes)


def _bulk_update(client: OpenSearch, index: str, ids: Sequence[str], rows_json: Sequence[str]) -> int:
    """Partial updates adding :data:`TOKENS_FIELD` (the JSON is written here, not re-encoded by the client)."""
    lines = []
    for doc_id, rows in zip(ids, rows_json, strict=True):
        lines.append(json.dumps({"update": {"_index": index, "_id": doc_id}}))
        lines.append('{"doc":{"' + TOKENS_FIELD + '":' + rows + "}}")
    answer = client.bulk(body="\n".join(lines) + "\n")
    failed = [item["update"] for item in answer["items"] if item["update"].get("error")]
    if failed:
        raise ValueError(
            f"storing late-interaction tokens failed for {len(failed)} documents, e.g. {failed[0].get('_id')}: {failed[0]['error']}"
        )
    return sum(len(r) for r in rows_json)


def rescore_body(query: Matrix, ids: Sequence[str]) -> dict[str, Any]:
    """A ``script_score`` over the candidates ``ids`` with ``lateInteractionScore`` on their stored tokens."""
    params = {"query_vectors": np.asarray(query, dtype=np.float32).tolist(), "field": TOKENS_FIELD, "space_type": "innerproduct"}
    script = {"source": SCRIPT, "params": params}
    return {"size": len(ids), "_source": False, "query": {"script_score": {"query": {"ids": {"values": list(ids)}}, "script": script}}}


def rescore_in_node(client: OpenSearch, index: str, query: Matrix, ids: Sequence[str]) -> list[tuple[str, float]]:
    """(id, node score) of the candidates ``ids``, best first, scored in the node from their stored tokens."""
    if not ids:
        return []
    hits = client.search(index=index, body=rescore_body(query, ids))["hits"]["hits"]
    return [(str(hit["_id"]), float(hit["_score"])) for hit in hits]
