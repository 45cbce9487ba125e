"""Pairing a late-interaction re-ranker with the token store of an index, and saying where its documents came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrt_rerank.late.model import ColBERT
from lrt_rerank.late.store import MANIFEST, STORE_DIR, StoredEmbeddings


def attach_store(reranker: Any, index_dir: Path | None) -> bool:
    """Give a ColBERT ``reranker`` the store of ``index_dir`` when the index has one; True if attached."""
    if not isinstance(reranker, ColBERT) or index_dir is None or not (index_dir / STORE_DIR / MANIFEST).is_file():
        return False
    reranker.store = StoredEmbeddings.open(index_dir, reranker)
    return True


def store_report(reranker: Any) -> str | None:
    """One line on where a ColBERT re-ranker's document matrices came from (None for other re-rankers)."""
    if not isinstance(reranker, ColBERT):
        return None
    where = f"the stored embeddings of {reranker.store.path}" if reranker.store is not None else "no stored embeddings"
    return f"late interaction: {reranker.documents_encoded} documents encoded at query time ({where})"
