"""A cluster of several nodes on 127.0.0.1, run from one assembled home.

Each node (``lrt-rerank opensearch up --nodes 2``) has its own config directory
(``OPENSEARCH_PATH_CONF``), data and log paths, node name, HTTP port (``port``, ``port + 1``, ...)
and transport port (``transport_port``, ``transport_port + 1``, ...), and finds the others through
``discovery.seed_hosts``. All nodes are cluster-manager eligible and hold data. A single node
(the default) runs with ``discovery.type: single-node`` from the home itself.

``up_cluster`` records the cluster's shape in ``cluster-<version>-<port>/cluster.json`` so that a
later ``status`` or ``down`` with only the port finds every node (:func:`recorded_cluster`). A
secured cluster (``secure=True``, :mod:`~lrt_rerank.ops.opensearch.security`) lives in
``cluster-<version>-<port>-secure/`` and a secured single node in ``node-<version>-secure/``; ``status``
and ``down`` find those too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lrt_rerank.ops.opensearch.java import find_java_home
from lrt_rerank.ops.opensearch.launch import (
    down,
    get_json,
    locked,
    read_pid,
    start,
    status,
    up,
    wait_started,
)
from lrt_rerank.ops.opensearch.security import connection_json
from lrt_rerank.ops.opensearch.spec import (
    DEFAULT_VERSION,
    SECURE_SUFFIX,
    Member,
    NodeSpec,
    NodeStatus,
    Progress,
    default_work_dir,
)

MAX_NODES = 4
CLUSTER_MANIFEST = "cluster.json"


@dataclass(frozen=True)
class ClusterSpec:
    """``nodes`` nodes on 127.0.0.1: HTTP ports ``port``.., transport ports ``transport_port``..

    ``heap_mb`` is per node (default: 1024 for one node, 512 each for more). ``transport_port``
    defaults to ``port + 100`` (9200 -> 9300, as OpenSearch's own defaults pair them).
    """

    nodes: int = 1
    version: str = DEFAULT_VERSION
    port: int = 9200
    heap_mb: int | None = None
    work_dir: Path = field(default_factory=default_work_dir)
    transport_port: int | None = None
    secure: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"nodes {self.nodes}: must be between 1 and {MAX_NODES}")
        last_http = self.port + self.nodes - 1
        first_transport = self.port + 100 if self.transport_port is None else self.transport_port
        if not 1 <= self.port <= last_http <= 65535:
            raise ValueError(f"port {self.port}: ports {self.port}-{last_http} are not all TCP ports")
        if not 1 <= first_transport <= first_transport + self.nodes - 1 <= 65535:
            raise ValueError(f"transport_port {first_transport}: not a TCP port range for {self.nodes} nodes")
        http = set(range(self.port, last_http + 1))
        if http & set(range(first_transport, first_transport + self.nodes)):
            raise ValueError(
                f"transport ports {first_transport}-{first_transport + self.nodes - 1} overlap the HTTP ports "
                f"{self.port}-{last_http}; pick another transport_port"
            )

    @property
    def dir(self) -> Path:
        return self.work_dir / f"cluster-{self.version}-{self.port}{SECURE_SUFFIX if self.secure else ''}"

    @property
    def node_heap_mb(self) -> int:
        return self.heap_mb if self.heap_mb is not None else (1024 if self.nodes == 1 else 512)

    def members(self) -> list[NodeSpec]:
        """One :class:`NodeSpec` per node (a single node for ``nodes == 1``)."""
        if self.nodes == 1:
            return [NodeSpec(self.version, self.port, self.node_heap_mb, self.work_dir, secure=self.secure)]
        first = self.port + 100 if self.transport_port is None else self.transport_port
        seeds = tuple(range(first, first + self.nodes))
        return [
            NodeSpec(
                self.version, self.port + i, self.node_heap_mb, self.work_dir, Member(i + 1, seeds[i], seeds, self.dir), self.secure
            )
            for i in range(self.nodes)
        ]

    @property
    def url(self) -> str:
        return self.members()[0].url

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members()]


def recorded_cluster(version: str, port: int, work_dir: Path) -> ClusterSpec:
    """The cluster that `up` started with HTTP port ``port`` (from its ``cluster.json``; secured or
    not), else the single node (secured or not) that runs there, else one unsecured node."""
    for secure in (False, True):
        manifest = ClusterSpec(1, version, port, work_dir=work_dir, secure=secure).dir / CLUSTER_MANIFEST
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
            spec = ClusterSpec(
                int(recorded["nodes"]), version, port, int(recorded["heap_mb"]), work_dir, int(recorded["transport_port"]), secure
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if any(read_pid(member) is not None for member in spec.members()):
            return spec
    single = ClusterSpec(1, version, port, work_dir=work_dir, secure=True)
    if read_pid(single.members()[0]) is not None:
        return single
    return ClusterSpec(1, version, port, work_dir=work_dir)


def up_cluster(cluster: ClusterSpec, timeout: float = 300.0, progress: Progress | None = None) -> list[NodeStatus]:
    """Start every node of ``cluster`` that is not running; return once all have joined and the
    health is green or yellow. One node is exactly :func:`~lrt_rerank.ops.opensearch.launch.up`."""
    if cluster.nodes == 1:
        return [up(cluster.members()[0], timeout, progress)]
    say = progress or (lambda _message: None)
    cluster.work_dir.mkdir(parents=True, exist_ok=True)
    members = cluster.members()
    with locked(cluster.work_dir / "lock"):
        java_home = find_java_home(cluster.version)
        cluster.dir.mkdir(parents=True, exist_ok=True)
        first_transport = members[0].member.transport_port  # type: ignore[union-attr]
        manifest = {"nodes": cluster.nodes, "heap_mb": cluster.node_heap_mb, "transport_port": first_transport, "secure": cluster.secure}
        (cluster.dir / CLUSTER_MANIFEST).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
        started = time.monotonic()
        procs = [start(member, java_home, say) for member in members]
        for member, proc in zip(members, procs, strict=True):
            wait_started(member, proc, java_home, say, started + timeout, cluster.nodes)
        say(f"{cluster.nodes} nodes are up after {time.monotonic() - started:.1f} s")
        return [status(member) for member in members]


def down_cluster(cluster: ClusterSpec, timeout: float = 60.0) -> int:
    """Stop every running node of ``cluster`` (the last one first); return how many were running."""
    return sum(down(member, timeout) for member in reversed(cluster.members()))


@dataclass(frozen=True)
class ClusterStatus:
    """Every node's status, and the cluster as a running node sees it."""

    nodes: list[NodeStatus]
    health: str | None
    """Cluster health as any running node reports it; None when none answers."""
    joined: list[str]
    """Names of the nodes in the cluster, as a running node sees it."""
    cluster_manager: str | None
    connection: dict[str, object] = field(default_factory=dict)
    """How a client reaches it: ``url``, and for a secured cluster ``user``, ``password_file`` and
    ``ca_certs`` (paths; the password itself is never reported)."""

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def to_json(self) -> dict[str, object]:
        return {
            **self.connection,
            "health": self.health,
            "joined": self.joined,
            "cluster_manager": self.cluster_manager,
            "nodes": [node.to_json() for node in self.nodes],
        }


def cluster_status(cluster: ClusterSpec) -> ClusterStatus:
    """Every node's :class:`NodeStatus`, and the cluster's health and members seen from a live node."""
    specs = cluster.members()
    nodes = [status(member) for member in specs]
    connection = connection_json(specs[0]) if cluster.secure else {"url": cluster.url}
    for spec, node in zip(specs, nodes, strict=True):
        if node.version is None:
            continue
        try:
            health = str(get_json(spec, "/_cluster/health", 5.0)["status"])
            state = get_json(spec, "/_cluster/state/nodes,cluster_manager_node", 5.0)
        except (OSError, ValueError, KeyError):
            continue
        members = state.get("nodes", {})
        manager = members.get(state.get("cluster_manager_node"), {}).get("name")
        return ClusterStatus(nodes, health, sorted(str(m.get("name")) for m in members.values()), manager, connection)
    return ClusterStatus(nodes, None, [], None, connection)


def rerank_model_state(cluster: ClusterSpec) -> dict[str, object] | None:
    """The deploy state of the model behind the rerank search pipeline of a running cluster
    (:class:`lrt_rerank.opensearch.ml_model.ModelReadiness` as JSON); None when the pipeline is not
    installed; ``{"error": ...}`` when no node answers the question."""
    from opensearchpy.exceptions import TransportError

    from lrt_rerank.opensearch.client import ClusterAuthError, connect
    from lrt_rerank.opensearch.pipeline import PipelineError, rerank_model_readiness
    from lrt_rerank.ops.opensearch.security import admin_settings

    try:
        client = connect(admin_settings(cluster.members()[0]) if cluster.secure else cluster.url)
    except (ClusterAuthError, OSError) as exc:
        return {"error": str(exc)}
    try:
        ready = rerank_model_readiness(client)
    except (PipelineError, TransportError) as exc:
        return {"error": str(exc)}
    finally:
        client.close()
    return None if ready is None else {**ready.to_json(), "summary": ready.describe()}
