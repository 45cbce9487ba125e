"""Real servers for the OpenSearch tests: the local node and `lrt-rerank serve`.

Loaded as a pytest plugin (``pytest_plugins = [..., "opensearch_fixtures"]`` in conftest.py).

* ``opensearch_node`` starts the single-node OpenSearch of ``lrt_rerank.ops.opensearch`` on
  127.0.0.1:$LRT_OPENSEARCH_PORT (default 9200) unless it already runs there (CI may start it
  with `lrt-rerank opensearch up`), and stops it at the end only if this session started it.
  A node that cannot start fails every test that needs it, with the error and its log path:
  nothing is skipped.
* ``opensearch_v3_node`` starts an OpenSearch 3.5 node (core + k-NN only) on
  127.0.0.1:$LRT_OPENSEARCH_V3_PORT (default 9210) the same way, with a 512 MB heap; it needs a
  Java 21+ (found as ``lrt-rerank opensearch up`` finds it).
* ``opensearch_rerank_service`` runs `lrt-rerank serve` (the test cross-encoder, an API key).
* ``opensearch_nfcorpus`` loads the bundled NFCorpus test collection into the index
  ``lrt-test-nfcorpus`` from the cached embedded index's embeddings (no re-embedding).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.first_stage.embedded import EMBEDDINGS, EmbeddedFirstStage
from opensearchpy import OpenSearch
from service_fixtures import ServeProcess, free_port, key_file, serving

if TYPE_CHECKING:
    from lrt_rerank.ops.opensearch import NodeSpec

OPENSEARCH_PORT = int(os.environ.get("LRT_OPENSEARCH_PORT", "9200"))
OPENSEARCH_V3_PORT = int(os.environ.get("LRT_OPENSEARCH_V3_PORT", "9210"))
SERVICE_API_KEY = "os-test-key-81d3"
NFCORPUS_INDEX = "lrt-test-nfcorpus"


@dataclass(frozen=True)
class OpenSearchNode:
    url: str
    client: OpenSearch
    log_path: Path


@pytest.fixture(scope="session")
def opensearch_node() -> Iterator[OpenSearchNode]:
    from lrt_rerank.ops.opensearch import NodeSpec

    yield from _running_node(NodeSpec(port=OPENSEARCH_PORT))


@pytest.fixture(scope="session")
def opensearch_v3_node() -> Iterator[OpenSearchNode]:
    from lrt_rerank.ops.opensearch import NodeSpec
    from lrt_rerank.ops.opensearch.spec import V3_VERSION

    yield from _running_node(NodeSpec(version=V3_VERSION, port=OPENSEARCH_V3_PORT, heap_mb=512))


def _running_node(spec: NodeSpec) -> Iterator[OpenSearchNode]:
    """The node of ``spec``, started unless it already runs; stopped at the end only if started here."""
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.templates import TemplateError
    from lrt_rerank.ops.opensearch import NodeError, down, status, up

    already_running = status(spec).version is not None
    try:
        state = up(spec, timeout=600.0)
    except (NodeError, TemplateError) as exc:
        pytest.fail(f"the OpenSearch {spec.version} node did not start:\n{exc}", pytrace=False)
    client = connect(state.url)
    try:
        yield OpenSearchNode(state.url, client, state.log_path)
    finally:
        client.close()
        if not already_running:
            down(spec)


@pytest.fixture(scope="session")
def nfcorpus_test() -> Dataset:
    """The NFCorpus test split bundled with the package (3,633 documents, 323 judged queries)."""
    from lrt_rerank.bundled import bundled_dataset_dir

    return load_dataset(bundled_dataset_dir(), "test")


@pytest.fixture(scope="session")
def embedded_nfcorpus(nfcorpus_test: Dataset) -> EmbeddedFirstStage:
    """The embedded first stage over the same corpus (the cached index; built on first use)."""
    from lrt_rerank.first_stage.index_cache import cached_index

    return cached_index(nfcorpus_test, progress=False)


@pytest.fixture(scope="session")
def bi_encoder(bi_encoder_dir: Path):  # -> lrt_rerank.BiEncoder
    from lrt_rerank import BiEncoder

    return BiEncoder.load(str(bi_encoder_dir))


@pytest.fixture(scope="session")
def opensearch_nfcorpus(opensearch_node: OpenSearchNode, embedded_nfcorpus: EmbeddedFirstStage, bi_encoder) -> str:
    """Index name of the NFCorpus test collection in the node, loaded once per session."""
    return _load_nfcorpus(opensearch_node, embedded_nfcorpus, bi_encoder)


@pytest.fixture(scope="session")
def opensearch_v3_nfcorpus(opensearch_v3_node: OpenSearchNode, embedded_nfcorpus: EmbeddedFirstStage, bi_encoder) -> str:
    """The same index in the 3.5 node."""
    return _load_nfcorpus(opensearch_v3_node, embedded_nfcorpus, bi_encoder)


def _load_nfcorpus(node: OpenSearchNode, embedded_nfcorpus: EmbeddedFirstStage, bi_encoder) -> str:
    from lrt_rerank.opensearch.indexing import index_documents

    vectors = np.load(embedded_nfcorpus.path / EMBEDDINGS, allow_pickle=False)
    report = index_documents(
        node.client, NFCORPUS_INDEX, embedded_nfcorpus.documents, bi_encoder, recreate=True, progress=False, vectors=vectors
    )
    assert report.failures == [], report.failures[:5]
    assert report.indexed == len(embedded_nfcorpus.documents)
    return NFCORPUS_INDEX


@pytest.fixture(scope="session")
def opensearch_rerank_service(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[ServeProcess]:
    """`lrt-rerank serve` with the session cross-encoder and ``SERVICE_API_KEY``."""
    log = tmp_path_factory.mktemp("os-serve") / "serve.log"
    with serving(["--model", str(cross_encoder_dir), "--api-key-file", key_file(log.parent, SERVICE_API_KEY)], log) as server:
        yield server


@pytest.fixture
def unresponsive_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT where connections are accepted by the kernel but never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def closed_endpoint() -> str:
    """http://127.0.0.1:PORT where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


def check_eval_cli(url: str, index: str, dataset: Dataset, max_queries: int, capsys: pytest.CaptureFixture[str]) -> None:
    """`lrt-rerank eval --first-stage URL --reranker none --json` on ``index`` reports BM25, dense and RRF over the queries."""
    import json

    from lrt_rerank.cli import main

    argv = ["eval", "--dataset", str(dataset.path), "--first-stage", url, "--opensearch-index", index]
    assert main([*argv, "--reranker", "none", "--max-queries", str(max_queries), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["system"] for r in records] == ["bm25", "dense", "rrf"]
    assert all(r["queries"] == max_queries and 0.0 < r["MRR@10"] <= 1.0 for r in records)
