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
from pathlib import Path

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

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}\n{log_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


def key_file(folder: Path, key: str) -> str:
    """``key`` in a 0600 file under ``folder``, for ``serve --api-key-file`` (keys never go on a command line)."""
    path = folder / "service.key"
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


class ServeProcess:
    """`lrt-rerank serve` as a subprocess on a free loopback port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        exe = Path(sys.executable).with_name("lrt-rerank")
        if not exe.is_file():
            raise RuntimeError(f"{exe}: not found; install the package into this environment (maturin develop)")
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "serve", "--port", str(self.port), *args], stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lrt-rerank serve exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"lrt-rerank serve not ready after {timeout_s} s\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def cross_encoder_dir() -> Path:
    """The default cross-encoder's directory (built on first use)."""
    from lrt_rerank.service.engine import resolve_model_dir

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
    server = ServeProcess(
        ["--model", str(cross_encoder_dir), "--redis-url", redis_server.url, "--api-key-file", key_file(log.parent, API_KEY)], log
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_rerank_server(
    tmp_path_factory: pytest.TempPathFactory, small_cross_encoder_dir: Path, redis_server: RedisServer
) -> Iterator[ServeProcess]:
    """`lrt-rerank serve` with the small FP32 cross-encoder (fast), two sessions, two scoring slots,
    the session Redis and no API key: for the fuzz and concurrency tests."""
    log = tmp_path_factory.mktemp("small-serve") / "serve.log"
    server = ServeProcess(
        [
            "--model", str(small_cross_encoder_dir), "--threads", "2", "--max-concurrent-scoring", "2",
            "--redis-url", redis_server.url,
        ],
        log,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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
