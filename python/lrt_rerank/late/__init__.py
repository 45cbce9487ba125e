"""Late interaction (ColBERT): token matrices and MaxSim over the Rust core.

* :mod:`~lrt_rerank.late.model`: :class:`ColBERT`, a ``Reranker`` of the core;
* :mod:`~lrt_rerank.late.store`: document token embeddings stored with an index (fp16 or int8, memory-mapped);
* :mod:`~lrt_rerank.late.cache`: the document-embedding cache (in-process LRU in MiB, Redis tier in fp16).

Importers: :mod:`lrt_rerank.models.importers.colbert`. Nothing heavy is imported here.
"""

from lrt_rerank.late.model import ColBERT, EncodedDocuments

__all__ = ["ColBERT", "EncodedDocuments"]
