"""First stage served by an OpenSearch cluster (an index built by `lrt-rerank opensearch index`).

``bm25``  a ``match`` query on ``content`` (the index's analyzer and BM25 parameters mirror the
          embedded first stage; :attr:`analyzer` is the one its mapping records),
``dense`` a ``knn`` query (lucene HNSW) with the query's ``BiEncoder`` embedding,
``rrf``   a ``hybrid`` query of both through the ``lrt-rrf`` search pipeline, whose
          ``score-ranker-processor`` fuses the top ``FUSION_DEPTH`` of each with RRF (k = 60),
          as the embedded first stage does.

Texts for the re-ranker come from the stored ``content`` field (title and text joined exactly
as ``Document.full_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from opensearchpy import OpenSearch

from lrt_rerank.datasets import Document
from lrt_rerank.first_stage.analyzer import Analyzer
from lrt_rerank.first_stage.base import Candidate, FirstStage, System, wants_search
from lrt_rerank.first_stage.embedded import FUSION_DEPTH
from lrt_rerank.opensearch.client import connect
from lrt_rerank.opensearch.connection import ConnectionSettings
from lrt_rerank.opensearch.capabilities import client_rrf, node_fuses
from lrt_rerank.opensearch.indexing import ANALYZER_META, CONTENT_FIELD, Embedder, index_meta
from lrt_rerank.opensearch.pipeline import RRF_PIPELINE, ensure_rrf_pipeline
from lrt_rerank.opensearch.queries import hybrid_body, knn_query, match_query, search_body


class OpenSearchFirstStage(FirstStage):
    """BM25 / dense / RRF candidates from an OpenSearch index."""

    def __init__(
        self, client: OpenSearch, index: str, encoder: Embedder, pipeline: str | None = RRF_PIPELINE, depth: int = FUSION_DEPTH
    ) -> None:
        self.client = client
        self.index = index
        self.encoder = encoder
        self.pipeline = pipeline
        self.depth = depth

    @classmethod
    def connect(
        cls, cluster: ConnectionSettings | str, index: str, model_dir: str | Path | None = None, encoder: Embedder | None = None
    ) -> OpenSearchFirstStage:
        """Open ``index`` on ``cluster`` (connection settings, or a bare URL); install the RRF pipeline if missing,
        or fuse in this process on a node without neural-search (OpenSearch 3.x from Maven Central).

        The bi-encoder is ``encoder``, else the one in ``model_dir``, else the default one; it
        must be the model the index was built with (recorded in the index's ``_meta``).
        Raises ``ValueError`` when the index is missing or was built with another bi-encoder.
        """
        from lrt_rerank import BiEncoder
        from lrt_rerank.models.resolve import default_model_dir
        from lrt_rerank.models.store import file_sha256

        settings = ConnectionSettings(cluster) if isinstance(cluster, str) else cluster
        client = connect(settings)
        if not client.indices.exists(index=index):
            raise ValueError(
                f"OpenSearch index {index!r} not found at {settings.url}; create it with "
                f"`lrt-rerank opensearch index --dataset DIR --index {index} --url {settings.url}`"
            )
        if encoder is None:
            resolved = Path(model_dir) if model_dir is not None else Path(default_model_dir("bi-encoder"))
            encoder = BiEncoder.load(str(resolved))
        meta = index_meta(client, index)
        model_path = getattr(encoder, "model_dir", None)
        recorded = meta.get("bi_encoder_sha256")
        if recorded and model_path is not None and file_sha256(Path(model_path) / "model.onnx") != recorded:
            raise ValueError(
                f"OpenSearch index {index!r} was built with another bi-encoder (model.onnx sha256 {str(recorded)[:12]}…); "
                "re-index it or pass the original model"
            )
        if meta.get("dim") not in (None, encoder.dim):
            raise ValueError(f"OpenSearch index {index!r} holds {meta.get('dim')}-d vectors but the bi-encoder gives {encoder.dim}")
        stage = cls(client, index, encoder, ensure_rrf_pipeline(client) if node_fuses(client) else None)
        stage.analyzer = Analyzer.from_record(meta.get(ANALYZER_META), f"OpenSearch index {index!r}")
        return stage

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        if not wants_search(query, k, system):
            return []
        if system == "bm25":
            hits = self._search(search_body(match_query(query), k))
        elif system == "dense":
            hits = self._search(search_body(knn_query(self._embed(query), k), k))
        else:
            depth = max(k, self.depth)
            if self.pipeline is None:
                hits = client_rrf(self.client, self.index, query, self._embed(query), depth)[:k]
            else:
                hits = self._search(hybrid_body(query, self._embed(query), depth), pipeline=self.pipeline)[:k]
        return [Candidate(str(hit["_id"]), float(hit["_score"]), rank) for rank, hit in enumerate(hits, start=1)]

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        return [str(source.get(CONTENT_FIELD, "")) for source in self._sources(ids, [CONTENT_FIELD])]

    def document(self, doc_id: str) -> Document:
        source = self._sources([doc_id], ["doc_id", "title", "text"])[0]
        return Document(doc_id, str(source.get("title", "")), str(source.get("text", "")))

    def close(self) -> None:
        self.client.close()

    def _embed(self, query: str) -> list[float]:
        vector = np.asarray(self.encoder.embed_queries([query]), dtype=np.float32).reshape(-1)
        return vector.tolist()

    def _search(self, body: dict[str, Any], pipeline: str | None = None) -> list[dict[str, Any]]:
        params = {"search_pipeline": pipeline} if pipeline else None
        answer = self.client.search(index=self.index, body=body, params=params)
        return list(answer["hits"]["hits"])

    def _sources(self, ids: Sequence[str], fields: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        answer = self.client.mget(index=self.index, body={"ids": list(ids)}, params={"_source_includes": ",".join(fields)})
        sources = []
        for doc in answer["docs"]:
            if not doc.get("found"):
                raise KeyError(f"document {doc.get('_id')!r} is not in the OpenSearch index {self.index!r}")
            sources.append(doc.get("_source", {}))
        return sources
