"""The scale-out stack's parts that need no cluster: specs and their errors, the HAProxy
configuration (checked by the real `haproxy -c`), and the detached-process records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lrt_rerank.cli import main as cli_main
from lrt_rerank.ops.opensearch import ClusterSpec, recorded_cluster
from lrt_rerank.ops.stack import haproxy
from lrt_rerank.ops.stack.launcher import StackError, StackSpec, load
from lrt_rerank.ops.stack.processes import ManagedProcess, ProcessError


def test_cluster_members_get_distinct_ports_names_and_files(tmp_path: Path) -> None:
    cluster = ClusterSpec(2, port=19400, work_dir=tmp_path)
    first, second = cluster.members()
    assert (first.name, first.url, first.member.transport_port) == ("lrt-node-1", "http://127.0.0.1:19400", 19500)
    assert (second.name, second.url, second.member.transport_port) == ("lrt-node-2", "http://127.0.0.1:19401", 19501)
    assert first.member.seed_transport_ports == second.member.seed_transport_ports == (19500, 19501)
    assert first.node_dir != second.node_dir and first.home == second.home  # one distribution, own files
    assert first.log_path.is_relative_to(first.node_dir) and first.pid_file.is_relative_to(first.node_dir)
    assert first.heap_mb == 512
    (single,) = ClusterSpec(1, port=19400, work_dir=tmp_path).members()
    assert single.member is None and single.node_dir == single.home and single.heap_mb == 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, r"nodes 0: must be between 1 and 4"),
        ({"nodes": 5}, r"nodes 5: must be between 1 and 4"),
        ({"nodes": 2, "port": 65535}, r"port 65535: ports 65535-65536 are not all TCP ports"),
        ({"nodes": 2, "port": 9200, "transport_port": 9201}, r"transport ports 9201-9202 overlap the HTTP ports 9200-9201"),
        ({"nodes": 2, "heap_mb": 64}, r"heap_mb 64: must be between 128 and 1024"),
    ],
)
def test_bad_cluster_specs_are_named(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterSpec(work_dir=tmp_path, **kwargs).members()


def test_status_and_down_find_the_cluster_up_recorded_only_while_it_runs(tmp_path: Path) -> None:
    cluster = ClusterSpec(2, port=19400, work_dir=tmp_path)
    cluster.dir.mkdir(parents=True)
    (cluster.dir / "cluster.json").write_text(json.dumps({"nodes": 2, "heap_mb": 512, "transport_port": 19500}))
    # recorded, but no node runs: a later single node on that port is what status/down mean
    assert recorded_cluster(cluster.version, 19400, tmp_path).nodes == 1
    pid_file = cluster.members()[1].pid_file
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))
    assert recorded_cluster(cluster.version, 19400, tmp_path) == ClusterSpec(2, cluster.version, 19400, 512, tmp_path, 19500)


def test_cli_rejects_a_bad_node_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["opensearch", "up", "--nodes", "7", "--work-dir", str(tmp_path)]) == 1
    assert "nodes 7: must be between 1 and 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, r"replicas must be at least 1, got 0"),
        ({"threads": 0}, r"threads must be at least 1, got 0"),
        ({"port": 8001}, r"replica_port 8001: already used by port"),
        ({"redis_port": 9201}, r"opensearch 9201: already used by redis_port"),
        ({"stats_port": 70000}, r"stats_port 70000: not a TCP port"),
    ],
)
def test_bad_stack_specs_are_named(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StackSpec(state_dir=tmp_path, **kwargs)


def test_stack_spec_round_trips_through_its_record(tmp_path: Path) -> None:
    cluster = ClusterSpec(2, port=19400, work_dir=tmp_path)
    key_file = tmp_path / "key"
    key_file.write_text("k-secret\n", encoding="utf-8")
    key_file.chmod(0o600)
    spec = StackSpec(replicas=3, port=18100, replica_port=18101, api_key_file=key_file, opensearch=cluster, state_dir=tmp_path)
    record = json.dumps(spec.to_json())
    assert StackSpec.from_json(json.loads(record)) == spec
    assert spec.api_key == "k-secret" and "k-secret" not in record  # the record names the file, not the key
    assert spec.replica_urls == ["http://127.0.0.1:18101", "http://127.0.0.1:18102", "http://127.0.0.1:18103"]


def test_stack_commands_without_a_stack_say_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StackError, match=r"no stack recorded in .*lrt-rerank stack up"):
        load(tmp_path)
    assert cli_main(["stack", "status", "--state-dir", str(tmp_path)]) == 1
    assert "no stack recorded" in capsys.readouterr().err


def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy.config_text(18000, 18404, [18001, 18002]))
    check = subprocess.run([haproxy.executable(), "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    text = config.read_text()
    assert "server replica-1 127.0.0.1:18001" in text and "server replica-2 127.0.0.1:18002" in text
    assert "http-check send meth GET uri /health" in text and "retry-on conn-failure empty-response" in text
    with pytest.raises(ValueError, match="at least one replica port"):
        haproxy.config_text(18000, 18404, [])


def test_managed_process_is_found_killed_and_never_confused_with_another(tmp_path: Path) -> None:
    sleeper = ManagedProcess("sleeper", (sys.executable, "-c", "import time; time.sleep(600)"), tmp_path)
    assert sleeper.pid() is None
    pid = sleeper.start()
    assert sleeper.start() == pid == sleeper.pid()  # idempotent
    assert sleeper.kill() == pid and sleeper.pid() is None
    assert not sleeper.stop()
    # a record whose pid now belongs to another process (start time differs) is not that process
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        sleeper.record.write_text(json.dumps({"pid": other.pid, "started": 1, "argv": list(sleeper.argv)}))
        assert sleeper.pid() is None
        assert sleeper.signal(signal.SIGKILL) is None
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_process_that_exits_during_start_up_reports_its_log(tmp_path: Path) -> None:
    failing = ManagedProcess("failing", (sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"), tmp_path)
    failing.start()
    with pytest.raises(ProcessError, match=r"failing exited during start-up(.|\n)*cannot bind"):
        failing.wait_ready(lambda: False, timeout_s=120)


def test_up_refuses_to_replace_a_running_stack_with_other_settings(tmp_path: Path) -> None:
    from lrt_rerank.ops.stack.launcher import STATE_FILE, Stack, up

    running = StackSpec(opensearch=None, state_dir=tmp_path, redis_port=16999)
    (tmp_path / STATE_FILE).write_text(json.dumps(running.to_json()))
    redis = Stack(running).redis
    impostor = ManagedProcess(redis.name, (sys.executable, "-c", "import time; time.sleep(600)"), tmp_path)
    pid = impostor.start()
    try:
        record = json.loads(impostor.record.read_text())
        redis.record.write_text(json.dumps({**record, "argv": list(redis.argv)}))  # the recorded Redis "runs"
        with pytest.raises(StackError, match=r"holds a running stack with other settings.*stack down --state-dir"):
            up(StackSpec(opensearch=None, state_dir=tmp_path, redis_port=16998))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
