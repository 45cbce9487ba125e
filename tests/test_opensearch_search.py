"""Index, first stage, search pipelines and re-ranking against the real node and `lrt-rerank serve`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank import CrossEncoder
from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset, Document
from lrt_rerank.evaluate import evaluate
from lrt_rerank.first_stage.embedded import EmbeddedFirstStage
from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
from lrt_rerank.models.store import file_sha256
from lrt_rerank.opensearch import (
    RERANK_PIPELINE,
    HybridSearcher,
    InstalledPipeline,
    RemoteReranker,
    index_documents,
    install_pipeline,
    search_server_side,
    uninstall_pipeline,
)
from lrt_rerank.opensearch.ml_model import readiness
from lrt_rerank.opensearch.pipeline import rerank_model_readiness, trusted_endpoint_regex
from lrt_rerank.opensearch.queries import hybrid_body
from lrt_rerank.opensearch.searcher import embed_query
from opensearch_fixtures import OPENSEARCH_PORT, SERVICE_API_KEY, OpenSearchNode, check_eval_cli
from service_fixtures import ServeProcess

pytestmark = pytest.mark.integration

DEPTH = 20
QUERIES = ("statin use and breast cancer survival", 'does "milk" cause mucus?', "vitamin D deficiency \\ depression")


@pytest.fixture(scope="module")
def installed(opensearch_node: OpenSearchNode, opensearch_rerank_service: ServeProcess) -> Iterator[InstalledPipeline]:
    # A generous read timeout: the tests compare orders and must not fail open on a busy CPU.
    pipeline = install_pipeline(
        opensearch_node.client, service_url=opensearch_rerank_service.url, api_key=SERVICE_API_KEY, read_timeout_s=120
    )
    try:
        yield pipeline
    finally:
        uninstall_pipeline(opensearch_node.client, pipeline)


@pytest.fixture
def failing_pipeline(opensearch_node: OpenSearchNode, request: pytest.FixtureRequest) -> Iterator[InstalledPipeline]:
    """A rerank pipeline whose connector points at the endpoint fixture named by the test's parameter."""
    endpoint = request.getfixturevalue(request.param)
    pipeline = install_pipeline(
        opensearch_node.client, service_url=endpoint, read_timeout_s=1, rerank_pipeline=f"lrt-test-rerank-{request.param}"
    )
    try:
        yield pipeline
    finally:
        uninstall_pipeline(opensearch_node.client, pipeline)


def rrf_ids(node: OpenSearchNode, index: str, bi_encoder, query: str) -> list[str]:
    return [hit["_id"] for hit in HybridSearcher(node.client, index, bi_encoder, None, depth=DEPTH).first_stage(query)]


# ------------------------------------------------------------------------------------ index
def test_index_holds_text_fields_and_a_lucene_hnsw_vector(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder_dir: Path
) -> None:
    client = opensearch_node.client
    mappings = client.indices.get_mapping(index=opensearch_nfcorpus)[opensearch_nfcorpus]["mappings"]
    vector = mappings["properties"]["embedding"]
    assert vector["type"] == "knn_vector" and vector["dimension"] == 384
    assert vector["method"]["name"] == "hnsw" and vector["method"]["engine"] == "lucene"
    assert {"title", "text", "content"} <= set(mappings["properties"])
    assert mappings["_meta"]["lrt_rerank"]["bi_encoder_sha256"] == file_sha256(bi_encoder_dir / "model.onnx")
    assert client.count(index=opensearch_nfcorpus)["count"] == 3633


def test_bulk_load_reports_each_rejected_document(opensearch_node: OpenSearchNode, bi_encoder) -> None:
    client = opensearch_node.client
    docs = [Document(f"doc-{i}", f"title {i}", f"some text {i}") for i in range(5)]
    vectors = np.asarray(bi_encoder.embed([d.full_text for d in docs]), dtype=np.float32)
    vectors[3, 7] = np.nan  # OpenSearch refuses a non-finite vector value
    try:
        report = index_documents(client, "lrt-test-rejects", docs, bi_encoder, recreate=True, progress=False, vectors=vectors)
        assert report.indexed == 4 and report.total == 5
        assert [f.doc_id for f in report.failures] == ["doc-3"]
        assert "embedding" in report.failures[0].reason
        assert client.count(index="lrt-test-rejects")["count"] == 4
    finally:
        client.indices.delete(index="lrt-test-rejects", ignore_unavailable=True)


def test_cli_indexes_a_dataset_folder(
    opensearch_node: OpenSearchNode, tmp_path: Path, capsys: pytest.CaptureFixture[str], bi_encoder
) -> None:
    corpus = [
        {"_id": "a", "title": "Milk", "text": "Milk and mucus."},
        {"_id": "b", "text": "Statins lower cholesterol."},
        {"_id": "empty", "title": "", "text": ""},  # indexed, but neither BM25 nor knn may return it
    ]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    try:
        argv = ["opensearch", "index", "--dataset", str(tmp_path), "--index", "lrt-test-cli", "--url", opensearch_node.url]
        assert main([*argv, "--recreate"]) == 0
        assert "indexed 3 of 3 documents" in capsys.readouterr().out
        assert opensearch_node.client.count(index="lrt-test-cli")["count"] == 3
        stage = OpenSearchFirstStage.connect(opensearch_node.url, "lrt-test-cli", encoder=bi_encoder)
        for system in ("bm25", "dense", "rrf"):
            assert "empty" not in {h.id for h in stage.search("milk statins", 10, system)}
        assert {h.id for h in stage.search("milk statins", 10, "dense")} == {"a", "b"}
    finally:
        opensearch_node.client.indices.delete(index="lrt-test-cli", ignore_unavailable=True)


def test_late_interaction_on_219_asks_for_the_service_cache(
    opensearch_node: OpenSearchNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """k-NN 2.19 has no lateInteractionScore: without --redis-url nothing is indexed and one line says what to add."""
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "a", "text": "Milk and mucus."}) + "\n", encoding="utf-8")
    argv = ["opensearch", "index", "--dataset", str(tmp_path), "--index", "lrt-test-late-219", "--url", opensearch_node.url]
    assert main([*argv, "--late-interaction", str(tmp_path / "colbert")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no lateInteractionScore" in err and "add --redis-url URL" in err
    assert not opensearch_node.client.indices.exists(index="lrt-test-late-219")


# ------------------------------------------------------------------------------ first stage
def test_first_stage_adapter_serves_three_systems_and_texts(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, embedded_nfcorpus: EmbeddedFirstStage, bi_encoder
) -> None:
    stage = OpenSearchFirstStage.connect(opensearch_node.url, opensearch_nfcorpus, encoder=bi_encoder)
    for system in ("bm25", "dense", "rrf"):
        hits = stage.search(QUERIES[0], 15, system)
        assert len(hits) == 15
        assert [h.rank for h in hits] == list(range(1, 16))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    ids = [h.id for h in stage.search(QUERIES[0], 5, "rrf")]
    assert stage.get_texts(ids) == embedded_nfcorpus.get_texts(ids)
    assert stage.search("   ", 10) == []
    assert stage.search("the of and", 10, "bm25") == []  # stop words only: no lexical match
    with pytest.raises(KeyError, match="no-such-doc"):
        stage.get_texts(["no-such-doc"])
    with pytest.raises(ValueError, match="unknown first-stage system"):
        stage.search("milk", 5, "splade")  # type: ignore[arg-type]


def test_opensearch_rrf_is_within_002_mrr_of_the_embedded_one(
    opensearch_node: OpenSearchNode,
    opensearch_nfcorpus: str,
    embedded_nfcorpus: EmbeddedFirstStage,
    nfcorpus_test: Dataset,
    bi_encoder,
) -> None:
    """NFCorpus test, all 323 judged queries, first stage only."""
    stage = OpenSearchFirstStage.connect(opensearch_node.url, opensearch_nfcorpus, encoder=bi_encoder)
    embedded = evaluate(nfcorpus_test, embedded_nfcorpus, None, progress=False, systems=("rrf",))[0]
    remote = evaluate(nfcorpus_test, stage, None, progress=False, systems=("rrf",))[0]
    assert remote.queries == embedded.queries == 323
    assert abs(remote.metrics["MRR@10"] - embedded.metrics["MRR@10"]) <= 0.02, (remote.metrics, embedded.metrics)


def test_missing_index_is_a_clear_error(opensearch_node: OpenSearchNode, bi_encoder) -> None:
    with pytest.raises(ValueError, match="lrt-test-absent.*not found.*opensearch index"):
        OpenSearchFirstStage.connect(opensearch_node.url, "lrt-test-absent", encoder=bi_encoder)


def test_eval_cli_takes_the_node_as_first_stage(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, nfcorpus_test: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    check_eval_cli(opensearch_node.url, opensearch_nfcorpus, nfcorpus_test, 20, capsys)


# --------------------------------------------------------------------------------- pipeline
def test_install_pipeline_is_idempotent(
    opensearch_node: OpenSearchNode, opensearch_rerank_service: ServeProcess, installed: InstalledPipeline
) -> None:
    client = opensearch_node.client
    again = install_pipeline(client, service_url=opensearch_rerank_service.url, api_key=SERVICE_API_KEY, read_timeout_s=120)
    assert again == installed
    named = client.transport.perform_request(
        "POST", "/_plugins/_ml/connectors/_search", body={"query": {"term": {"name.keyword": installed.model_name}}}
    )
    assert named["hits"]["total"]["value"] == 1
    model = client.transport.perform_request("GET", f"/_plugins/_ml/models/{installed.model_id}")
    assert model["model_state"] == "DEPLOYED"
    pipeline = client.transport.perform_request("GET", f"/_search/pipeline/{RERANK_PIPELINE}")[RERANK_PIPELINE]
    ranker = pipeline["phase_results_processors"][0]["score-ranker-processor"]["combination"]
    assert ranker == {"technique": "rrf", "rank_constant": 60}
    rerank = pipeline["response_processors"][0]["rerank"]
    assert rerank["ml_opensearch"]["model_id"] == installed.model_id and rerank["ignore_failure"] is True
    settings = client.cluster.get_settings(flat_settings=True)["persistent"]
    assert trusted_endpoint_regex(opensearch_rerank_service.url) in settings["plugins.ml_commons.trusted_connector_endpoints_regex"]


def test_install_returns_a_settled_deploy_and_status_reports_it(
    opensearch_node: OpenSearchNode, installed: InstalledPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented readiness: DEPLOYED on every planned node, and settled, when install returned."""
    assert installed.model.state == "DEPLOYED"
    assert installed.model.planned is None or installed.model.nodes == installed.model.planned
    assert main(["opensearch", "status", "--port", str(OPENSEARCH_PORT), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)["rerank_model"]
    assert reported["model_id"] == installed.model_id
    assert reported["state"] == "DEPLOYED" and reported["nodes"] >= 1
    assert main(["opensearch", "status", "--port", str(OPENSEARCH_PORT)]) == 0
    assert f"rerank model {installed.model_id}: DEPLOYED on 1" in capsys.readouterr().out


def test_cli_installs_the_same_pipeline(
    opensearch_node: OpenSearchNode,
    opensearch_rerank_service: ServeProcess,
    installed: InstalledPipeline,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "service-key"
    key_file.write_text(SERVICE_API_KEY + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    argv = ["opensearch", "pipeline", "--url", opensearch_node.url, "--service-url", opensearch_rerank_service.url]
    argv += ["--service-api-key-file", str(key_file), "--read-timeout", "120"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == installed.to_json()


def test_server_side_rerank_gives_the_client_side_order(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, installed: InstalledPipeline, bi_encoder, cross_encoder_dir: Path
) -> None:
    client = opensearch_node.client
    searcher = HybridSearcher(client, opensearch_nfcorpus, bi_encoder, CrossEncoder.load(str(cross_encoder_dir)), depth=DEPTH)
    moved = 0
    for query in QUERIES:
        local = searcher.search(query)
        assert local.reranked and local.error is None
        server = search_server_side(client, opensearch_nfcorpus, query, embed_query(bi_encoder, query), DEPTH, installed.rerank_pipeline)
        assert [h.id for h in local.hits] == [doc_id for doc_id, _ in server], query
        assert [np.float32(h.score) for h in local.hits] == [np.float32(score) for _, score in server], query
        moved += [h.id for h in local.hits] != rrf_ids(opensearch_node, opensearch_nfcorpus, bi_encoder, query)
    assert moved > 0  # the re-rank changed some order, so equal orders are not both just RRF


def test_client_side_rerank_through_the_service_matches_in_process(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, opensearch_rerank_service: ServeProcess, bi_encoder, cross_encoder_dir: Path
) -> None:
    client = opensearch_node.client
    local = HybridSearcher(client, opensearch_nfcorpus, bi_encoder, CrossEncoder.load(str(cross_encoder_dir)), depth=DEPTH)
    remote = HybridSearcher(
        client, opensearch_nfcorpus, bi_encoder, RemoteReranker(opensearch_rerank_service.url, SERVICE_API_KEY, timeout_s=120), depth=DEPTH,
        interpolation=local.interpolation,  # the remote scores are bare logits; the card's weight is applied here, as in-process
    )
    assert local.interpolation > 0
    a, b = local.search(QUERIES[1]), remote.search(QUERIES[1])
    assert a.reranked and b.reranked
    assert [h.id for h in a.hits] == [h.id for h in b.hits]


# ---------------------------------------------------------------------------------- failure
@pytest.mark.parametrize("failing_pipeline", ["closed_endpoint", "unresponsive_endpoint"], indirect=True)
def test_server_side_returns_rrf_hits_when_the_service_fails(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, failing_pipeline: InstalledPipeline, bi_encoder
) -> None:
    query = QUERIES[0]
    server = search_server_side(
        opensearch_node.client, opensearch_nfcorpus, query, embed_query(bi_encoder, query), DEPTH, failing_pipeline.rerank_pipeline
    )
    assert [doc_id for doc_id, _ in server] == rrf_ids(opensearch_node, opensearch_nfcorpus, bi_encoder, query)


@pytest.mark.parametrize("endpoint", ["closed_endpoint", "unresponsive_endpoint"])
def test_client_side_returns_rrf_hits_with_a_warning_when_the_service_fails(
    opensearch_node: OpenSearchNode,
    opensearch_nfcorpus: str,
    bi_encoder,
    endpoint: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reranker = RemoteReranker(request.getfixturevalue(endpoint), timeout_s=1.0)
    searcher = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, reranker, depth=DEPTH)
    with caplog.at_level(logging.WARNING, logger="lrt_rerank.rerank"):
        result = searcher.search(QUERIES[0])
    assert not result.reranked and result.error is not None and "RemoteRerankError" in result.error
    assert [h.id for h in result.hits] == rrf_ids(opensearch_node, opensearch_nfcorpus, bi_encoder, QUERIES[0])
    assert not any(h.reranked for h in result.hits)
    assert any("returning the first-stage order" in r.getMessage() for r in caplog.records)


def test_a_pipeline_whose_model_is_undeployed_under_searches_fails_open_visibly(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, opensearch_rerank_service: ServeProcess, bi_encoder
) -> None:
    """Searches run while the pipeline's model is undeployed: every answer has its hits; once the model is
    gone they come in RRF order with the rerank processor's failure in ``processor_results``; a new install
    deploys it again and re-ranking comes back. ml-commons' auto-deploy (on by default) would deploy the
    model again at the next search: it is off for this test, so that the model stays undeployed."""
    client = opensearch_node.client
    auto_deploy = "plugins.ml_commons.model_auto_deploy.enable"
    # its own connector and model (another read timeout), so the module's pipeline keeps its model
    arguments = {"service_url": opensearch_rerank_service.url, "api_key": SERVICE_API_KEY, "read_timeout_s": 119}
    pipeline = install_pipeline(client, rerank_pipeline="lrt-test-rerank-undeployed", **arguments)
    query = QUERIES[0]
    body = hybrid_body(query, embed_query(bi_encoder, query), DEPTH, source=["doc_id"], rerank_query=query)
    params = {"search_pipeline": pipeline.rerank_pipeline, "verbose_pipeline": "true"}

    def rerank_outcome() -> tuple[list[str], dict]:
        answer = client.search(index=opensearch_nfcorpus, body=body, params=params)
        outcome = [p for p in answer["processor_results"] if p.get("tag") == "lrt-rerank"]
        assert len(outcome) == 1, answer["processor_results"]
        return [hit["_id"] for hit in answer["hits"]["hits"]], outcome[0]

    answered: list[int] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_searching() -> None:
        try:
            while not stop.is_set():
                ids, _outcome = rerank_outcome()
                answered.append(len(ids))
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            failures.append(exc)

    try:
        ids, outcome = rerank_outcome()
        assert outcome["status"] == "success" and len(ids) == DEPTH
        client.cluster.put_settings(body={"transient": {auto_deploy: False}})
        searching = threading.Thread(target=keep_searching, daemon=True)
        searching.start()
        client.transport.perform_request("POST", f"/_plugins/_ml/models/{pipeline.model_id}/_undeploy")
        deadline = time.monotonic() + 60
        while (state := readiness(client, pipeline.model_id).state) == "DEPLOYED":
            assert time.monotonic() < deadline, f"model {pipeline.model_id} still DEPLOYED 60 s after _undeploy"
            time.sleep(0.5)
        stop.set()
        searching.join(timeout=120)
        assert failures == [] and answered and set(answered) == {DEPTH}
        ready = rerank_model_readiness(client, pipeline.rerank_pipeline)
        assert ready is not None and ready.state != "DEPLOYED", (state, ready)
        ids, outcome = rerank_outcome()
        assert outcome["status"] == "fail" and outcome["error"], outcome
        assert ids == rrf_ids(opensearch_node, opensearch_nfcorpus, bi_encoder, query)[:DEPTH]
        client.cluster.put_settings(body={"transient": {auto_deploy: None}})
        again = install_pipeline(client, rerank_pipeline="lrt-test-rerank-undeployed", **arguments)
        assert again.model_id == pipeline.model_id and again.model.state == "DEPLOYED"
        ids, outcome = rerank_outcome()
        assert outcome["status"] == "success" and len(ids) == DEPTH
    finally:
        stop.set()
        client.cluster.put_settings(body={"transient": {auto_deploy: None}})
        uninstall_pipeline(client, pipeline)
