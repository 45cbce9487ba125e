"""HAProxy (the Debian ``haproxy`` package) in front of the rerank service replicas.

The configuration :func:`config_text` writes:

* ``balance leastconn`` over the replicas (a re-rank takes long enough that open connections
  are the better measure of load than turns);
* an HTTP health check ``GET /health`` every second; a replica is taken out after 2 failed
  checks and put back after 1 good one (``/health`` answers 200 only once the model is loaded);
* a request that could not reach a replica (connection refused, or the connection closed
  without an answer, as when a replica is SIGKILLed mid-request) is sent again to another one
  (``retry-on conn-failure empty-response``, ``option redispatch``); re-ranking is idempotent,
  and the request is buffered whole so it can be replayed;
* a stats endpoint ``/stats`` (CSV at ``/stats;csv``) on its own port, for :func:`backend_state`.
"""

from __future__ import annotations

import csv
import io
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BACKEND = "replicas"


class HAProxyError(RuntimeError):
    """HAProxy is missing, or its stats cannot be read."""


def executable() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None or not Path(found).is_file():
        raise HAProxyError("haproxy not found: install the Debian package (apt-get install -y haproxy)")
    return found


def config_text(port: int, stats_port: int, replica_ports: list[int], timeout_s: int = 60) -> str:
    """A complete haproxy.cfg: loopback frontend on ``port``, one server per replica port."""
    if not replica_ports:
        raise ValueError("the load balancer needs at least one replica port")
    servers = "\n".join(f"    server replica-{i} 127.0.0.1:{p}" for i, p in enumerate(replica_ports, start=1))
    return f"""# Written by lrt-rerank (python/lrt_rerank/ops/stack/haproxy.py) on every `lrt-rerank stack up`.
global
    maxconn 512
    # whole rerank requests stay buffered, so a failed attempt can be replayed on another replica
    tune.bufsize 262144

defaults
    mode http
    timeout connect 1s
    timeout client {timeout_s}s
    timeout server {timeout_s}s
    timeout queue {timeout_s}s
    timeout http-request 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    option http-buffer-request

frontend rerank
    bind 127.0.0.1:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance leastconn
    option httpchk
    http-check send meth GET uri /health
    http-check expect status 200
    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 1
{servers}

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
    stats refresh 5s
"""


@dataclass(frozen=True)
class ServerState:
    name: str
    status: str
    """HAProxy's check status: ``UP``, ``DOWN``, ``MAINT``, ``UP 1/2`` (going down), ..."""
    requests: int
    """Requests the load balancer sent to this replica (HAProxy's ``stot``)."""

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")


def backend_state(stats_port: int, timeout_s: float = 2.0) -> list[ServerState]:
    """The replicas as the load balancer sees them, from its CSV stats."""
    url = f"http://127.0.0.1:{stats_port}/stats;csv"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback URL built here)
            text = response.read().decode("utf-8")
    except OSError as exc:
        raise HAProxyError(f"HAProxy stats at {url} unreadable: {exc}") from exc
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return [
        ServerState(row["svname"], row["status"], int(row["stot"] or 0))
        for row in rows
        if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
    ]
