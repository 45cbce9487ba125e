"""Score cache tiers in front of a re-ranker.

Tier 1 is the in-process Rust :class:`~lrt_rerank.ScoreCache`; tier 2 is an optional shared store
(:class:`~lrt_rerank.rerank.redis_tier.RedisScoreTier`, any object with ``get_many(keys)`` and
``put_many(keys, scores)``). Both are keyed by the core's hash of (model fingerprint, query,
passage). Scores found in tier 2 are copied into tier 1; scores the model computes go into both.
The tiers hold raw logits: calibration and interpolation happen after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lrt_rerank._core import ScoreCache, cache_key
from lrt_rerank.rerank.types import Reranker

KEY_PREFIX = b"lrt-rerank:score:"


def tier_key(fingerprint: str, query: str, passage: str) -> bytes:
    """Key of one score in a shared tier: the core's (fingerprint, query, passage) hash under a prefix."""
    return KEY_PREFIX + cache_key(fingerprint, query, passage).encode("ascii")


class SharedTier(Protocol):
    """A score store shared between processes (best effort: a miss on any failure)."""

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]: ...

    def put_many(self, keys: Sequence[bytes], scores: Sequence[float]) -> None: ...


class TieredScorer:
    """A re-ranker behind the cache tiers: ``score`` consults tier 1, then tier 2, then the model.

    ``fingerprint`` keys the cache (default: the re-ranker's ``fingerprint`` attribute, the model's sha256).
    """

    def __init__(
        self,
        reranker: Reranker,
        local: ScoreCache | None,
        shared: SharedTier | None = None,
        fingerprint: str | None = None,
    ) -> None:
        fingerprint = fingerprint if fingerprint is not None else getattr(reranker, "fingerprint", None)
        if (local is not None or shared is not None) and not isinstance(fingerprint, str):
            raise ValueError("a score cache needs a re-ranker with a `fingerprint` (the model's sha256) for its keys")
        self.reranker = reranker
        self.local = local
        self.shared = shared
        self.fingerprint = str(fingerprint)

    def score(self, query: str, passages: list[str]) -> npt.NDArray[np.float32]:
        """Raw scores (float32) in input order."""
        if self.local is None and self.shared is None:
            return np.asarray(self.reranker.score(query, passages), dtype=np.float32).reshape(-1)
        fp = self.fingerprint
        found: list[float | None] = (
            list(self.local.get_many(fp, query, passages)) if self.local is not None else [None] * len(passages)
        )
        missing = [i for i, s in enumerate(found) if s is None]
        if missing and self.shared is not None:
            keys = [tier_key(fp, query, passages[i]) for i in missing]
            remote = self.shared.get_many(keys)
            hits = [(i, s) for i, s in zip(missing, remote, strict=True) if s is not None]
            if hits and self.local is not None:
                self.local.put_many(fp, query, [passages[i] for i, _ in hits], [s for _, s in hits])
            for i, s in hits:
                found[i] = s
            missing = [i for i in missing if found[i] is None]
        if missing:
            texts = [passages[i] for i in missing]
            fresh = np.asarray(self.reranker.score(query, texts), dtype=np.float32).reshape(-1)
            if fresh.shape[0] != len(texts):
                raise ValueError(f"re-ranker returned {fresh.shape[0]} scores for {len(texts)} passages")
            if not np.isfinite(fresh).all():
                raise ValueError("re-ranker returned a non-finite score")
            values = [float(v) for v in fresh]
            if self.local is not None:
                self.local.put_many(fp, query, texts, values)
            if self.shared is not None:
                self.shared.put_many([tier_key(fp, query, t) for t in texts], values)
            for i, v in zip(missing, values, strict=True):
                found[i] = v
        return np.asarray(found, dtype=np.float32)
