"""What ``lrt-rerank stack up`` runs (:class:`StackSpec`: ports, replicas, model, OpenSearch) and where it records it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrt_rerank.ops.opensearch import ClusterSpec


def default_state_dir() -> Path:
    base = os.environ.get("LRT_RERANK_HOME")
    return (Path(base) if base else Path.home() / ".cache" / "lrt-rerank") / "stack"


@dataclass(frozen=True)
class StackSpec:
    """What to run. Ports are on 127.0.0.1; replica i listens on ``replica_port + i - 1``."""

    replicas: int = 2
    port: int = 8000
    replica_port: int = 8001
    stats_port: int = 8404
    redis_port: int = 6379
    model: str = "default"
    api_key_file: Path | None = None
    """File whose first line is the bearer key the replicas require (the connector sends it); the key
    itself is never written to ``stack.json`` or a command line."""
    threads: int | None = None
    """Intra-op threads per replica (default: the CPU count divided by the replicas, at least 1)."""
    opensearch: ClusterSpec | None = field(default_factory=lambda: ClusterSpec(nodes=3))
    read_timeout_s: int = 5
    """Seconds the ml-commons connector waits for the load balancer's answer."""
    state_dir: Path = field(default_factory=default_state_dir)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        ports = {
            "port": [self.port],
            "stats_port": [self.stats_port],
            "redis_port": [self.redis_port],
            "replica_port": list(range(self.replica_port, self.replica_port + self.replicas)),
        }
        if self.opensearch is not None:
            ports["opensearch"] = [int(url.rsplit(":", 1)[1]) for url in self.opensearch.urls]
        seen: dict[int, str] = {}
        for name, values in ports.items():
            for value in values:
                if not 1 <= value <= 65535:
                    raise ValueError(f"{name} {value}: not a TCP port")
                if value in seen:
                    raise ValueError(f"{name} {value}: already used by {seen[value]}")
                seen[value] = name

    @property
    def api_key(self) -> str | None:
        """The key in :attr:`api_key_file` (read when needed), None without one."""
        if self.api_key_file is None:
            return None
        from lrt_rerank.opensearch.connection import read_secret_file

        return read_secret_file(self.api_key_file, "--api-key-file")

    @property
    def url(self) -> str:
        """The load balancer: what clients and the ml-commons connector call."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def replica_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.replica_port + i}" for i in range(self.replicas)]

    def to_json(self) -> dict[str, Any]:
        cluster = self.opensearch
        return {
            "replicas": self.replicas,
            "port": self.port,
            "replica_port": self.replica_port,
            "stats_port": self.stats_port,
            "redis_port": self.redis_port,
            "model": self.model,
            "api_key_file": str(self.api_key_file) if self.api_key_file is not None else None,
            "threads": self.threads,
            "read_timeout_s": self.read_timeout_s,
            "state_dir": str(self.state_dir),
            "opensearch": None
            if cluster is None
            else {
                "nodes": cluster.nodes,
                "version": cluster.version,
                "port": cluster.port,
                "heap_mb": cluster.heap_mb,
                "work_dir": str(cluster.work_dir),
                "transport_port": cluster.transport_port,
                "secure": cluster.secure,
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackSpec:
        cluster = data.get("opensearch")
        key_file = data.get("api_key_file")
        return cls(
            **{k: v for k, v in data.items() if k not in ("opensearch", "state_dir", "api_key_file")},
            api_key_file=Path(key_file) if key_file is not None else None,
            state_dir=Path(data["state_dir"]),
            opensearch=None if cluster is None else ClusterSpec(**{**cluster, "work_dir": Path(cluster["work_dir"])}),
        )
