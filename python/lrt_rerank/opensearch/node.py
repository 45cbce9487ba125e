"""A local OpenSearch node, or a cluster of several on 127.0.0.1, built only from Maven Central artifacts.

``up`` resolves the artifacts listed in the packaged ``assets/pom.xml`` with Maven (cached in a local
repository under the work directory), assembles a node home once, and starts it:

* core: ``org.opensearch.distribution.integ-test-zip:opensearch:<v>`` (no JDK, no security
  plugin: plain HTTP), run on the JDK named by ``OPENSEARCH_JAVA_HOME``/``JAVA_HOME`` or the
  ``java`` on PATH;
* the ``lang-painless`` and ``analysis-common`` modules, which are published only as jars:
  the jars plus the descriptor (and security policy) kept in ``assets/modules/<name>/``;
* plugins job-scheduler, ml-commons, k-NN and neural-search (``<v>.0`` zips) installed with
  ``opensearch-plugin install --batch`` in dependency order. k-NN from Maven carries no native
  engines, so vectors must use the ``lucene`` engine.

OpenSearch refuses to run as root; under root the node home is handed to an unprivileged
user (``nobody`` unless ``LRT_OPENSEARCH_USER`` names another) and the JVM runs as that user.

A cluster (:class:`ClusterSpec`, ``lrt-rerank opensearch up --nodes 2``) runs every node from
that same assembled home: each node has its own config directory (``OPENSEARCH_PATH_CONF``),
data and log paths, node name, HTTP port (``port``, ``port + 1``, ...) and transport port
(``transport_port``, ``transport_port + 1``, ...), and finds the others through
``discovery.seed_hosts``. All nodes are cluster-manager eligible and hold data. A single node
(the default) runs with ``discovery.type: single-node`` from the home itself, as before.

Layout under the work directory (``$LRT_OPENSEARCH_WORK``; else ``/var/tmp/lrt-rerank-opensearch``
under root, where the unprivileged user can reach it, and ``<LRT_RERANK_HOME or ~/.cache/lrt-rerank>/opensearch``
otherwise)::

    m2/                      Maven local repository (downloads, reused by every run)
    node-<version>/          the assembled node home (the single node's data/ and logs/ inside it)
    cluster-<version>-<port>/node-<i>/
                             cluster node i: config/, data/, logs/, opensearch.pid
    cluster-<version>-<port>/cluster.json
                             how many nodes that cluster has (read by `status`/`down`)
    mvn-<version>.log        output of the last artifact resolution
    lock                     serialises concurrent ``up``/``down`` calls
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrt_rerank.opensearch.templates import assets_dir

DEFAULT_VERSION = "2.19.6"
"""Newest 2.19 release for which core and all four plugin zips are on Maven Central."""

CLUSTER_NAME = "lrt-rerank"
NODE_NAME = "lrt-node-1"
PLUGINS = ("opensearch-job-scheduler", "opensearch-ml-plugin", "opensearch-knn", "neural-search")
"""Plugin zip artifactIds in install order: ml-commons extends job-scheduler, k-NN extends
lang-painless, neural-search extends k-NN. (neural-search's artifactId has no ``opensearch-``
prefix on Maven Central.)"""
JAR_MODULES: dict[str, tuple[str, ...]] = {
    "lang-painless": (
        "lang-painless",
        "opensearch-scripting-painless-spi",
        "antlr4-runtime",
        "asm",
        "asm-util",
        "asm-tree",
        "asm-commons",
        "asm-analysis",
    ),
    "analysis-common": ("analysis-common",),
}
"""Modules assembled from jars: module name -> artifactIds of its jars. Their descriptors live in
``assets/modules/<name>/``. The integ-test-zip ships transport-netty4 only; k-NN needs
lang-painless, and the index's analyzer (pattern tokenizer, length filter) needs analysis-common."""
INSTALLED_MARKER = ".lrt-installed.json"
PID_FILE = "opensearch.pid"
MIN_JAVA = 11
_ERROR_LINE = re.compile(r"\]\[(ERROR|FATAL)|^Caused by|Exception[:\[]")

Progress = Callable[[str], None]


class NodeError(RuntimeError):
    """The node could not be prepared or started; ``log_path`` points at the log to read."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(f"{message}\n  log: {log_path}" if log_path is not None else message)
        self.log_path = log_path


ROOT_WORK_DIR = Path("/var/tmp/lrt-rerank-opensearch")


def default_work_dir() -> Path:
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
    home); a node of a cluster gets it from :meth:`ClusterSpec.members`.
    """

    version: str = DEFAULT_VERSION
    port: int = 9200
    heap_mb: int = 1024
    work_dir: Path = field(default_factory=default_work_dir)
    member: Member | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.version):
            raise ValueError(f"OpenSearch version {self.version!r}: expected MAJOR.MINOR.PATCH, e.g. {DEFAULT_VERSION}")
        if not 128 <= self.heap_mb <= 1024:
            raise ValueError(f"heap_mb {self.heap_mb}: must be between 128 and 1024")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: not a TCP port")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.member.name if self.member is not None else NODE_NAME

    @property
    def home(self) -> Path:
        """The assembled distribution (shared by every node of a cluster)."""
        return self.work_dir / f"node-{self.version}"

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
        return self.work_dir / f"cluster-{self.version}-{self.port}"

    @property
    def node_heap_mb(self) -> int:
        return self.heap_mb if self.heap_mb is not None else (1024 if self.nodes == 1 else 512)

    def members(self) -> list[NodeSpec]:
        """One :class:`NodeSpec` per node (a single node for ``nodes == 1``)."""
        if self.nodes == 1:
            return [NodeSpec(self.version, self.port, self.node_heap_mb, self.work_dir)]
        first = self.port + 100 if self.transport_port is None else self.transport_port
        seeds = tuple(range(first, first + self.nodes))
        return [
            NodeSpec(self.version, self.port + i, self.node_heap_mb, self.work_dir, Member(i + 1, seeds[i], seeds, self.dir))
            for i in range(self.nodes)
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members()]


def recorded_cluster(version: str, port: int, work_dir: Path) -> ClusterSpec:
    """The cluster that `up` started with HTTP port ``port`` (from its ``cluster.json``), else one node."""
    manifest = ClusterSpec(1, version, port, work_dir=work_dir).dir / CLUSTER_MANIFEST
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        spec = ClusterSpec(
            int(recorded["nodes"]), version, port, int(recorded["heap_mb"]), work_dir, int(recorded["transport_port"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ClusterSpec(1, version, port, work_dir=work_dir)
    if any(_read_pid(member) is not None for member in spec.members()):
        return spec
    return ClusterSpec(1, version, port, work_dir=work_dir)


@dataclass(frozen=True)
class NodeStatus:
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


# ----------------------------------------------------------------------------------- public
def up(spec: NodeSpec | None = None, timeout: float = 300.0, progress: Progress | None = None) -> NodeStatus:
    """Start the node unless it already runs; return once cluster health is green or yellow.

    Idempotent: a node already answering on the port with our cluster name is reused. A node of
    a cluster (``spec.member``) rejoins the cluster of the others; a cluster's first start goes
    through :func:`up_cluster`, which starts every node before waiting.
    Raises :class:`NodeError` (with the log path) when Java or Maven is missing, the artifacts
    cannot be resolved, the port belongs to another server, or the node does not come up.
    """
    spec = spec or NodeSpec()
    say = progress or (lambda _message: None)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    with _locked(spec.work_dir / "lock"):
        started = time.monotonic()
        proc = _start(spec, None, say)
        _wait_healthy(spec, proc, started + timeout)
        if proc is not None:
            say(f"{spec.name} is up after {time.monotonic() - started:.1f} s")
        return status(spec)


def up_cluster(cluster: ClusterSpec, timeout: float = 300.0, progress: Progress | None = None) -> list[NodeStatus]:
    """Start every node of ``cluster`` that is not running; return once all have joined and the
    health is green or yellow. One node is exactly :func:`up`."""
    if cluster.nodes == 1:
        return [up(cluster.members()[0], timeout, progress)]
    say = progress or (lambda _message: None)
    cluster.work_dir.mkdir(parents=True, exist_ok=True)
    members = cluster.members()
    with _locked(cluster.work_dir / "lock"):
        java_home = find_java_home()
        cluster.dir.mkdir(parents=True, exist_ok=True)
        first_transport = members[0].member.transport_port  # type: ignore[union-attr]
        manifest = {"nodes": cluster.nodes, "heap_mb": cluster.node_heap_mb, "transport_port": first_transport}
        (cluster.dir / CLUSTER_MANIFEST).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
        started = time.monotonic()
        procs = [_start(member, java_home, say) for member in members]
        for member, proc in zip(members, procs, strict=True):
            _wait_healthy(member, proc, started + timeout, nodes=cluster.nodes)
        say(f"{cluster.nodes} nodes are up after {time.monotonic() - started:.1f} s")
        return [status(member) for member in members]


def down(spec: NodeSpec | None = None, timeout: float = 60.0) -> bool:
    """Stop the node started by :func:`up`; return False if it was not running."""
    spec = spec or NodeSpec()
    if not spec.work_dir.is_dir():
        return False
    with _locked(spec.work_dir / "lock"):
        pid = _read_pid(spec)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10.0)
                break
            time.sleep(0.2)
        spec.pid_file.unlink(missing_ok=True)
        return True


def down_cluster(cluster: ClusterSpec, timeout: float = 60.0) -> int:
    """Stop every running node of ``cluster`` (the last one first); return how many were running."""
    return sum(down(member, timeout) for member in reversed(cluster.members()))


def kill(spec: NodeSpec) -> int | None:
    """SIGKILL the node (a crash, for fault tests); return its pid, or None if it was not running."""
    pid = _read_pid(spec)
    if pid is None:
        return None
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 30.0)
    return pid


def pid(spec: NodeSpec) -> int | None:
    """The running node's pid from its pid file (no request to the node), None when it is not running."""
    return _read_pid(spec)


def status(spec: NodeSpec | None = None) -> NodeStatus:
    """Whether our node runs (pid file + live process), and its health if it answers."""
    spec = spec or NodeSpec()
    pid = _read_pid(spec)
    info = _root_info(spec.url)
    health = None
    if info is not None:
        try:
            health = str(_get_json(f"{spec.url}/_cluster/health", 5.0)["status"])
        except (OSError, ValueError, KeyError):
            health = None
    return NodeStatus(
        running=pid is not None,
        name=spec.name,
        url=spec.url,
        pid=pid,
        health=health,
        version=str(info["version"]["number"]) if info is not None else None,
        home=spec.node_dir,
        log_path=spec.log_path,
    )


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[NodeStatus]
    health: str | None
    """Cluster health as any running node reports it; None when none answers."""
    joined: list[str]
    """Names of the nodes in the cluster, as a running node sees it."""
    cluster_manager: str | None

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def to_json(self) -> dict[str, object]:
        return {
            "health": self.health,
            "joined": self.joined,
            "cluster_manager": self.cluster_manager,
            "nodes": [node.to_json() for node in self.nodes],
        }


def cluster_status(cluster: ClusterSpec) -> ClusterStatus:
    """Every node's :class:`NodeStatus`, and the cluster's health and members seen from a live node."""
    nodes = [status(member) for member in cluster.members()]
    for node in nodes:
        if node.version is None:
            continue
        try:
            health = str(_get_json(f"{node.url}/_cluster/health", 5.0)["status"])
            state = _get_json(f"{node.url}/_cluster/state/nodes,cluster_manager_node", 5.0)
        except (OSError, ValueError, KeyError):
            continue
        members = state.get("nodes", {})
        manager = members.get(state.get("cluster_manager_node"), {}).get("name")
        return ClusterStatus(nodes, health, sorted(str(m.get("name")) for m in members.values()), manager)
    return ClusterStatus(nodes, None, [], None)


def find_java_home() -> Path:
    """The JDK to run OpenSearch on: $OPENSEARCH_JAVA_HOME, $JAVA_HOME, or the ``java`` on PATH."""
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(variable)
        if value:
            home = Path(value)
            if not (home / "bin" / "java").is_file():
                raise NodeError(f"${variable}={value}: no bin/java there")
            _check_java_version(home, f"${variable}")
            return home
    java = shutil.which("java")
    if java is None:
        raise NodeError(
            f"Java not found: install a JDK >= {MIN_JAVA} (Debian: apt-get install -y openjdk-17-jdk-headless) "
            "or set OPENSEARCH_JAVA_HOME"
        )
    home = Path(java).resolve().parent.parent
    _check_java_version(home, java)
    return home


def _start(spec: NodeSpec, java_home: Path | None, say: Progress) -> subprocess.Popen[bytes] | None:
    """Launch the node (holding the work-dir lock) on ``java_home`` (default: :func:`find_java_home`);
    None when it already answers on its port."""
    info = _root_info(spec.url)
    if info is not None:
        _check_ours(spec, info)
        say(f"OpenSearch {info['version']['number']} already running at {spec.url}")
        return None
    stale = _read_pid(spec)
    if stale is not None:
        raise NodeError(
            f"a node from {spec.node_dir} already runs (pid {stale}) but does not answer on {spec.url}; "
            "stop it with `lrt-rerank opensearch down` (and the same --port it was started with) first",
            spec.log_path,
        )
    run_as = _service_user()
    if run_as is not None:
        check_traversable(spec.node_dir, run_as)
    java_home = java_home or find_java_home()
    _install(spec, java_home, say)
    _write_config(spec)
    if run_as is not None:
        _chown_tree(spec.home, run_as)
        if spec.node_dir != spec.home:
            _chown_tree(spec.node_dir, run_as)
    say(f"starting {spec.name} (OpenSearch {spec.version}) on {spec.url} (heap {spec.heap_mb} MB, log {spec.log_path})")
    return _launch(spec, java_home, run_as)


# ------------------------------------------------------------------------------- assembling
def _install(spec: NodeSpec, java_home: Path, say: Progress) -> None:
    """Assemble the node home once per (version, assets); reuse it (and its data) afterwards."""
    fingerprint = _install_fingerprint(spec)
    marker = spec.home / INSTALLED_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                return
        except (OSError, ValueError):
            pass
        say(f"{spec.home}: assembled from other inputs; rebuilding it (its data is discarded)")
    artifacts = resolve_artifacts(spec, say)
    say(f"assembling the node in {spec.home}")
    staging = Path(tempfile.mkdtemp(prefix=f"node-{spec.version}.", dir=spec.work_dir))
    try:
        home = _unpack_core(artifacts["opensearch"], staging, spec.version)
        for module in JAR_MODULES:
            _add_jar_module(home, module, artifacts, spec.version)
        env = _java_env(java_home)
        for plugin in PLUGINS:
            say(f"installing plugin {plugin}")
            command = [str(home / "bin" / "opensearch-plugin"), "install", "--batch", artifacts[plugin].resolve().as_uri()]
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                log = spec.work_dir / f"plugin-install-{plugin}.log"
                log.write_text(result.stdout + result.stderr, encoding="utf-8")
                raise NodeError(f"installing {plugin} failed (exit {result.returncode})", log)
        (home / INSTALLED_MARKER).write_text(
            json.dumps({"fingerprint": fingerprint, "version": spec.version, "plugins": list(PLUGINS)}, indent=2) + "\n",
            encoding="utf-8",
        )
        if spec.home.exists():
            shutil.rmtree(spec.home)
        home.rename(spec.home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_artifacts(spec: NodeSpec, say: Progress) -> dict[str, Path]:
    """Resolve every artifact in ``opensearch/pom.xml`` into the local Maven repository.

    Returns artifactId -> file in that repository (nothing is copied). Raises
    :class:`NodeError` with the Maven log when ``mvn`` is missing or resolution fails.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise NodeError("Maven not found: install it (Debian: apt-get install -y maven) so `mvn` is on PATH")
    log = spec.work_dir / f"mvn-{spec.version}.log"
    classpath_file = spec.work_dir / f"artifacts-{spec.version}.txt"
    command = [
        mvn,
        "--batch-mode",
        "--no-transfer-progress",
        "-f",
        str(assets_dir() / "pom.xml"),
        f"-Dmaven.repo.local={spec.work_dir / 'm2'}",
        f"-Dopensearch.version={spec.version}",
        "dependency:build-classpath",
        f"-Dmdep.outputFile={classpath_file}",
    ]
    say(f"resolving OpenSearch {spec.version} artifacts from Maven Central (cache {spec.work_dir / 'm2'})")
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=_java_env(find_java_home()), check=False)
    if result.returncode != 0 or not classpath_file.is_file():
        raise NodeError(f"Maven could not resolve the OpenSearch {spec.version} artifacts (exit {result.returncode})", log)
    files = [Path(p) for p in classpath_file.read_text(encoding="utf-8").strip().split(os.pathsep) if p]
    by_name: dict[str, Path] = {}
    for path in files:
        # <repo>/<group path>/<artifactId>/<version>/<artifactId>-<version>.<ext>
        by_name[path.parent.parent.name] = path
    wanted = ("opensearch", *PLUGINS, *(jar for jars in JAR_MODULES.values() for jar in jars))
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise NodeError(f"Maven resolved no file for {', '.join(missing)} (see {classpath_file})", log)
    return by_name


def _unpack_core(archive: Path, staging: Path, version: str) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)
        # zipfile drops the Unix mode bits: restore them (bin/ scripts must stay executable).
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(staging / info.filename, mode)
    home = staging / f"opensearch-{version}"
    if not (home / "bin" / "opensearch").is_file():
        raise NodeError(f"{archive}: no opensearch-{version}/bin/opensearch inside; not the integ-test-zip distribution")
    return home


def _add_jar_module(home: Path, module: str, artifacts: dict[str, Path], version: str) -> None:
    target = home / "modules" / module
    target.mkdir(parents=True)
    for name in JAR_MODULES[module]:
        shutil.copy2(artifacts[name], target / artifacts[name].name)
    for template in sorted((assets_dir() / "modules" / module).iterdir()):
        text = template.read_text(encoding="utf-8")
        (target / template.name).write_text(text.replace("@OPENSEARCH_VERSION@", version), encoding="utf-8")


def _install_fingerprint(spec: NodeSpec) -> str:
    digest = hashlib.sha256(spec.version.encode())
    digest.update((assets_dir() / "pom.xml").read_bytes())
    for template in sorted((assets_dir() / "modules").rglob("*")):
        if template.is_file():
            digest.update(template.relative_to(assets_dir()).as_posix().encode())
            digest.update(template.read_bytes())
    digest.update(",".join(PLUGINS).encode())
    return digest.hexdigest()


def _write_config(spec: NodeSpec) -> None:
    """opensearch.yml and the heap options; rewritten on every start (port/heap may change).

    A cluster node gets its own config directory (a copy of the home's on its first start) with
    its name, ports, data and log paths and the discovery settings.
    """
    lines = [
        "# Written by lrt-rerank (python/lrt_rerank/opensearch/node.py) on every `opensearch up`.",
        f"cluster.name: {CLUSTER_NAME}",
        f"node.name: {spec.name}",
        "network.host: 127.0.0.1",
        f"http.port: {spec.port}",
    ]
    if spec.member is None:
        lines.append("discovery.type: single-node")
    else:
        if not spec.config_dir.is_dir():
            spec.node_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(spec.home / "config", spec.config_dir)
        for sub in ("data", "logs"):
            (spec.node_dir / sub).mkdir(exist_ok=True)
        seeds = ", ".join(f'"127.0.0.1:{port}"' for port in spec.member.seed_transport_ports)
        managers = ", ".join(f'"lrt-node-{i + 1}"' for i in range(len(spec.member.seed_transport_ports)))
        lines += [
            f"transport.port: {spec.member.transport_port}",
            f"discovery.seed_hosts: [{seeds}]",
            f"cluster.initial_cluster_manager_nodes: [{managers}]",
            f"path.data: {spec.node_dir / 'data'}",
            f"path.logs: {spec.node_dir / 'logs'}",
        ]
    lines += ["cluster.routing.allocation.disk.threshold_enabled: false", ""]
    (spec.config_dir / "opensearch.yml").write_text("\n".join(lines), encoding="utf-8")
    options = spec.config_dir / "jvm.options.d"
    options.mkdir(exist_ok=True)
    (options / "lrt-heap.options").write_text(f"-Xms{spec.heap_mb}m\n-Xmx{spec.heap_mb}m\n", encoding="utf-8")


# ---------------------------------------------------------------------------------- running
def _launch(spec: NodeSpec, java_home: Path, run_as: pwd.struct_passwd | None) -> subprocess.Popen[bytes]:
    spec.pid_file.unlink(missing_ok=True)
    log_dir = spec.node_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    env = _java_env(java_home)
    env.pop("OPENSEARCH_JAVA_OPTS", None)  # heap comes from jvm.options.d; an inherited -Xmx would override it
    env["OPENSEARCH_PATH_CONF"] = str(spec.config_dir)
    with spec.startup_log.open("wb") as out:
        try:
            return subprocess.Popen(
                [str(spec.home / "bin" / "opensearch"), "-p", str(spec.pid_file)],
                cwd=spec.node_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=run_as.pw_uid if run_as else None,
                group=run_as.pw_gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except OSError as exc:
            raise NodeError(f"could not start {spec.home / 'bin' / 'opensearch'}: {exc}", spec.startup_log) from exc


def _wait_healthy(spec: NodeSpec, proc: subprocess.Popen[bytes] | None, deadline: float, nodes: int = 1) -> None:
    """Until the node reports green/yellow health with at least ``nodes`` nodes in the cluster."""
    while True:
        if proc is not None and proc.poll() is not None:
            raise NodeError(
                f"OpenSearch exited with code {proc.returncode} during startup:\n{_log_tail(spec)}",
                spec.log_path if spec.log_path.is_file() else spec.startup_log,
            )
        try:
            health = _get_json(f"{spec.url}/_cluster/health?wait_for_status=yellow&wait_for_nodes=%3E%3D{nodes}&timeout=2s", 10.0)
            if health.get("status") in ("green", "yellow") and int(health.get("number_of_nodes", 0)) >= nodes:
                return
        except (OSError, ValueError):
            time.sleep(0.5)
        if time.monotonic() > deadline:
            raise NodeError(
                f"OpenSearch did not reach green/yellow health at {spec.url} in time:\n{_log_tail(spec)}",
                spec.log_path if spec.log_path.is_file() else spec.startup_log,
            )


def _log_tail(spec: NodeSpec, lines: int = 25) -> str:
    for path in (spec.log_path, spec.startup_log):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            errors = [line for line in text if _ERROR_LINE.search(line)]
            return "\n".join((errors or text)[-lines:])
    return "(no log written)"


def _read_pid(spec: NodeSpec) -> int | None:
    try:
        pid = int(spec.pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) still answers kill(0): reap it if it is ours.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


# ---------------------------------------------------------------------------------- helpers
def _root_info(url: str) -> dict[str, Any] | None:
    try:
        info = _get_json(url + "/", 3.0)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "version" in info else None


def _check_ours(spec: NodeSpec, info: dict[str, Any]) -> None:
    name = info.get("cluster_name")
    if name != CLUSTER_NAME:
        raise NodeError(f"{spec.url} is already served by another cluster ({name!r}); stop it or pick another port")


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URL built here)
        data = json.loads(response.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return data


def _java_env(java_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["OPENSEARCH_JAVA_HOME"] = str(java_home)
    env["JAVA_HOME"] = str(java_home)
    return env


def _check_java_version(home: Path, origin: str) -> None:
    result = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if match is None:
        raise NodeError(f"{origin}: `java -version` printed no version: {result.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise NodeError(f"{origin}: Java {major} is too old; OpenSearch 2.19 needs Java >= {MIN_JAVA} (17 or 21 recommended)")


def _service_user() -> pwd.struct_passwd | None:
    """Under root, the unprivileged account the JVM runs as (OpenSearch refuses root)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("LRT_OPENSEARCH_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise NodeError(f"running as root and user {name!r} does not exist; set LRT_OPENSEARCH_USER to an unprivileged user") from None


def check_traversable(home: Path, user: pwd.struct_passwd) -> None:
    """The JVM runs as ``user``: every existing directory above the node home must let it pass."""
    for directory in reversed(home.resolve().parents):
        if not directory.exists():
            break  # the rest is created by `up`, with the usual permissions
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            raise NodeError(
                f"{directory} (mode {oct(st.st_mode & 0o777)}) does not let user {user.pw_name!r}, which runs OpenSearch "
                "under root, reach the node home; set LRT_OPENSEARCH_WORK (or --work-dir) to a directory below "
                "world-traversable ones, e.g. /var/tmp/lrt-rerank-opensearch"
            )


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    if root.stat().st_uid == user.pw_uid:
        return  # handed over when it was assembled; later writes are config files it only reads
    for path in _walk(root):
        os.lchown(path, user.pw_uid, user.pw_gid)


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            yield Path(directory) / name


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
