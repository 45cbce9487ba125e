"""Latency of hybrid search in OpenSearch, with and without re-ranking, on the bundled NFCorpus test set.

Run:  pytest benches/bench_opensearch.py -o python_files='bench_*.py' --benchmark-columns=min,median,mean,max,rounds

It starts what it needs, as the tests do: the local OpenSearch node (unless one already answers on
$LRT_OPENSEARCH_PORT), the NFCorpus index, and `lrt-rerank serve` with the default model.
All four benchmarks run the same queries in turn, so their medians can be compared directly.

  rrf_only      the hybrid query (BM25 + k-NN, RRF in the node) for the top 50; query embedding included
  server_side   the same through the rerank pipeline: the node sends the 50 hits to the service (HTTP)
  client_side   the hybrid query, then the hits re-ranked in this process (``HybridSearcher``)
  rerank_only   ``CrossEncoder.score`` of one query's 50 hits (what both re-ranking paths pay)

What the server-side path adds over the in-process one (the ml-commons round trip, JSON, the
service's queueing) is the difference of the medians ``server_side - client_side``. No score is
served from a cache: the in-process encoder has none and the service's holds a single entry.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lrt_rerank import CrossEncoder  # noqa: E402
from lrt_rerank.datasets import Dataset  # noqa: E402
from lrt_rerank.opensearch import HybridSearcher, InstalledPipeline, install_pipeline, search_server_side, uninstall_pipeline  # noqa: E402
from lrt_rerank.opensearch.searcher import embed_query  # noqa: E402
from opensearch_fixtures import (  # noqa: E402,F401  (fixtures used by name)
    SERVICE_API_KEY,
    OpenSearchNode,
    bi_encoder,
    embedded_nfcorpus,
    nfcorpus_test,
    opensearch_nfcorpus,
    opensearch_node,
)
from service_fixtures import ServeProcess, cross_encoder_dir, key_file, serving  # noqa: E402,F401

DEPTH = 50
QUERIES = 30


@pytest.fixture(scope="session")
def bi_encoder_dir() -> Path:
    from lrt_rerank.models.resolve import default_model_dir

    return default_model_dir("bi-encoder")


@pytest.fixture(scope="module")
def uncached_service(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path) -> Iterator[ServeProcess]:  # noqa: F811
    """`lrt-rerank serve` with the default model and a one-entry score cache, so every request scores."""
    folder = tmp_path_factory.mktemp("bench-serve")
    args = ["--model", str(cross_encoder_dir), "--api-key-file", key_file(folder, SERVICE_API_KEY), "--cache-capacity", "1"]
    with serving(args, folder / "serve.log") as server:
        yield server


@pytest.fixture(scope="module")
def installed(opensearch_node: OpenSearchNode, uncached_service: ServeProcess) -> Iterator[InstalledPipeline]:  # noqa: F811
    pipeline = install_pipeline(
        opensearch_node.client, service_url=uncached_service.url, api_key=SERVICE_API_KEY, read_timeout_s=60,
        rerank_pipeline="lrt-bench-rerank",
    )
    try:
        yield pipeline
    finally:
        uninstall_pipeline(opensearch_node.client, pipeline)


@pytest.fixture(scope="module")
def queries(nfcorpus_test: Dataset) -> Iterator[str]:  # noqa: F811
    return itertools.cycle([nfcorpus_test.queries[q] for q in nfcorpus_test.eval_query_ids()[:QUERIES]])


@pytest.fixture(scope="module")
def encoder(cross_encoder_dir: Path) -> CrossEncoder:  # noqa: F811
    return CrossEncoder.load(str(cross_encoder_dir))  # no ScoreCache: every call scores


def test_rrf_only(benchmark, opensearch_node, opensearch_nfcorpus, bi_encoder, queries) -> None:  # noqa: F811
    searcher = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, None, depth=DEPTH)
    hits = benchmark(lambda: searcher.search(next(queries)).hits)
    assert len(hits) == DEPTH


def test_server_side(benchmark, opensearch_node, opensearch_nfcorpus, bi_encoder, installed, queries) -> None:  # noqa: F811
    def run() -> list[tuple[str, float]]:
        query = next(queries)
        return search_server_side(opensearch_node.client, opensearch_nfcorpus, query, embed_query(bi_encoder, query), DEPTH, installed.rerank_pipeline)

    hits = benchmark(run)
    assert len(hits) == DEPTH


def test_client_side(benchmark, opensearch_node, opensearch_nfcorpus, bi_encoder, encoder, queries) -> None:  # noqa: F811
    searcher = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, encoder, depth=DEPTH)
    result = benchmark(lambda: searcher.search(next(queries)))
    assert result.reranked and len(result.hits) == DEPTH


def test_rerank_only(benchmark, opensearch_node, opensearch_nfcorpus, bi_encoder, encoder, queries) -> None:  # noqa: F811
    searcher = HybridSearcher(opensearch_node.client, opensearch_nfcorpus, bi_encoder, None, depth=DEPTH)
    batches = [(q, [str(h.source.get("content", "")) for h in searcher.search(q).hits]) for q in itertools.islice(queries, QUERIES)]
    cycle = itertools.cycle(batches)

    def run() -> int:
        query, passages = next(cycle)
        return len(encoder.score(query, passages))

    assert benchmark(run) == DEPTH
