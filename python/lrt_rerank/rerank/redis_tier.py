"""The shared score tier in Redis (redis-py; the ``serve`` extra), for every replica and worker.

Scores are stored as float text under :func:`lrt_rerank.rerank.tiers.tier_key` keys with a TTL.
Redis is best effort: on any Redis error the call goes on as a cache miss, and Redis is left alone
for a back-off period (doubling up to a cap), so a dead or slow Redis costs at most one short
socket timeout per period instead of one per request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisSettings:
    url: str
    ttl_s: int = 86_400
    socket_timeout_s: float = 0.1
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0


class RedisScoreTier:
    """Scores in Redis, as float text under :func:`~lrt_rerank.rerank.tiers.tier_key` keys with a TTL. Thread-safe.

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
