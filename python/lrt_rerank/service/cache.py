"""Two-tier score cache of the rerank service.

Tier 1 is the in-process Rust ``ScoreCache``: every request of a process shares it (the
``CrossEncoder`` itself runs without a cache; :class:`TwoTierScorer` consults the tiers in
order). Tier 2 is optional Redis (redis-py), shared by every replica and worker. Both are
keyed by the core's hash of (model fingerprint, query, passage).

Redis is best effort: on any Redis error the request goes on as a cache miss, and Redis is
left alone for a back-off period (doubling up to a cap) so a dead or slow Redis costs at most
one short socket timeout per period instead of one per request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lrt_rerank import CrossEncoder, ScoreCache
from lrt_rerank._core import cache_key

log = logging.getLogger(__name__)

KEY_PREFIX = b"lrt-rerank:score:"


@dataclass(frozen=True)
class RedisSettings:
    url: str
    ttl_s: int = 86_400
    socket_timeout_s: float = 0.1
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0


def redis_key(fingerprint: str, query: str, passage: str) -> bytes:
    """Redis key of one score: the core's (fingerprint, query, passage) hash under a prefix."""
    return KEY_PREFIX + cache_key(fingerprint, query, passage).encode("ascii")


class RedisScoreTier:
    """Scores in Redis, as float text under :func:`redis_key` keys with a TTL. Thread-safe.

    ``clock`` (seconds, monotonic) times the back-off periods.
    """

    def __init__(self, settings: RedisSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._client = redis.Redis.from_url(
            settings.url,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._backoff_s = settings.backoff_initial_s
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "errors": self.errors}

    def _available(self) -> bool:
        with self._lock:
            return self._clock() >= self._down_until

    def _failed(self, action: str, err: redis.RedisError) -> None:
        with self._lock:
            self.errors += 1
            wait = self._backoff_s
            self._down_until = self._clock() + wait
            self._backoff_s = min(self._backoff_s * 2, self._settings.backoff_max_s)
        log.warning("redis %s failed (%s); treating as cache misses for %.1f s", action, err, wait)

    def _succeeded(self) -> None:
        with self._lock:
            self._backoff_s = self._settings.backoff_initial_s

    def get_many(self, keys: Sequence[bytes]) -> list[float | None]:
        """Cached scores for ``keys`` (None for a miss); all misses while Redis is unavailable."""
        values: list[bytes | None] = [None] * len(keys)
        if keys and self._available():
            try:
                values = self._client.mget(keys)
            except redis.RedisError as err:
                self._failed("MGET", err)
            else:
                self._succeeded()
        found = [_parse_score(v) for v in values]
        hits = sum(v is not None for v in found)
        with self._lock:
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def put_many(self, keys: Sequence[bytes], scores: Sequence[float]) -> None:
        if not keys or not self._available():
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, score in zip(keys, scores, strict=True):
                pipe.set(key, repr(float(score)), ex=self._settings.ttl_s)
            pipe.execute()
        except redis.RedisError as err:
            self._failed("SET", err)
        else:
            self._succeeded()

    def close(self) -> None:
        self._client.close()


def _parse_score(value: bytes | None) -> float | None:
    """A stored score, or None for a missing, unreadable or non-finite value (a miss, which the
    model's fresh score then overwrites)."""
    if value is None:
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None


class TwoTierScorer:
    """Scores passages from the in-process cache, then Redis (when configured), then the model.

    Scores found in Redis are copied into the in-process cache; scores the model computes go
    into both tiers.
    """

    def __init__(self, encoder: CrossEncoder, local: ScoreCache, redis_tier: RedisScoreTier | None) -> None:
        self.encoder = encoder
        self.local = local
        self.redis = redis_tier

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """Raw logits (float32) in input order."""
        fp = self.encoder.fingerprint
        found: list[float | None] = list(self.local.get_many(fp, query, passages))
        missing = [i for i, s in enumerate(found) if s is None]
        keys: list[bytes] = []
        if missing and self.redis is not None:
            keys = [redis_key(fp, query, passages[i]) for i in missing]
            remote = self.redis.get_many(keys)
            hits = [(i, s) for i, s in zip(missing, remote, strict=True) if s is not None]
            if hits:
                self.local.put_many(fp, query, [passages[i] for i, _ in hits], [s for _, s in hits])
                for i, s in hits:
                    found[i] = s
                keys = [k for k, s in zip(keys, remote, strict=True) if s is None]
                missing = [i for i in missing if found[i] is None]
        if missing:
            texts = [passages[i] for i in missing]
            fresh = self.encoder.score(query, texts)
            values = fresh.tolist()
            self.local.put_many(fp, query, texts, values)
            if self.redis is not None:
                self.redis.put_many(keys, values)
            for i, s in zip(missing, values, strict=True):
                found[i] = s
        return np.array(found, dtype=np.float32)
