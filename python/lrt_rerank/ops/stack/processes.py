"""Detached local processes that outlive the command that started them.

Each process is recorded in ``<state dir>/<name>.json`` (pid and command line), so a later
command (``lrt-rerank stack down``, a bench) finds it, checks it is still the same process (the
command line under ``/proc/<pid>/cmdline`` must match: a reused pid is never signalled) and
stops or kills it. Output goes to ``<state dir>/<name>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A process could not be started, or did not become ready; the message names its log."""


@dataclass(frozen=True)
class ManagedProcess:
    """One named process of a stack: how to start it and where its record and log live."""

    name: str
    argv: tuple[str, ...]
    state_dir: Path

    @property
    def record(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid while that process runs this command line; None otherwise."""
        try:
            recorded = json.loads(self.record.read_text(encoding="utf-8"))
            pid, started = int(recorded["pid"]), int(recorded["started"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if recorded.get("argv") != list(self.argv) or not _running(pid, started):
            return None
        return pid

    def start(self, env: dict[str, str] | None = None) -> int:
        """Start the process in its own session (it survives this one); return its pid."""
        running = self.pid()
        if running is not None:
            return running
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            except OSError as exc:
                raise ProcessError(f"{self.name}: could not start {self.argv[0]}: {exc}") from exc
        started = _start_time(proc.pid)
        record = {"pid": proc.pid, "started": started, "argv": list(self.argv)}
        self.record.write_text(json.dumps(record) + "\n", encoding="utf-8")
        return proc.pid

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``ready`` until it is true; :class:`ProcessError` with the log tail if the process
        exits or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.pid() is None:
                raise ProcessError(f"{self.name} exited during start-up\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name} not ready after {timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.2)

    def signal(self, sig: signal.Signals) -> int | None:
        """Send ``sig``; return the pid, or None when the process is not running."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)
        return pid

    def kill(self) -> int | None:
        """SIGKILL (a crash); return the pid once it is gone, None when it was not running."""
        started = self._started()
        pid = self.signal(signal.SIGKILL)
        if pid is not None:
            _wait_gone(pid, started, 30.0)
        return pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``; False when it was not running."""
        started = self._started()
        pid = self.signal(signal.SIGTERM)
        if pid is None:
            self.record.unlink(missing_ok=True)
            return False
        if not _wait_gone(pid, started, timeout_s):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, started, 10.0)
        self.record.unlink(missing_ok=True)
        return True

    def _started(self) -> int:
        try:
            return int(json.loads(self.record.read_text(encoding="utf-8"))["started"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_time(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else -1


def _running(pid: int, started: int) -> bool:
    """``pid`` is alive (not a zombie) and is the process that started at ``started`` (clock ticks after boot)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our own exited child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == started


def _wait_gone(pid: int, started: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _running(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used (None when it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
