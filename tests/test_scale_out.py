"""The scale-out stack under faults, short version of benches/chaos.py (its :data:`SHORT` schedule).

The module starts its own stack on free loopback ports (``lrt_rerank.ops.stack.launcher.up``): Redis,
2 `lrt-rerank serve` replicas behind HAProxy, and a 3-node OpenSearch cluster from the same
assembled distribution as the session's single node (its own ports, data and config under
``cluster-<version>-<port>/``, removed afterwards). Then 8 clients search through the rerank
pipeline for 30 s while replica 1, Redis and the elected cluster manager are SIGKILLed and started
again, and a writer indexes 100 documents while the manager is down. Speed is not asserted (the
bench reports it).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench_modules import load_bench
from lrt_rerank.cli import main as cli_main
from lrt_rerank.opensearch.client import connect
from lrt_rerank.opensearch.pipeline import RERANK_PIPELINE
from lrt_rerank.opensearch.queries import hybrid_body
from lrt_rerank.opensearch.searcher import embed_query
from lrt_rerank.ops.opensearch import ClusterSpec, cluster_status
from lrt_rerank.ops.stack.haproxy import backend_state
from lrt_rerank.ops.stack.launcher import Stack, StackError, StackSpec, down, up
from service_fixtures import free_port

pytestmark = pytest.mark.integration

INDEX = "lrt-scale-out"
NODES = 3
DOCUMENTS = 600
"""Documents of the bundled NFCorpus test corpus used: 500 indexed up front, 100 by the writer."""


def free_run(length: int, avoid: set[int]) -> int:
    """First port of ``length`` consecutive free loopback ports, none of them in ``avoid``."""
    for _ in range(200):
        first = free_port()
        ports = range(first, first + length)
        if first + length > 65535 or avoid & set(ports):
            continue
        try:
            for port in ports:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {length} consecutive free ports found")


@dataclass(frozen=True)
class ScaleOut:
    stack: Stack
    cluster: ClusterSpec


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[ScaleOut]:
    used: set[int] = set()
    ports: dict[str, int] = {}
    for name, length in (("opensearch", NODES), ("transport", NODES), ("replicas", 2), ("lb", 1), ("stats", 1), ("redis", 1)):
        ports[name] = free_run(length, used)
        used |= set(range(ports[name], ports[name] + length))
    cluster = ClusterSpec(NODES, port=ports["opensearch"], heap_mb=512, transport_port=ports["transport"])
    spec = StackSpec(
        replicas=2,
        port=ports["lb"],
        replica_port=ports["replicas"],
        stats_port=ports["stats"],
        redis_port=ports["redis"],
        model=str(cross_encoder_dir),
        threads=1,
        opensearch=cluster,
        state_dir=tmp_path_factory.mktemp("stack"),
    )
    try:
        try:
            stack = up(spec, timeout_s=600)
        except StackError as exc:
            pytest.fail(f"the scale-out stack did not start:\n{exc}", pytrace=False)
        yield ScaleOut(stack, cluster)
    finally:
        down(spec.state_dir)
        shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def chaos_report(scale_out: ScaleOut, bi_encoder: Any) -> Any:  # benches/chaos.py's ChaosReport
    chaos = load_bench("chaos")
    client = connect(scale_out.cluster.url)
    queries, held = chaos.load_collection(client, INDEX, bi_encoder, DOCUMENTS, chaos.SHORT.writer_docs)
    client.close()
    run = chaos.Chaos(scale_out.stack, scale_out.cluster, INDEX, queries, held, chaos.SHORT, say=lambda _m: None)
    return run.run(warm_up_s=2.0)


def test_cluster_has_three_nodes_and_the_stack_reports_itself(scale_out: ScaleOut, capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"lrt-node-{i}" for i in range(1, NODES + 1)]
    state = cluster_status(scale_out.cluster)
    assert [n.name for n in state.nodes] == names
    assert all(n.running for n in state.nodes)
    assert state.joined == names
    assert state.health in ("green", "yellow")
    assert len({n.url for n in state.nodes}) == NODES and len({n.home for n in state.nodes}) == NODES
    assert cli_main(["opensearch", "status", "--port", str(scale_out.cluster.port)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: running" in out for name in names)
    assert f"{NODES} node(s) joined: {', '.join(names)}" in out
    assert cli_main(["stack", "status", "--state-dir", str(scale_out.stack.spec.state_dir)]) == 0
    out = capsys.readouterr().out
    assert "load balancer: 2 healthy replica(s): replica-1, replica-2" in out
    assert "replica-1: running" in out and "redis: running" in out and "haproxy: running" in out


def test_connector_calls_the_load_balancer(scale_out: ScaleOut) -> None:
    client = connect(scale_out.cluster.url)
    pipeline = client.transport.perform_request("GET", f"/_search/pipeline/{RERANK_PIPELINE}")[RERANK_PIPELINE]
    model_id = next(p["rerank"] for p in pipeline["response_processors"] if "rerank" in p)["ml_opensearch"]["model_id"]
    model = client.transport.perform_request("GET", f"/_plugins/_ml/models/{model_id}")
    connector = client.transport.perform_request("GET", f"/_plugins/_ml/connectors/{model['connector_id']}")
    assert connector["parameters"]["service_url"] == scale_out.stack.spec.url
    client.close()
    # `up` returned with the model settled: DEPLOYED on every node, or (ml-commons
    # sometimes leaves a node without it, docs/scale-out.md) PARTIALLY_DEPLOYED after every deploy attempt
    settled = scale_out.stack.rerank_model
    assert settled is not None and settled.model_id == model_id
    assert settled.state in ("DEPLOYED", "PARTIALLY_DEPLOYED") and settled.nodes >= 1
    if settled.state == "DEPLOYED":
        assert settled.planned is None or settled.nodes == settled.planned == NODES


def test_stack_status_reports_the_rerank_model(scale_out: ScaleOut, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["stack", "status", "--state-dir", str(scale_out.stack.spec.state_dir), "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["rerank_model"]
    assert scale_out.stack.rerank_model is not None and model["model_id"] == scale_out.stack.rerank_model.model_id
    assert model["state"] in ("DEPLOYED", "PARTIALLY_DEPLOYED", "DEPLOYING") and "summary" in model


def test_no_search_fails_while_a_replica_redis_and_the_cluster_manager_die(chaos_report: Any) -> None:
    errors = [s.error for s in chaos_report.samples if not s.ok]
    assert errors == []
    events = " | ".join(text for _t, text in chaos_report.events)
    assert "SIGKILL replica-1" in events and "SIGKILL redis" in events
    assert f"SIGKILL {chaos_report.killed_node} " in events and "the elected cluster manager" in events
    assert chaos_report.killed_manager
    assert chaos_report.new_manager not in (None, chaos_report.killed_node), chaos_report.events
    assert chaos_report.election_s is not None and chaos_report.election_s < 60
    assert all(phase.samples for phase in chaos_report.phases), "every phase of the schedule saw searches"
    assert any(s.reranked for s in chaos_report.phases[-1].samples), "re-ranking works after all three faults"


def test_no_acknowledged_document_is_lost(chaos_report: Any) -> None:
    writer = chaos_report.writer
    assert len(writer.acknowledged) > 0
    assert chaos_report.final_health == "green"
    assert sorted(writer.found_per_node) == [f"lrt-node-{i}" for i in range(1, NODES + 1)]
    assert all(found == len(set(writer.acknowledged)) for found in writer.found_per_node.values()), writer.found_per_node
    assert writer.lost == 0


def test_index_has_a_copy_on_each_node(scale_out: ScaleOut, chaos_report: Any) -> None:
    client = connect(scale_out.cluster.url)
    settings = client.indices.get_settings(index=INDEX)[INDEX]["settings"]["index"]
    shards = client.cat.shards(index=INDEX, format="json")
    client.close()
    assert settings["number_of_replicas"] == str(NODES - 1)
    assert sorted((s["prirep"], s["state"]) for s in shards) == [("p", "STARTED")] + [("r", "STARTED")] * (NODES - 1)
    assert {s["node"] for s in shards} == {f"lrt-node-{i}" for i in range(1, NODES + 1)}


def test_killed_replica_serves_again(scale_out: ScaleOut, chaos_report: Any) -> None:
    assert chaos_report.replica_back_s is not None, "HAProxy never counted replica 1 healthy after its restart"
    assert chaos_report.replica_served_after_restart > 0
    replica = scale_out.stack.spec.replica_urls[0]
    body = {"query": "statins", "documents": ["statins lower cholesterol", "a poem"]}
    answer = httpx.post(replica + "/v1/rerank", json=body, timeout=60)
    assert answer.status_code == 200
    assert {r["index"] for r in answer.json()["results"]} == {0, 1}


def test_without_replicas_searches_fall_back_visibly(scale_out: ScaleOut, chaos_report: Any, bi_encoder: Any) -> None:
    """Both replicas down: the answer is still 200 with k hits, in RRF order, and says the re-rank failed."""
    stack = scale_out.stack
    for replica in stack.replicas:
        replica.kill()
    try:
        deadline = time.monotonic() + 60
        while any(s.up for s in backend_state(stack.spec.stats_port)):
            assert time.monotonic() < deadline, "HAProxy still counts a killed replica healthy after 60 s"
            time.sleep(0.2)
        client = connect(scale_out.cluster.url)
        query = "vitamin d and cancer"
        vector = embed_query(bi_encoder, query)
        body = hybrid_body(query, vector, 10, source=["doc_id"], rerank_query=query)
        answer = client.search(index=INDEX, body=body, params={"search_pipeline": RERANK_PIPELINE, "verbose_pipeline": "true"})
        client.close()
        assert len(answer["hits"]["hits"]) == 10
        outcome = [p for p in answer["processor_results"] if p.get("tag") == "lrt-rerank"]
        assert [p["status"] for p in outcome] == ["fail"]
        assert outcome[0]["error"]  # why the re-rank failed (HAProxy's 503, as ml-commons words it)
    finally:
        for ordinal in (1, 2):
            stack.start_replica(ordinal)
        for ordinal in (1, 2):
            stack.wait_replica(ordinal)
