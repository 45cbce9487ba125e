"""The local OpenSearch node built from Maven Central artifacts (`lrt-rerank opensearch up|down|status`)."""

from __future__ import annotations

import pwd
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from lrt_rerank.ops.opensearch import (
    NodeError,
    NodeSpec,
    check_traversable,
    find_java_home,
    resolve_artifacts,
    status,
    up,
)
from lrt_rerank.ops.opensearch.assemble import install
from opensearch_fixtures import OPENSEARCH_PORT, OpenSearchNode
from service_fixtures import free_port

pytestmark = pytest.mark.integration


def test_node_has_core_modules_and_plugins(opensearch_node: OpenSearchNode) -> None:
    client = opensearch_node.client
    assert client.info()["version"]["number"].startswith("2.19.")
    (node,) = client.nodes.info(metric="plugins,jvm")["nodes"].values()
    assert {m["name"] for m in node["modules"]} >= {"transport-netty4", "lang-painless", "analysis-common"}
    assert {p["name"] for p in node["plugins"]} == {
        "opensearch-job-scheduler",
        "opensearch-ml",
        "opensearch-knn",
        "opensearch-neural-search",
    }
    assert node["jvm"]["mem"]["heap_max_in_bytes"] <= 1 << 30
    assert client.cluster.health()["status"] in ("green", "yellow")
    settings = client.cluster.get_settings(include_defaults=True, flat_settings=True)
    merged = {**settings["defaults"], **settings["persistent"], **settings["transient"]}
    assert merged["cluster.routing.allocation.disk.threshold_enabled"] == "false"


def test_painless_runs_from_the_assembled_module(opensearch_node: OpenSearchNode) -> None:
    answer = opensearch_node.client.transport.perform_request(
        "POST", "/_scripts/painless/_execute", body={"script": {"source": "params.a * 2", "params": {"a": 21}}}
    )
    assert answer["result"] == "42"


def test_up_is_idempotent_and_status_reports_the_running_node(opensearch_node: OpenSearchNode) -> None:
    spec = NodeSpec(port=OPENSEARCH_PORT)
    before = status(spec)
    again = up(spec)
    assert before.running and again.running
    assert again.pid == before.pid
    assert again.health in ("green", "yellow")
    assert again.url == opensearch_node.url


def test_missing_maven_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NodeError, match="Maven not found"):
        resolve_artifacts(NodeSpec(work_dir=tmp_path), lambda _message: None)


def test_node_home_the_service_user_cannot_reach_is_reported() -> None:
    nobody = pwd.getpwnam("nobody")
    check_traversable(NodeSpec().home, nobody)  # the default work dir is reachable
    locked = NodeSpec().work_dir / "test-locked"  # pytest's own tmp dirs are 0700 already
    shutil.rmtree(locked, ignore_errors=True)
    locked.mkdir(mode=0o700, parents=True)
    try:
        with pytest.raises(NodeError, match=r"test-locked \(mode 0o700\) does not let user 'nobody'.*LRT_OPENSEARCH_WORK"):
            check_traversable(locked / "work" / "node-2.19.6", nobody)
    finally:
        locked.rmdir()


@pytest.fixture(scope="module")
def scratch_work() -> Iterator[Path]:
    """A work directory of its own (its node home assembled on first use), removed afterwards."""
    main = NodeSpec()
    work = main.work_dir / "test-failed-start"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if (main.work_dir / "m2").is_dir():
        (work / "m2").symlink_to(main.work_dir / "m2")  # reuse the downloads
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_failed_start_names_the_node_log(scratch_work: Path) -> None:
    """A node that cannot bind its port fails `up` with the node's error lines and its log path."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        spec = NodeSpec(port=taken.getsockname()[1], heap_mb=256, work_dir=scratch_work)
        with pytest.raises(NodeError) as failure:
            up(spec, timeout=300.0)
    assert "Address already in use" in str(failure.value)
    assert failure.value.log_path is not None and failure.value.log_path.is_file()
    assert str(failure.value.log_path) in str(failure.value)
    assert not status(spec).running


def test_a_jvm_that_cannot_start_is_tried_twice_and_its_reason_reported(scratch_work: Path) -> None:
    """A JVM option the JVM refuses fails in OpenSearch's launcher, before the node runs: `up` starts it
    once more, says so, and the error carries the JVM's own reason (from startup.out)."""
    said: list[str] = []
    spec = NodeSpec(port=free_port(), heap_mb=256, work_dir=scratch_work)
    install(spec, find_java_home(), said.append)
    broken = spec.config_dir / "jvm.options.d" / "test-broken.options"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text("-XX:+NoSuchJvmOptionForTheTest\n", encoding="utf-8")
    try:
        with pytest.raises(NodeError) as failure:
            up(spec, timeout=300.0, progress=said.append)
    finally:
        broken.unlink()
    assert "Unrecognized VM option 'NoSuchJvmOptionForTheTest'" in str(failure.value)
    assert [m for m in said if "could not start the JVM" in m and "starting it once more" in m], said
    assert sum(m.startswith("starting lrt-node-1") for m in said) == 2, said
    assert not status(spec).running
