"""Starting, watching and stopping one node: ``up``, ``down``, ``kill``, ``pid`` and ``status``.

``up`` reuses a node that already answers on its port with our cluster name; otherwise it
assembles the home if needed (:mod:`~lrt_rerank.ops.opensearch.assemble`), writes the node's
config, hands the files to the service user under root (:mod:`~lrt_rerank.ops.opensearch.privileges`),
launches ``bin/opensearch`` detached, and waits for green or yellow health. The node's pid file
is the record that ``down``/``status`` read; a lock file in the work directory serialises
concurrent ``up``/``down`` calls.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lrt_rerank.ops.opensearch.assemble import install, write_config
from lrt_rerank.ops.opensearch.java import find_java_home, java_env
from lrt_rerank.ops.opensearch.privileges import check_traversable, chown_tree, service_user
from lrt_rerank.ops.opensearch.security import ensure_credentials, open_url
from lrt_rerank.ops.opensearch.spec import CLUSTER_NAME, NodeError, NodeSpec, NodeStatus, Progress

LAUNCHER_FAILURE = "starting java failed"
"""What OpenSearch's launcher prints when the JVM it probes for the final options does not start."""
_ERROR_LINE = re.compile(r"\]\[(ERROR|FATAL)|^Caused by|Exception[:\[]")


def up(spec: NodeSpec | None = None, timeout: float = 300.0, progress: Progress | None = None) -> NodeStatus:
    """Start the node unless it already runs; return once cluster health is green or yellow.

    Idempotent: a node already answering on the port with our cluster name is reused. A node of
    a cluster (``spec.member``) rejoins the cluster of the others; a cluster's first start goes
    through :func:`~lrt_rerank.ops.opensearch.cluster.up_cluster`, which starts every node before waiting.
    Raises :class:`NodeError` (with the log path) when Java or Maven is missing, the artifacts
    cannot be resolved, the port belongs to another server, or the node does not come up.
    """
    spec = spec or NodeSpec()
    say = progress or (lambda _message: None)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    with locked(spec.work_dir / "lock"):
        started = time.monotonic()
        proc = start(spec, None, say)
        proc = wait_started(spec, proc, None, say, started + timeout)
        if proc is not None:
            say(f"{spec.name} is up after {time.monotonic() - started:.1f} s")
        return status(spec)


def down(spec: NodeSpec | None = None, timeout: float = 60.0) -> bool:
    """Stop the node started by :func:`up`; return False if it was not running."""
    spec = spec or NodeSpec()
    if not spec.work_dir.is_dir():
        return False
    with locked(spec.work_dir / "lock"):
        pid = read_pid(spec)
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


def kill(spec: NodeSpec) -> int | None:
    """SIGKILL the node (a crash, for fault tests); return its pid, or None if it was not running."""
    pid = read_pid(spec)
    if pid is None:
        return None
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 30.0)
    return pid


def pid(spec: NodeSpec) -> int | None:
    """The running node's pid from its pid file (no request to the node), None when it is not running."""
    return read_pid(spec)


def status(spec: NodeSpec | None = None) -> NodeStatus:
    """Whether our node runs (pid file + live process), and its health if it answers."""
    spec = spec or NodeSpec()
    pid = read_pid(spec)
    info = _root_info(spec)
    health = None
    if info is not None:
        try:
            health = str(get_json(spec, "/_cluster/health", 5.0)["status"])
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


def start(spec: NodeSpec, java_home: Path | None, say: Progress) -> subprocess.Popen[bytes] | None:
    """Launch the node (holding the work-dir lock) on ``java_home`` (default: :func:`find_java_home`);
    None when it already answers on its port."""
    info = _root_info(spec)
    if info is not None:
        _check_ours(spec, info)
        say(f"OpenSearch {info['version']['number']} already running at {spec.url}")
        return None
    stale = read_pid(spec)
    if stale is not None:
        raise NodeError(
            f"a node from {spec.node_dir} already runs (pid {stale}) but does not answer on {spec.url}; "
            "stop it with `lrt-rerank opensearch down` (and the same --port it was started with) first",
            spec.log_path,
        )
    java_home = java_home or find_java_home(spec.version)
    run_as = service_user()
    if run_as is not None:
        check_traversable(spec.node_dir, run_as)
    install(spec, java_home, say)
    if spec.secure:
        ensure_credentials(spec, java_home)
    write_config(spec, run_as)
    if run_as is not None:
        chown_tree(spec.home, run_as)
        if spec.node_dir != spec.home:
            chown_tree(spec.node_dir, run_as)
    say(f"starting {spec.name} (OpenSearch {spec.version}) on {spec.url} (heap {spec.heap_mb} MB, log {spec.log_path})")
    return _launch(spec, java_home, run_as)


def wait_started(
    spec: NodeSpec, proc: subprocess.Popen[bytes] | None, java_home: Path | None, say: Progress, deadline: float, nodes: int = 1
) -> subprocess.Popen[bytes] | None:
    """:func:`wait_healthy`, starting the node once more if OpenSearch's launcher could not start its JVM
    (seen once on a loaded CI machine), and saying why; a second failure is reported with its own
    output. Returns the process that came up (None when the node already ran)."""
    try:
        wait_healthy(spec, proc, deadline, nodes)
        return proc
    except NodeError:
        if proc is None or proc.poll() is None or not launcher_failed(spec):
            raise
    first = _log_tail(spec, 8).replace("\n", " | ")
    say(f"{spec.name}: OpenSearch's launcher could not start the JVM ({first}); starting it once more")
    time.sleep(2.0)
    proc = start(spec, java_home, say)
    wait_healthy(spec, proc, deadline, nodes)
    return proc


def wait_healthy(spec: NodeSpec, proc: subprocess.Popen[bytes] | None, deadline: float, nodes: int = 1) -> None:
    """Until the node reports green/yellow health with at least ``nodes`` nodes in the cluster."""
    while True:
        if proc is not None and proc.poll() is not None:
            raise NodeError(
                f"OpenSearch exited with code {proc.returncode} during startup:\n{_log_tail(spec)}",
                spec.log_path if spec.log_path.is_file() else spec.startup_log,
            )
        try:
            health = get_json(spec, f"/_cluster/health?wait_for_status=yellow&wait_for_nodes=%3E%3D{nodes}&timeout=2s", 10.0)
            if health.get("status") in ("green", "yellow") and int(health.get("number_of_nodes", 0)) >= nodes:
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise NodeError(
                    f"{spec.url} rejects the admin password in {spec.credentials_dir} (its security index was made with "
                    "another one); stop the node and delete its data, or restore that file",
                    spec.log_path,
                ) from None
            time.sleep(0.5)  # 503 while the security index is being initialised
        except (OSError, ValueError):
            time.sleep(0.5)
        if time.monotonic() > deadline:
            raise NodeError(
                f"OpenSearch did not reach green/yellow health at {spec.url} in time:\n{_log_tail(spec)}",
                spec.log_path if spec.log_path.is_file() else spec.startup_log,
            )


def read_pid(spec: NodeSpec) -> int | None:
    """The pid in the node's pid file if that process is alive, else None."""
    try:
        pid = int(spec.pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def get_json(spec: NodeSpec, path: str, timeout: float) -> dict[str, Any]:
    """GET ``path`` on the node (https and the admin's credentials when it is secured) and parse the JSON object it answers."""
    url = spec.url + path
    with open_url(spec, url, timeout) as response:
        data = json.loads(response.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return data


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _launch(spec: NodeSpec, java_home: Path, run_as: pwd.struct_passwd | None) -> subprocess.Popen[bytes]:
    spec.pid_file.unlink(missing_ok=True)
    log_dir = spec.node_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    env = java_env(java_home)
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


def _log_tail(spec: NodeSpec, lines: int = 25) -> str:
    """The launcher's output (``startup.out``) when its JVM did not start (the reason is on lines that match
    no error pattern, and the node log, if any, is an earlier run's); else the node log's error lines; else
    ``startup.out``'s tail; else the log's tail."""
    startup, log = _lines(spec.startup_log), _lines(spec.log_path)
    errors = [line for line in log if _ERROR_LINE.search(line)]
    failed = any(LAUNCHER_FAILURE in line for line in startup)
    chosen = startup if failed else errors or startup or log
    return "\n".join(chosen[-lines:]) or "(no log written)"


def launcher_failed(spec: NodeSpec) -> bool:
    """Whether the last start failed in OpenSearch's launcher, before the node itself ran: its probe of
    the JVM options (``java -XX:+PrintFlagsFinal``) exited non-zero."""
    return any(LAUNCHER_FAILURE in line for line in _lines(spec.startup_log))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


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


def _root_info(spec: NodeSpec) -> dict[str, Any] | None:
    try:
        info = get_json(spec, "/", 3.0)
    except (OSError, ValueError, NodeError):
        return None
    return info if isinstance(info, dict) and "version" in info else None


def _check_ours(spec: NodeSpec, info: dict[str, Any]) -> None:
    name = info.get("cluster_name")
    if name != CLUSTER_NAME:
        raise NodeError(f"{spec.url} is already served by another cluster ({name!r}); stop it or pick another port")
