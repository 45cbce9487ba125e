"""Tuned fusion (issue 27) and long documents (issue 23) on a real OpenSearch node.

* Node-side: a fusion the node can run (linear, ``minmax``, no prior, no logit) is installed as the
  ``lrt-fusion`` normalization-processor pipeline; the node's order and scores equal the library's
  fusion on the same candidates (scores within the node's 0.001 floor for a pool's lowest score).
* Client-side: any other fusion keeps RRF in the node, and ``HybridSearcher(fusion=)`` applies it.
* Three paths, one order: ``Pipeline`` over the node's first stage, the rerank service given the
  candidates' first-stage scores, and ``HybridSearcher``.
* The connector sends the long-document fields: the server-side re-rank equals the client-side one with
  the cross-encoder reading windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lrt_rerank import CrossEncoder
from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset
from lrt_rerank.first_stage.base import FUSION_DEPTH
from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
from lrt_rerank.opensearch.pipeline import (
    FUSION_PIPELINE,
    RRF_PIPELINE,
    install_pipeline,
    node_fusion_refusal,
    place_fusion,
    uninstall_pipeline,
)
from lrt_rerank.opensearch.searcher import HybridSearcher, embed_query, search_server_side
from lrt_rerank.pipeline import Pipeline
from lrt_rerank.rerank.fusion import Fusion, first_stage_signals
from lrt_rerank.service.app import create_app
from lrt_rerank.service.served import FUSION_ENV, fusion_env
from lrt_rerank.service.settings import ServiceSettings
from opensearch_fixtures import SERVICE_API_KEY, OpenSearchNode
from service_fixtures import ServeProcess, wait_healthy

pytestmark = pytest.mark.integration

DEPTH = 20
QUERIES = 6
NODE_FUSION = Fusion("linear", {"bm25": 0.3, "dense": 0.7, "prior": 0.0, "reranker": 0.0}, "minmax")
CLIENT_FUSION = Fusion("linear", {"bm25": 1.0, "dense": 2.0, "prior": 0.25, "reranker": 0.5}, "zscore")


@pytest.fixture(scope="module")
def queries(nfcorpus_test: Dataset) -> list[str]:
    return [nfcorpus_test.queries[q] for q in sorted(nfcorpus_test.queries)[:QUERIES]]


@pytest.fixture(scope="module")
def stage(opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder) -> OpenSearchFirstStage:
    return OpenSearchFirstStage(opensearch_node.client, opensearch_nfcorpus, bi_encoder)


@pytest.fixture(scope="module")
def encoder(cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(str(cross_encoder_dir))


def test_a_fusion_the_node_can_run_is_installed_there_and_orders_as_the_library(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder, stage, queries
) -> None:
    client = opensearch_node.client
    placed = place_fusion(client, NODE_FUSION)
    assert (placed.where, placed.pipeline, placed.pool) == ("node", FUSION_PIPELINE, 200)
    processor = client.transport.perform_request("GET", f"/_search/pipeline/{FUSION_PIPELINE}")[FUSION_PIPELINE]
    normalization = processor["phase_results_processors"][0]["normalization-processor"]
    assert normalization["normalization"]["technique"] == "min_max"
    assert normalization["combination"] == {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}}
    assert place_fusion(client, NODE_FUSION) == placed  # idempotent
    searcher = HybridSearcher(client, opensearch_nfcorpus, bi_encoder, None, depth=50, pipeline=placed.pipeline, pool=placed.pool)
    for query in queries:
        raw = searcher.first_stage(query)
        ids, node = [str(h["_id"]) for h in raw], np.array([h["_score"] for h in raw])
        assert len(ids) == 50
        library = NODE_FUSION.scores(first_stage_signals(stage, query, ids))  # the weights sum to 1, as the node's
        np.testing.assert_allclose(node, library, atol=1e-3 * 0.7 + 1e-5, err_msg=query)
        # same order: every pair the library separates by more than the node's floor is ordered the same way
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                assert library[i] >= library[j] - 1e-3, (query, ids[i], ids[j], library[i], library[j])
        # and the searcher's hits keep the node's order when no re-ranker is given
        assert [h.id for h in searcher.search(query, k=10).hits] == ids[:10]


def test_other_fusions_keep_rrf_in_the_node_with_the_reason(opensearch_node: OpenSearchNode) -> None:
    placed = place_fusion(opensearch_node.client, CLIENT_FUSION)
    assert (placed.where, placed.pipeline, placed.pool) == ("client", RRF_PIPELINE, None)
    assert "logit" in placed.reason
    scifact = Fusion("linear", {"bm25": 1.0, "dense": 2.0, "prior": 0.25, "reranker": 0.0}, "zscore")
    assert "prior" in (node_fusion_refusal(scifact, "2.19.6") or "")
    rrf = Fusion()
    assert place_fusion(opensearch_node.client, rrf).where == "node" and place_fusion(opensearch_node.client, rrf).pipeline == RRF_PIPELINE
    no_prior = Fusion("linear", {"bm25": 1.0, "dense": 1.0, "prior": 0.0, "reranker": 0.0}, "zscore")
    assert "zscore" in (node_fusion_refusal(no_prior, "3.1.0") or "")
    assert "2.19" in (node_fusion_refusal(NODE_FUSION, "2.17.1") or "")
    assert "logit" in (node_fusion_refusal(Fusion("rrf", {"prior": 1.0, "reranker": 1.0, "bm25": 0.0, "dense": 0.0}), "2.19.6") or "")


@pytest.fixture
def fusion_service(encoder: CrossEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(FUSION_ENV, fusion_env(CLIENT_FUSION.save(tmp_path / "fusion.json")))
    with TestClient(create_app(ServiceSettings(), loader=lambda: encoder)) as client:
        wait_healthy(client)
        yield client


def test_pipeline_service_and_opensearch_give_one_order_for_one_fusion(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, bi_encoder, stage, encoder, fusion_service, queries
) -> None:
    client = opensearch_node.client
    pipeline = Pipeline(stage, encoder, rerank_depth=DEPTH, fusion=CLIENT_FUSION)
    searcher = HybridSearcher(client, opensearch_nfcorpus, bi_encoder, encoder, depth=DEPTH, fusion=CLIENT_FUSION, pool=FUSION_DEPTH)
    interpolated = Pipeline(stage, encoder, rerank_depth=DEPTH)
    differs = 0
    for query in queries:
        candidates = stage.search(query, FUSION_DEPTH, "rrf")[:DEPTH]
        ids = [c.id for c in candidates]
        assert [h["_id"] for h in searcher.first_stage(query)] == ids  # the same candidates on every path
        signals = first_stage_signals(stage, query, ids)
        body = {
            "query": query,
            "documents": stage.get_texts(ids),
            "raw_scores": True,
            "first_stage_scores": {
                "bm25": signals.bm25.tolist(), "dense": signals.dense.tolist(),
                "bm25_rank": signals.bm25_rank.tolist(), "dense_rank": signals.dense_rank.tolist(),
                "bm25_range": signals.bm25_range, "dense_range": signals.dense_range,
            },
        }
        answer = fusion_service.post("/v1/rerank", json=body)
        assert answer.status_code == 200, answer.text
        served = [ids[r["index"]] for r in answer.json()["results"]]
        embedded = [h.id for h in pipeline.search(query, k=DEPTH)]
        searched = searcher.search(query)
        assert embedded == served == [h.id for h in searched.hits], query
        assert searched.status.value == "complete"
        differs += embedded != [h.id for h in interpolated.search(query, k=DEPTH)]
    assert differs > 0  # the fusion is not the plain interpolated re-rank: the test tells them apart


def test_the_connector_sends_the_long_document_fields(
    opensearch_node: OpenSearchNode,
    opensearch_nfcorpus: str,
    opensearch_rerank_service: ServeProcess,
    bi_encoder,
    encoder,
    queries,
) -> None:
    client = opensearch_node.client
    windows = {"long_documents": "windows", "max_windows": 3, "aggregate": "max", "window_stride": None}
    installed = install_pipeline(
        client, opensearch_rerank_service.url, api_key=SERVICE_API_KEY, long_documents=windows, rerank_pipeline="lrt-test-windows"
    )
    try:
        connector = client.transport.perform_request("GET", f"/_plugins/_ml/connectors/{installed.connector_id}")
        sent = connector["actions"][0]["request_body"]
        assert '"long_documents": "windows"' in sent and '"max_windows": 3' in sent and "window_stride" not in sent
        viewed = encoder.with_windows("windows", None, 3, "max")
        local = HybridSearcher(client, opensearch_nfcorpus, bi_encoder, viewed, depth=DEPTH)
        truncating = HybridSearcher(client, opensearch_nfcorpus, bi_encoder, encoder, depth=DEPTH)
        differs = 0
        for query in queries:
            server = search_server_side(client, opensearch_nfcorpus, query, embed_query(bi_encoder, query), DEPTH, installed.rerank_pipeline)
            expected = local.search(query)
            assert [i for i, _ in server] == [h.id for h in expected.hits], query
            np.testing.assert_allclose([s for _, s in server], [h.score for h in expected.hits], rtol=1e-5)
            differs += [i for i, _ in server] != [h.id for h in truncating.search(query).hits]
        assert differs > 0  # windows change the order of some query: the fields reached the service
    finally:
        uninstall_pipeline(client, installed)


def test_cli_places_the_fusion_and_refuses_bad_window_flags(
    opensearch_node: OpenSearchNode, opensearch_rerank_service: ServeProcess, tmp_path: Path, capsys
) -> None:
    path = NODE_FUSION.save(tmp_path / "fusion.json")
    key = tmp_path / "key"
    key.write_text(SERVICE_API_KEY + "\n")
    argv = ["opensearch", "pipeline", "--url", opensearch_node.url, "--service-url", opensearch_rerank_service.url,
            "--service-api-key-file", str(key)]
    assert main([*argv, "--fusion", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fusion"]["where"] == "node" and report["fusion"]["pipeline"] == FUSION_PIPELINE
    assert report["rerank_pipeline"] == "lrt-rrf-rerank"
    assert main([*argv, "--long-documents", "windows", "--max-windows", "0"]) == 1
    assert "max_windows" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main([*argv, "--fusion", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_eval_through_the_node_reproduces_the_embedded_tuned_row(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, embedded_nfcorpus, nfcorpus_test: Dataset, tmp_path: Path, capsys
) -> None:
    fusion = Fusion("linear", {"bm25": 1.0, "dense": 2.0, "prior": 0.25, "reranker": 0.0}, "zscore")
    path = fusion.save(tmp_path / "fusion.json")
    common = ["eval", "--dataset", str(nfcorpus_test.path), "--reranker", "none", "--fusion", str(path), "--max-queries", "40", "--json"]
    rows = {}
    for name, first_stage in (
        ("embedded", ["--index", str(embedded_nfcorpus.path)]),
        ("opensearch", ["--first-stage", opensearch_node.url, "--opensearch-index", opensearch_nfcorpus]),
    ):
        assert main([*common, *first_stage]) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        rows[name] = {r["system"]: r for r in records}
    for where in rows.values():
        assert where["tuned"]["queries"] == 40 and where["tuned"]["MRR@10"] != where["rrf"]["MRR@10"]
    assert abs(rows["opensearch"]["tuned"]["MRR@10"] - rows["embedded"]["tuned"]["MRR@10"]) <= 0.03, rows
