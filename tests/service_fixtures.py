"""Real servers for the service tests: `redis-server` (Debian package) and `lrt-rerank serve`.

Loaded as a pytest plugin (``pytest_plugins = ["service_fixtures"]`` in conftest.py). Every
process started here is stopped at the end of its fixture.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

API_KEY = "test-key-5f2c"


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a server's log, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log at {path}: {err})"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def metric(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0.0 when absent)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT_ATTEMPTS = 3
"""A port found free can be taken before the server binds it (an outgoing connection's ephemeral port,
another server): a server that exits saying so is started again on another free port, this often."""


def lost_its_port(log_path: Path, offset: int) -> bool:
    """Whether the log, from byte ``offset`` on, says the server could not bind its port."""
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            return b"address already in use" in log.read().lower()
    except OSError:
        return False


def log_size(log_path: Path) -> int:
    return log_path.stat().st_size if log_path.is_file() else 0


class RedisServer:
    """A `redis-server` on loopback, without persistence; can be stopped and started again on its port."""

    def __init__(self, log_path: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: install the Debian package (apt-get install -y redis-server)")
        self.exe = exe
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start it and wait (at most ``timeout_s``) until it answers PING. The first start may move to
        another port when its port was taken meanwhile; a restart keeps the port its clients know."""
        first_start = self.proc is None and not self.log_path.exists()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            offset = log_size(self.log_path)
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if self.client().ping():
                        return
                except redis.ConnectionError:
                    pass
                if self.proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING on port {self.port} in {timeout_s:.0f} s\n{log_tail(self.log_path)}")
                time.sleep(0.05)
            if not (first_start and lost_its_port(self.log_path, offset) and attempt < PORT_ATTEMPTS):
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}\n{log_tail(self.log_path)}")
            self.port = free_port()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


def wait_healthy(client: Any, timeout_s: float = 120.0) -> None:
    """Wait (at most ``timeout_s``) until an in-process app (a FastAPI ``TestClient``) answers /health with 200."""
    deadline = time.monotonic() + timeout_s
    while (response := client.get("/health")).status_code != 200:
        assert time.monotonic() < deadline, f"GET /health not 200 within {timeout_s:.0f} s: {response.status_code} {response.text}"
        time.sleep(0.01)


def key_file(folder: Path, key: str) -> str:
    """``key`` in a 0600 file under ``folder``, for ``serve --api-key-file`` (keys never go on a command line)."""
    path = folder / "service.key"
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


class ServeProcess:
    """`lrt-rerank serve` as a subprocess on a free loopback port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.args = args
        self.exe = Path(sys.executable).with_name("lrt-rerank")
        if not self.exe.is_file():
            raise RuntimeError(f"{self.exe}: not found; install the package into this environment (maturin develop)")
        self.attempts = 0
        self._spawn()

    def _spawn(self) -> None:
        self.attempts += 1
        self.port = free_port()
        self.log_offset = log_size(self.log_path)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.exe), "serve", "--port", str(self.port), *self.args], stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Wait (at most ``timeout_s``) until /health answers 200; a server that lost its port to another
        process before binding it is started again on another one (``PORT_ATTEMPTS`` in all)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if lost_its_port(self.log_path, self.log_offset) and self.attempts < PORT_ATTEMPTS:
                    self._spawn()
                    continue
                raise RuntimeError(f"lrt-rerank serve exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"lrt-rerank serve: GET {self.url}/health not 200 after {timeout_s:.0f} s\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def serving(args: list[str], log_path: Path) -> Iterator[ServeProcess]:
    """`lrt-rerank serve ARGS` (log in ``log_path``), ready when entered, stopped on exit."""
    server = ServeProcess(args, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cross_encoder_dir() -> Path:
    """The default cross-encoder's directory (built on first use)."""
    from lrt_rerank.service.served import resolve_model_dir

    return resolve_model_dir("default")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rerank_server(
    tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path, redis_server: RedisServer
) -> Iterator[ServeProcess]:
    """`lrt-rerank serve` with the default model, the session Redis and the API key ``API_KEY``."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ["--model", str(cross_encoder_dir), "--redis-url", redis_server.url, "--api-key-file", key_file(log.parent, API_KEY)]
    with serving(args, log) as server:
        yield server


@pytest.fixture(scope="session")
def small_rerank_server(
    tmp_path_factory: pytest.TempPathFactory, small_cross_encoder_dir: Path, redis_server: RedisServer
) -> Iterator[ServeProcess]:
    """`lrt-rerank serve` with the small FP32 cross-encoder (fast), two sessions, two scoring slots,
    the session Redis and no API key: for the fuzz and concurrency tests."""
    args = ["--model", str(small_cross_encoder_dir), "--threads", "2", "--max-concurrent-scoring", "2", "--redis-url", redis_server.url]
    with serving(args, tmp_path_factory.mktemp("small-serve") / "serve.log") as server:
        yield server


@pytest.fixture
def start_server(tmp_path: Path, cross_encoder_dir: Path) -> Iterator[Callable[[list[str]], ServeProcess]]:
    """Starts extra `lrt-rerank serve` processes for one test (the default model unless the
    arguments name --model); stops whatever is still running afterwards."""
    started: list[ServeProcess] = []

    def start(args: list[str]) -> ServeProcess:
        model = [] if "--model" in args else ["--model", str(cross_encoder_dir)]
        server = ServeProcess([*model, *args], tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
