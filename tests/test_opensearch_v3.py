"""An OpenSearch 3.5 node (core + k-NN from Maven Central): up, index, client-side hybrid search and eval, the pipeline refusal."""

from __future__ import annotations

import numpy as np
import pytest
from lrt_rerank import CrossEncoder
from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import evaluate
from lrt_rerank.first_stage.embedded import EmbeddedFirstStage
from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
from lrt_rerank.opensearch import HybridSearcher, PipelineError, RemoteReranker, install_pipeline
from lrt_rerank.opensearch.queries import knn_query, match_query, search_body
from lrt_rerank.opensearch.searcher import embed_query
from lrt_rerank.rerank.fusion import FEATURE_POOL, Fusion
from opensearch_fixtures import SERVICE_API_KEY, OpenSearchNode, check_eval_cli
from opensearchpy.exceptions import NotFoundError
from service_fixtures import ServeProcess

pytestmark = pytest.mark.integration

DEPTH = 20
QUERY = "statin use and breast cancer survival"


def test_node_is_35_with_knn_alone(opensearch_v3_node: OpenSearchNode) -> None:
    client = opensearch_v3_node.client
    assert client.info()["version"]["number"] == "3.5.0"
    (node,) = client.nodes.info(metric="plugins,jvm")["nodes"].values()
    assert {p["name"] for p in node["plugins"]} == {"opensearch-knn"}
    assert {m["name"] for m in node["modules"]} >= {"lang-painless", "analysis-common", "transport-grpc"}
    assert int(node["jvm"]["version"].split(".")[0]) >= 21
    assert node["jvm"]["mem"]["heap_max_in_bytes"] <= 512 << 20


def test_index_holds_a_lucene_hnsw_vector(opensearch_v3_node: OpenSearchNode, opensearch_v3_nfcorpus: str) -> None:
    client = opensearch_v3_node.client
    mappings = client.indices.get_mapping(index=opensearch_v3_nfcorpus)[opensearch_v3_nfcorpus]["mappings"]
    assert mappings["properties"]["embedding"]["method"]["engine"] == "lucene"
    assert client.count(index=opensearch_v3_nfcorpus)["count"] == 3633


def test_client_side_rrf_fuses_the_two_searches(opensearch_v3_node: OpenSearchNode, opensearch_v3_nfcorpus: str, bi_encoder) -> None:
    """RRF (k=60) recomputed here from the node's own BM25 and k-NN runs."""
    client = opensearch_v3_node.client
    vector = embed_query(bi_encoder, QUERY)
    expected: dict[str, float] = {}
    for query in (match_query(QUERY), knn_query(vector, DEPTH)):
        hits = client.search(index=opensearch_v3_nfcorpus, body=search_body(query, DEPTH))["hits"]["hits"]
        for rank, hit in enumerate(hits, start=1):
            expected[hit["_id"]] = expected.get(hit["_id"], 0.0) + 1.0 / (60 + rank)
    raw = HybridSearcher(client, opensearch_v3_nfcorpus, bi_encoder, None, depth=DEPTH, pipeline=None).first_stage(QUERY)
    assert len(raw) == DEPTH
    assert [h["_score"] for h in raw] == pytest.approx(sorted(expected.values(), reverse=True)[:DEPTH], rel=1e-6)
    assert all(expected[h["_id"]] == pytest.approx(h["_score"], rel=1e-6) for h in raw)
    assert all(h["_source"]["content"] for h in raw)


def test_eval_through_the_node_is_within_003_of_the_embedded_first_stage(
    opensearch_v3_node: OpenSearchNode,
    opensearch_v3_nfcorpus: str,
    embedded_nfcorpus: EmbeddedFirstStage,
    nfcorpus_test: Dataset,
    bi_encoder,
) -> None:
    """NFCorpus test, all 323 judged queries, RRF first stage."""
    stage = OpenSearchFirstStage.connect(opensearch_v3_node.url, opensearch_v3_nfcorpus, encoder=bi_encoder)
    assert stage.pipeline is None  # no neural-search: fused in this process
    embedded = evaluate(nfcorpus_test, embedded_nfcorpus, None, progress=False, systems=("rrf",))[0]
    remote = evaluate(nfcorpus_test, stage, None, progress=False, systems=("rrf",))[0]
    assert remote.queries == embedded.queries == 323
    for metric in ("MRR@10", "NDCG@10"):
        assert abs(remote.metrics[metric] - embedded.metrics[metric]) <= 0.03, (metric, remote.metrics, embedded.metrics)


def test_eval_cli_takes_the_35_node_as_first_stage(
    opensearch_v3_node: OpenSearchNode, opensearch_v3_nfcorpus: str, nfcorpus_test: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    check_eval_cli(opensearch_v3_node.url, opensearch_v3_nfcorpus, nfcorpus_test, 10, capsys)


def test_client_side_rerank_with_a_cross_encoder(
    opensearch_v3_node: OpenSearchNode, opensearch_v3_nfcorpus: str, bi_encoder, cross_encoder_dir
) -> None:
    client = opensearch_v3_node.client
    model = CrossEncoder.load(str(cross_encoder_dir))
    searcher = HybridSearcher(client, opensearch_v3_nfcorpus, bi_encoder, model, depth=DEPTH, pipeline=None, interpolation=0.0)
    result = searcher.search(QUERY)
    assert result.reranked == DEPTH and result.error is None
    raw = searcher.first_stage(QUERY)
    logits = np.asarray(model.score(QUERY, [h["_source"]["content"] for h in raw]), dtype=np.float32)
    assert [h.id for h in result.hits] == [raw[i]["_id"] for i in np.argsort(-logits, kind="stable")]


def test_pipeline_is_refused_naming_the_missing_plugins(
    opensearch_v3_node: OpenSearchNode, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PipelineError, match="neural-search.*client-side searcher"):
        install_pipeline(opensearch_v3_node.client)
    assert main(["opensearch", "pipeline", "--url", opensearch_v3_node.url]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "OpenSearch 3.5.0 has no opensearch-neural-search and no opensearch-ml plugin" in err
    assert "eval --first-stage URL" in err
    with pytest.raises(NotFoundError):  # nothing was installed
        opensearch_v3_node.client.transport.perform_request("GET", "/_search/pipeline/lrt-rrf")


def test_client_side_tuned_fusion_on_the_35_node(opensearch_v3_node: OpenSearchNode, opensearch_v3_nfcorpus: str, bi_encoder) -> None:
    """A fusion weighing the dense score alone orders the candidates as the node's own k-NN search does."""
    client = opensearch_v3_node.client
    dense_only = Fusion("linear", {"bm25": 0.0, "dense": 1.0, "prior": 0.0, "reranker": 0.0}, "minmax")
    searcher = HybridSearcher(client, opensearch_v3_nfcorpus, bi_encoder, None, depth=DEPTH, pipeline=None, fusion=dense_only)
    result = searcher.search(QUERY)
    candidates = {h["_id"] for h in searcher.first_stage(QUERY)}
    assert {h.id for h in result.hits} == candidates
    knn = client.search(index=opensearch_v3_nfcorpus, body=search_body(knn_query(embed_query(bi_encoder, QUERY), FEATURE_POOL), FEATURE_POOL))
    in_pool = [h["_id"] for h in knn["hits"]["hits"] if h["_id"] in candidates]
    assert len(in_pool) >= DEPTH // 2
    assert [h.id for h in result.hits][: len(in_pool)] == in_pool


def test_client_side_rerank_through_the_service_on_the_35_node(
    opensearch_v3_node: OpenSearchNode, opensearch_v3_nfcorpus: str, opensearch_rerank_service: ServeProcess, bi_encoder, cross_encoder_dir
) -> None:
    client = opensearch_v3_node.client
    local = HybridSearcher(client, opensearch_v3_nfcorpus, bi_encoder, CrossEncoder.load(str(cross_encoder_dir)), depth=DEPTH, pipeline=None)
    remote = HybridSearcher(
        client, opensearch_v3_nfcorpus, bi_encoder, RemoteReranker(opensearch_rerank_service.url, SERVICE_API_KEY, timeout_s=120),
        depth=DEPTH, pipeline=None, interpolation=local.interpolation,
    )
    a, b = local.search(QUERY), remote.search(QUERY)
    assert a.reranked == b.reranked == DEPTH
    assert [h.id for h in a.hits] == [h.id for h in b.hits]
