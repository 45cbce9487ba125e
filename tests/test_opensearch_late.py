"""Late interaction at index time for OpenSearch: `opensearch index --late-interaction` on a real 3.5 node,
lateInteractionScore in the node against ColBERT.score on the same tokens, the compact int8 option, and the
service's Redis document cache filled at index time (a rerank then encodes no document).

The model is the tiny random colbert-ai checkpoint of tests/test_colbert.py (8 dimensions, 20 document tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from lrt_rerank.cli import main
from lrt_rerank.datasets import Dataset, Document
from lrt_rerank.late import ColBERT
from lrt_rerank.models.importers.colbert import import_colbert
from lrt_rerank.opensearch import index_documents
from lrt_rerank.opensearch.late import TOKENS_FIELD, LateIndexReport, index_late_interaction, rescore_in_node
from opensearch_fixtures import OpenSearchNode
from opensearchpy import OpenSearch
from service_fixtures import RedisServer, ServeProcess, metric
from test_colbert import stanford_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.train]

INDEX = "lrt-test-late"
DOCS = 60
QUERIES = ("statin use and breast cancer survival", "vitamin D deficiency and depression", "does milk cause mucus")
QUERY_ROWS = 12  # the model's query_length: the node scores each query row 1 + its best dot product


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("os-colbert")
    snapshot, _, _ = stanford_snapshot(tmp)
    return import_colbert(snapshot, tmp / "model")


@pytest.fixture(scope="module")
def documents(nfcorpus_test: Dataset) -> list[Document]:
    return list(nfcorpus_test.corpus.values())[:DOCS]


@pytest.fixture(scope="module")
def late_index(opensearch_v3_node: OpenSearchNode, documents: list[Document], bi_encoder) -> str:
    report = index_documents(opensearch_v3_node.client, INDEX, documents, bi_encoder, recreate=True, progress=False)
    assert report.indexed == DOCS
    return INDEX


def store_tokens(
    node: OpenSearchNode, index: str, colbert_dir: Path, documents: list[Document], dtype: str
) -> tuple[ColBERT, LateIndexReport, list[list[float]]]:
    """The model, what index_late_interaction reported, and the stored rows of the first document."""
    model = ColBERT.load(colbert_dir)
    ids, texts = [d.id for d in documents], [d.full_text for d in documents]
    report = index_late_interaction(model, ids, texts, client=node.client, index=index, node_dtype=dtype, batch_size=16)
    return model, report, node.client.get(index=index, id=ids[0])["_source"][TOKENS_FIELD]


def rescored(client: OpenSearch, index: str, model: ColBERT, documents: list[Document], query: str) -> tuple[list[tuple[str, float]], dict[str, float]]:
    """The node's (id, score) of every document, best first, and ColBERT.score's score of each id."""
    ids, texts = [d.id for d in documents], [d.full_text for d in documents]
    reference = dict(zip(ids, (float(s) for s in model.score(query, texts)), strict=True))
    return rescore_in_node(client, index, model.encode_query(query), ids), reference


def node_order_matches(node: list[tuple[str, float]], reference: dict[str, float], tolerance: float) -> None:
    """The node's order is the reference's, except between scores closer than ``tolerance``."""
    for (a, _), (b, _) in zip(node, node[1:], strict=False):
        assert reference[a] >= reference[b] - tolerance, (a, b, reference[a], reference[b])


def test_late_interaction_score_in_the_node_orders_as_colbert_score(
    opensearch_v3_node: OpenSearchNode, late_index: str, documents: list[Document], colbert_dir: Path
) -> None:
    client = opensearch_v3_node.client
    model, report, stored = store_tokens(opensearch_v3_node, late_index, colbert_dir, documents, "float16")
    assert report.documents == DOCS and report.tokens > DOCS
    np.testing.assert_allclose(stored, model.encode_documents([documents[0].full_text]).matrices()[0], atol=2.0**-11)
    ids = [d.id for d in documents]
    fp16_step = QUERY_ROWS * 2.0**-11  # a sum of QUERY_ROWS unit-norm dot products against fp16-rounded rows
    for query in QUERIES:
        node, reference = rescored(client, late_index, model, documents, query)
        assert sorted(i for i, _ in node) == sorted(ids)
        node_order_matches(node, reference, fp16_step)
        # the node's score is MaxSim + one per query row (Lucene's 1 + dot for a non-negative inner product)
        assert max(abs(score - QUERY_ROWS - reference[i]) for i, score in node) <= fp16_step + 1e-4


def test_int8_in_the_node_agrees_with_fp16(
    opensearch_v3_node: OpenSearchNode, late_index: str, documents: list[Document], colbert_dir: Path
) -> None:
    client = opensearch_v3_node.client
    model, report, rows = store_tokens(opensearch_v3_node, late_index, colbert_dir, documents, "int8")
    stored = np.asarray(rows)
    assert stored.dtype.kind == "i" and np.abs(stored).max() <= 127
    texts = [d.full_text for d in documents]
    assert report.node_json_bytes < 0.7 * len(json.dumps(model.encode_documents(texts).matrices()[0].tolist())) * DOCS
    for query in QUERIES:
        node, reference = rescored(client, late_index, model, documents, query)
        # int8 rows (127 x, rounded): each dot moves by at most sqrt(dim) * 0.5 / 127 for unit rows
        node_order_matches(node, reference, QUERY_ROWS * np.sqrt(model.dim) * 0.5 / 127)
        top10 = {i for i, _ in node[:10]}
        assert len(top10 & set(sorted(reference, key=reference.__getitem__, reverse=True)[:10])) >= 8


def test_cli_fills_the_node_and_the_service_cache_then_a_rerank_encodes_no_document(
    opensearch_v3_node: OpenSearchNode,
    documents: list[Document],
    colbert_dir: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    docs = documents[:12]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs), encoding="utf-8"
    )
    index = "lrt-test-late-cli"
    argv = ["opensearch", "index", "--dataset", str(tmp_path), "--index", index, "--url", opensearch_v3_node.url, "--recreate"]
    argv += ["--late-interaction", str(colbert_dir), "--late-dtype", "int8", "--redis-url", redis_server.url]
    try:
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "late interaction: " in out and f"of {len(docs)} documents encoded once" in out
        assert "stored in node (int8, " in out and "Redis (float16, " in out
        model = ColBERT.load(colbert_dir)
        keys = list(redis_server.client().scan_iter(match=f"lrt:doc:{model.fingerprint}:*".encode()))
        assert len(keys) >= len(docs)
        # the texts the node's rerank pipeline sends (the `content` field) are read from Redis, none encoded
        contents = [h["_source"]["content"] for h in opensearch_v3_node.client.mget(index=index, body={"ids": [d.id for d in docs]})["docs"]]
        server = ServeProcess(["--model", str(colbert_dir), "--threads", "1", "--redis-url", redis_server.url], tmp_path / "serve.log")
        server.wait_ready()
        try:
            answer = httpx.post(server.url + "/v1/rerank", json={"query": QUERIES[0], "documents": contents}, timeout=60)
            assert answer.status_code == 200, answer.text
            text = httpx.get(server.url + "/metrics", timeout=10).text
            assert metric(text, "lrt_rerank_document_cache_misses_total") == 0
            assert metric(text, "lrt_rerank_document_cache_hits_total", tier="redis") == len(docs)
            scores = np.zeros(len(docs), np.float32)
            for r in answer.json()["results"]:
                scores[r["index"]] = r["relevance_score"]
            np.testing.assert_allclose(scores, model.score(QUERIES[0], contents), atol=QUERY_ROWS * 2.0**-11 + 1e-5)
        finally:
            server.stop()
    finally:
        opensearch_v3_node.client.indices.delete(index=index, ignore_unavailable=True)
