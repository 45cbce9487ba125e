"""The settings of one rerank-service process, handed from ``lrt-rerank serve`` to its workers as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

SETTINGS_ENV = "LRT_RERANK_SERVICE_SETTINGS"


@dataclass(frozen=True)
class ServiceSettings:
    """Everything that configures one service process (JSON-serialisable, see ``to_env``)."""

    model: str = "default"
    """A cross-encoder model directory, or "default" for the default cross-encoder."""
    max_documents: int = 1000
    max_body_bytes: int = 1 << 20
    api_key: str | None = field(default=None, repr=False)
    """Bearer key of the rerank routes (compared in constant time; never logged or shown in ``repr``)."""
    redis_url: str | None = None
    redis_ttl_s: int = 86_400
    redis_timeout_s: float = 0.1
    redis_backoff_s: float = 1.0
    cache_capacity: int = 100_000
    document_cache_mib: float = 256.0
    """MiB of document token matrices a late-interaction model keeps in process (the document cache)."""
    threads: int | None = None
    """Intra-op threads of the model (None: the core's default)."""
    backend: str = "ort"
    """Runtime of the model: "ort", "openvino" or "auto" (see lrt_rerank.backends)."""
    max_concurrent_scoring: int = 2
    """Requests scored at the same time per process; the rest wait their turn."""
    any_model_name: bool = False
    """Accept any ``model`` name on ``/v2/rerank`` (default: only the served model's id)."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServiceSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if raw is None:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `lrt-rerank serve`")
        return cls(**json.loads(raw))
