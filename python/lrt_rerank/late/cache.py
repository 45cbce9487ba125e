"""The document-embedding cache: each document's token matrix, encoded once, kept by model and text hash.

In process: an LRU bounded in MiB (the entries' bytes). Shared: an optional Redis tier (the ``serve`` extra),
best effort like :mod:`lrt_rerank.rerank.redis_tier`. Both hold the same compact binary form
(:func:`pack`): a 4-byte magic, the token count and the dimension (little-endian uint32 each), then the
rows as float16. An entry that does not decode to that form (truncated, another magic, non-finite
values) is a miss, and is overwritten by the fresh encoding.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from lrt_rerank.rerank.redis_tier import RedisSettings

MAGIC = b"LRT1"
HEADER = struct.Struct("<4sII")
Matrix = npt.NDArray[np.float32]


def pack(matrix: Matrix) -> bytes:
    rows, dim = matrix.shape
    return HEADER.pack(MAGIC, rows, dim) + np.ascontiguousarray(matrix, dtype="<f2").tobytes()


def unpack(blob: bytes | None) -> Matrix | None:
    """The matrix of a packed entry, or None for anything that is not one."""
    if blob is None or len(blob) < HEADER.size:
        return None
    magic, rows, dim = HEADER.unpack_from(blob)
    if magic != MAGIC or dim == 0 or len(blob) != HEADER.size + 2 * rows * dim:
        return None
    matrix = np.frombuffer(blob, dtype="<f2", offset=HEADER.size).reshape(rows, dim).astype(np.float32)
    return matrix if np.isfinite(matrix).all() else None


def cache_key(fingerprint: str, text_key: bytes) -> bytes:
    return b"lrt:doc:" + fingerprint.encode() + b":" + text_key.hex().encode()


class SharedDocumentTier(Protocol):
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...
    def put_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None: ...


class RedisDocumentTier:
    """Packed document matrices in Redis under :func:`cache_key` keys with a TTL; any Redis error is a miss."""

    def __init__(self, settings: RedisSettings) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors = (redis.RedisError,)
        self._ttl = settings.ttl_s
        self._client = redis.Redis.from_url(
            settings.url, socket_timeout=settings.socket_timeout_s, socket_connect_timeout=settings.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        try:
            return list(self._client.mget(keys)) if keys else []
        except self._errors:
            return [None] * len(keys)

    def put_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in zip(keys, values, strict=True):
                pipe.set(key, value, ex=self._ttl)
            pipe.execute()
        except self._errors:
            pass

    def close(self) -> None:
        self._client.close()


class DocumentCache:
    """Thread-safe LRU of packed document matrices, at most ``max_mib`` MiB of entries, over an optional shared tier."""

    def __init__(self, max_mib: float = 256.0, shared: SharedDocumentTier | None = None) -> None:
        if max_mib <= 0:
            raise ValueError(f"max_mib must be > 0, got {max_mib}")
        self.max_bytes = int(max_mib * 2**20)
        self.shared = shared
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.shared_hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "shared_hits": self.shared_hits, "misses": self.misses,
                    "bytes": self.bytes, "entries": len(self._entries), "evictions": self.evictions}

    def _put_local(self, key: bytes, blob: bytes) -> None:
        if len(blob) > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._entries[key] = blob
        self.bytes += len(blob)
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)
            self.evictions += 1

    def get_many(self, fingerprint: str, text_keys: Sequence[bytes]) -> list[Matrix | None]:
        keys = [cache_key(fingerprint, k) for k in text_keys]
        found: list[Matrix | None] = []
        with self._lock:
            for key in keys:
                blob = self._entries.get(key)
                if blob is not None:
                    self._entries.move_to_end(key)
                found.append(unpack(blob))
        missing = [i for i, m in enumerate(found) if m is None]
        shared_hits = 0
        if missing and self.shared is not None:
            blobs = self.shared.get_many([keys[i] for i in missing])
            with self._lock:
                for i, blob in zip(missing, blobs):
                    matrix = unpack(blob)
                    if matrix is not None and blob is not None:
                        found[i] = matrix
                        shared_hits += 1
                        self._put_local(keys[i], blob)
        with self._lock:
            self.shared_hits += shared_hits
            self.hits += len(keys) - len(missing)
            self.misses += len(missing) - shared_hits
        return found

    def put_many(self, fingerprint: str, text_keys: Sequence[bytes], matrices: Sequence[Matrix]) -> None:
        keys = [cache_key(fingerprint, k) for k in text_keys]
        blobs = [pack(m) for m in matrices]
        with self._lock:
            for key, blob in zip(keys, blobs, strict=True):
                self._put_local(key, blob)
        if self.shared is not None:
            self.shared.put_many(keys, blobs)
