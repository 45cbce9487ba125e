"""The production shape on one machine: OpenSearch nodes, rerank replicas, one Redis, HAProxy.

``lrt-rerank stack up`` starts, in order:

1. ``redis-server`` on 127.0.0.1 (no persistence: it only holds scores that can be computed again);
2. ``replicas`` processes of ``lrt-rerank serve`` on ``replica_port``, ``replica_port + 1``, ...,
   all with ``--redis-url`` of that Redis (a score one replica computed is a hit for the others);
3. HAProxy on ``port`` in front of them (:mod:`lrt_rerank.ops.stack.haproxy`: health checks on ``/health``);
4. unless ``opensearch`` is None, the OpenSearch cluster (:func:`lrt_rerank.ops.opensearch.cluster.up_cluster`)
   and the rerank pipeline, whose ml-commons connector points at the load balancer, not at a replica.

Every process runs detached and is recorded under ``state_dir`` (``<name>.json`` and
``<name>.log``, see :mod:`lrt_rerank.ops.stack.processes`), with the stack's settings in
``stack.json``, so ``lrt-rerank stack down`` (or a fault test) finds them later.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from lrt_rerank.ops.opensearch import ClusterSpec, NodeError, NodeStatus, down_cluster, up_cluster
from lrt_rerank.ops.opensearch import status as node_status
from lrt_rerank.ops.opensearch.cluster import rerank_model_state
from lrt_rerank.ops.stack import haproxy
from lrt_rerank.ops.stack.processes import ManagedProcess, ProcessError
from lrt_rerank.ops.stack.spec import StackSpec, default_state_dir

STATE_FILE = "stack.json"
API_KEY_ENV = "LRT_RERANK_API_KEY"

if TYPE_CHECKING:
    from lrt_rerank.opensearch.ml_model import ModelReadiness

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A part of the stack could not be started or found; the message names it and its log."""


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int | None
    url: str
    log_path: Path

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "url": self.url, "log": str(self.log_path)}


class Stack:
    """The processes of one :class:`StackSpec`, by name: ``redis``, ``replica-<i>``, ``haproxy``."""

    def __init__(self, spec: StackSpec) -> None:
        self.spec = spec
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        self.redis = ManagedProcess(
            "redis",
            (_redis_server(), "--port", str(spec.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            spec.state_dir,
        )
        threads = spec.threads or max(1, (os.cpu_count() or 1) // spec.replicas)
        self.replicas = [
            ManagedProcess(
                f"replica-{i}",
                (
                    sys.executable, "-m", "lrt_rerank.cli", "serve", "--port", str(spec.replica_port + i - 1),
                    "--model", spec.model, "--redis-url", spec.redis_url, "--threads", str(threads),
                ),
                spec.state_dir,
            )
            for i in range(1, spec.replicas + 1)
        ]
        self.haproxy = ManagedProcess("haproxy", (haproxy.executable(), "-db", "-f", str(self.haproxy_config)), spec.state_dir)
        self.rerank_model: ModelReadiness | None = None
        """The rerank model's settled deploy state, once `up` has installed the pipeline."""

    @property
    def haproxy_config(self) -> Path:
        return self.spec.state_dir / "haproxy.cfg"

    # ------------------------------------------------------------------------ pieces
    def start_redis(self, timeout_s: float = 30.0) -> None:
        self.redis.start()
        client = redis.Redis.from_url(self.spec.redis_url, socket_timeout=1, socket_connect_timeout=1)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            self.redis.wait_ready(ready, timeout_s)
        finally:
            client.close()

    def start_replica(self, ordinal: int) -> None:
        """Start replica ``ordinal`` (1-based) unless it runs; return at once (see :meth:`wait_replica`)."""
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if self.spec.api_key:
            env[API_KEY_ENV] = self.spec.api_key  # not on the command line, where `ps` shows it
        self.replica(ordinal).start(env)

    def wait_replica(self, ordinal: int, timeout_s: float = 300.0) -> None:
        url = self.spec.replica_urls[ordinal - 1] + "/health"
        self.replica(ordinal).wait_ready(lambda: _answers_200(url), timeout_s)

    def replica(self, ordinal: int) -> ManagedProcess:
        if not 1 <= ordinal <= len(self.replicas):
            raise ValueError(f"replica {ordinal}: this stack has replicas 1..{len(self.replicas)}")
        return self.replicas[ordinal - 1]

    def start_haproxy(self, timeout_s: float = 60.0) -> None:
        spec = self.spec
        self.haproxy_config.write_text(
            haproxy.config_text(spec.port, spec.stats_port, [spec.replica_port + i for i in range(spec.replicas)]),
            encoding="utf-8",
        )
        check = subprocess.run(
            [self.haproxy.argv[0], "-c", "-q", "-f", str(self.haproxy_config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise StackError(f"haproxy rejects {self.haproxy_config}:\n{check.stdout}{check.stderr}")
        self.haproxy.start()

        def all_up() -> bool:
            try:
                return all(server.up for server in haproxy.backend_state(spec.stats_port))
            except haproxy.HAProxyError:
                return False

        self.haproxy.wait_ready(all_up, timeout_s)

    def processes(self) -> list[ManagedProcess]:
        return [self.redis, *self.replicas, self.haproxy]

    def status(self) -> list[ProcessStatus]:
        urls = {"redis": self.spec.redis_url, "haproxy": self.spec.url}
        urls.update({p.name: u for p, u in zip(self.replicas, self.spec.replica_urls, strict=True)})
        return [ProcessStatus(p.name, p.pid(), urls[p.name], p.log_path) for p in self.processes()]


# ------------------------------------------------------------------------------ public
def up(spec: StackSpec, progress: Progress | None = None, timeout_s: float = 600.0) -> Stack:
    """Start whatever of the stack is not running; return once the load balancer sees every
    replica healthy and (with OpenSearch) the pipeline points at it."""
    say = progress or (lambda _message: None)
    state = spec.state_dir / STATE_FILE
    if state.is_file():
        previous = load(spec.state_dir)
        if previous != spec and any(p.pid() is not None for p in Stack(previous).processes()):
            raise StackError(
                f"{spec.state_dir} holds a running stack with other settings; stop it first "
                f"(lrt-rerank stack down --state-dir {spec.state_dir}) or use another --state-dir"
            )
    stack = Stack(spec)
    state.write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")
    state.chmod(0o600)  # it holds the API key
    try:
        say(f"redis on {spec.redis_url}")
        stack.start_redis()
        say(f"{spec.replicas} rerank replicas on {', '.join(spec.replica_urls)} (model {spec.model})")
        for ordinal in range(1, spec.replicas + 1):
            stack.start_replica(ordinal)
        for ordinal in range(1, spec.replicas + 1):
            stack.wait_replica(ordinal, timeout_s)
        say(f"haproxy on {spec.url} (stats http://127.0.0.1:{spec.stats_port}/stats)")
        stack.start_haproxy()
    except ProcessError as exc:
        raise StackError(str(exc)) from exc
    if spec.opensearch is not None:
        stack.rerank_model = _opensearch_up(spec, spec.opensearch, say, timeout_s)
    return stack


def down(state_dir: Path | None = None) -> list[str]:
    """Stop everything the stack recorded in ``state_dir``; return the names of what was running."""
    spec = load(state_dir)
    stack = Stack(spec)
    stopped = [p.name for p in (stack.haproxy, *stack.replicas, stack.redis) if p.stop()]
    if spec.opensearch is not None and down_cluster(spec.opensearch):
        stopped.append("opensearch")
    return stopped


def load(state_dir: Path | None = None) -> StackSpec:
    """The :class:`StackSpec` that `up` recorded in ``state_dir``."""
    state = (state_dir or default_state_dir()) / STATE_FILE
    try:
        return StackSpec.from_json(json.loads(state.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise StackError(f"no stack recorded in {state.parent} (start one with `lrt-rerank stack up`)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"{state}: not a stack record ({exc})") from exc


@dataclass(frozen=True)
class StackStatus:
    processes: list[ProcessStatus]
    replicas_up: list[str]
    """Replicas the load balancer counts as healthy (empty when it does not answer)."""
    opensearch: list[NodeStatus]
    rerank_model: dict[str, object] | None = None
    """The deploy state of the rerank pipeline's model (``rerank_model_state``), with OpenSearch."""

    def to_json(self) -> dict[str, Any]:
        return {
            "processes": [p.to_json() for p in self.processes],
            "replicas_up": self.replicas_up,
            "opensearch": [n.to_json() for n in self.opensearch],
            "rerank_model": self.rerank_model,
        }


def status(state_dir: Path | None = None) -> StackStatus:
    spec = load(state_dir)
    stack = Stack(spec)
    try:
        healthy = [s.name for s in haproxy.backend_state(spec.stats_port) if s.up]
    except haproxy.HAProxyError:
        healthy = []
    nodes: list[NodeStatus] = []
    model = None
    if spec.opensearch is not None:
        nodes = [node_status(member) for member in spec.opensearch.members()]
        if any(node.version is not None for node in nodes):
            model = rerank_model_state(spec.opensearch)
    return StackStatus(stack.status(), healthy, nodes, model)


# ---------------------------------------------------------------------------- helpers
def _opensearch_up(spec: StackSpec, cluster: ClusterSpec, say: Progress, timeout_s: float) -> ModelReadiness:
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.pipeline import PipelineError, install_pipeline
    from lrt_rerank.ops.opensearch.security import admin_settings

    say(f"OpenSearch: {cluster.nodes} node(s) from {cluster.url}" + (" (secured: TLS, user admin)" if cluster.secure else ""))
    try:
        up_cluster(cluster, timeout=timeout_s, progress=say)
        settings = admin_settings(cluster.members()[0]) if cluster.secure else cluster.url
        installed = install_pipeline(
            connect(settings), service_url=spec.url, api_key=spec.api_key, read_timeout_s=spec.read_timeout_s
        )
    except (NodeError, PipelineError, ConnectionError) as exc:
        raise StackError(f"OpenSearch: {exc}") from exc
    say(
        f"search pipeline {installed.rerank_pipeline} re-ranks through {installed.service_url} "
        f"(model {installed.model_id}: {installed.model.describe()}, settled)"
    )
    return installed.model


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (loopback URL built here)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("redis-server not found: install the Debian package (apt-get install -y redis-server)")
    return found
