"""What a node is: its version, ports, heap and files (:class:`NodeSpec`), its status, and its errors.

Layout under the work directory (``$LRT_OPENSEARCH_WORK``; else ``/var/tmp/lrt-rerank-opensearch``
under root, where the unprivileged user can reach it, and ``<LRT_RERANK_HOME or ~/.cache/lrt-rerank>/opensearch``
otherwise)::

    m2/                      Maven local repository (downloads, reused by every run)
    node-<version>/          the assembled node home (the single node's data/ and logs/ inside it)
    node-<version>-secure/   the same with the security plugin (`up --secure`): TLS, internal users
    node-<version>-secure-credentials/
                             the secured single node's CA, admin certificate and admin password (0600)
    cluster-<version>-<port>/node-<i>/
                             cluster node i: config/, data/, logs/, opensearch.pid
    cluster-<version>-<port>/cluster.json
                             how many nodes that cluster has (read by `status`/`down`)
    cluster-<version>-<port>-secure/
                             a secured cluster: node-<i>/ as above, credentials/ (CA, admin password)
    mvn-<version>.log        output of the last artifact resolution
    lock                     serialises concurrent ``up``/``down`` calls
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VERSION = "2.19.6"
"""Newest 2.19 release for which core and all four plugin zips are on Maven Central."""
V3_VERSION = "3.5.0"
"""The 3.x release assembled and tested: core and k-NN only (neural-search, ml-commons and
job-scheduler 3.x are not on Maven Central)."""

CLUSTER_NAME = "lrt-rerank"
NODE_NAME = "lrt-node-1"
PID_FILE = "opensearch.pid"
ROOT_WORK_DIR = Path("/var/tmp/lrt-rerank-opensearch")
SECURE_SUFFIX = "-secure"

Progress = Callable[[str], None]
"""Receives one line of progress at a time (e.g. printed to stderr by the CLI)."""


class NodeError(RuntimeError):
    """The node could not be prepared or started; ``log_path`` points at the log to read."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(f"{message}\n  log: {log_path}" if log_path is not None else message)
        self.log_path = log_path


def major_version(version: str) -> int:
    """The MAJOR of ``MAJOR.MINOR.PATCH``."""
    return int(version.split(".", 1)[0])


def default_work_dir() -> Path:
    """``$LRT_OPENSEARCH_WORK``, else the root or per-user default described above."""
    override = os.environ.get("LRT_OPENSEARCH_WORK")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        # root's home is closed to the unprivileged user that runs the JVM
        return ROOT_WORK_DIR
    base = os.environ.get("LRT_RERANK_HOME")
    return (Path(base) if base else Path.home() / ".cache" / "lrt-rerank") / "opensearch"


@dataclass(frozen=True)
class Member:
    """Where a node sits in a cluster of several: its number, transport port and the seed list."""

    ordinal: int
    """1-based; the node is called ``lrt-node-<ordinal>``."""
    transport_port: int
    seed_transport_ports: tuple[int, ...]
    """Transport ports of every node of the cluster (this one included)."""
    cluster_dir: Path

    @property
    def name(self) -> str:
        return f"lrt-node-{self.ordinal}"


@dataclass(frozen=True)
class NodeSpec:
    """What node to run: OpenSearch version, loopback HTTP port, heap, and where files live.

    ``member`` is None for a single node (``discovery.type: single-node``, files inside the
    home); a node of a cluster gets it from :meth:`~lrt_rerank.ops.opensearch.cluster.ClusterSpec.members`.
    """

    version: str = DEFAULT_VERSION
    port: int = 9200
    heap_mb: int = 1024
    work_dir: Path = field(default_factory=default_work_dir)
    member: Member | None = None
    secure: bool = False
    """With the security plugin: TLS on HTTP and transport, basic authentication (``up --secure``)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.version):
            raise ValueError(f"OpenSearch version {self.version!r}: expected MAJOR.MINOR.PATCH, e.g. {DEFAULT_VERSION}")
        if not 128 <= self.heap_mb <= 1024:
            raise ValueError(f"heap_mb {self.heap_mb}: must be between 128 and 1024")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: not a TCP port")

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.member.name if self.member is not None else NODE_NAME

    @property
    def home(self) -> Path:
        """The assembled distribution (shared by every node of a cluster)."""
        return self.work_dir / f"node-{self.version}{SECURE_SUFFIX if self.secure else ''}"

    @property
    def credentials_dir(self) -> Path:
        """A secured node's CA, admin certificate and password (read by clients, not by the JVM)."""
        if self.member is None:
            return self.work_dir / f"node-{self.version}{SECURE_SUFFIX}-credentials"
        return self.member.cluster_dir / "credentials"

    @property
    def node_dir(self) -> Path:
        """This node's own files: the home for a single node, ``cluster-*/node-<i>`` in a cluster."""
        if self.member is None:
            return self.home
        return self.member.cluster_dir / f"node-{self.member.ordinal}"

    @property
    def config_dir(self) -> Path:
        return self.node_dir / "config"

    @property
    def log_path(self) -> Path:
        """The node's main log (OpenSearch names it after the cluster)."""
        return self.node_dir / "logs" / f"{CLUSTER_NAME}.log"

    @property
    def startup_log(self) -> Path:
        """stdout/stderr of the launcher: JVM errors that happen before logging starts."""
        return self.node_dir / "logs" / "startup.out"

    @property
    def pid_file(self) -> Path:
        return self.node_dir / PID_FILE


@dataclass(frozen=True)
class NodeStatus:
    """One node as :func:`~lrt_rerank.ops.opensearch.launch.status` found it."""

    running: bool
    name: str
    url: str
    pid: int | None
    health: str | None
    version: str | None
    home: Path
    log_path: Path

    def to_json(self) -> dict[str, object]:
        return {
            "running": self.running,
            "name": self.name,
            "url": self.url,
            "pid": self.pid,
            "health": self.health,
            "version": self.version,
            "home": str(self.home),
            "log": str(self.log_path),
        }
