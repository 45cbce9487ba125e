"""Latency of the embedded pipeline on NFCorpus (long documents) and msmarco-sample (short passages).

Run:  pytest benches/bench_pipeline.py -o python_files='bench_*.py' --benchmark-columns=min,median,mean,max,rounds

Benchmarks, per dataset:
  first_stage     RRF(BM25 top-100, dense top-100) for one query (query embedding included)
  rerank_top50    CrossEncoder.score of one query against its 50 first-stage candidates
  pipeline        Pipeline.search: first stage + re-rank of the top 50
  overhead        Pipeline.search with first stage and re-ranker replaced by precomputed results:
                  what the pipeline itself adds (texts lookup, merge, bookkeeping)
  cached_rerank   the same 50 pairs scored again through a warm ScoreCache
  cached_pipeline the same query searched twice with a cache (the second call is timed)

The indexes are built on first use into $LRT_RERANK_HOME/indexes (minutes), then reused.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank import CrossEncoder, ScoreCache
from lrt_rerank.first_stage.index_cache import cached_index
from lrt_rerank.datasets import load_dataset
from lrt_rerank.first_stage.base import Candidate, FirstStage, System
from lrt_rerank.first_stage.embedded import EmbeddedFirstStage
from lrt_rerank.pipeline import Pipeline

DATA = Path(os.environ.get("LRT_RERANK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATASETS = ("nfcorpus", "msmarco-sample")
QUERIES = 20
RERANK_ROUNDS = 10


@dataclass
class Setup:
    stage: EmbeddedFirstStage
    queries: list[str]
    reranker: CrossEncoder


@pytest.fixture(scope="module", params=DATASETS)
def setup(request: pytest.FixtureRequest) -> Setup:
    root = DATA / request.param
    if not (root / "corpus.jsonl").is_file():
        pytest.skip(f"{root}: benchmark data not found (set LRT_RERANK_DATA)")
    dataset = load_dataset(root, "test")
    queries = [dataset.queries[q] for q in dataset.eval_query_ids()[:QUERIES]]
    return Setup(cached_index(dataset), queries, CrossEncoder.load())


def _cycle(items: Sequence[str]) -> Iterator[str]:
    return itertools.cycle(items)


def test_first_stage(benchmark, setup: Setup) -> None:
    queries = _cycle(setup.queries)
    benchmark(lambda: setup.stage.search(next(queries), 100, "rrf"))


def test_rerank_top50(benchmark, setup: Setup) -> None:
    pairs = [(q, setup.stage.get_texts([c.id for c in setup.stage.search(q, 50, "rrf")])) for q in setup.queries]
    it = itertools.cycle(pairs)
    benchmark.pedantic(lambda: setup.reranker.score(*next(it)), rounds=RERANK_ROUNDS, iterations=1, warmup_rounds=1)


def test_pipeline(benchmark, setup: Setup) -> None:
    pipeline = Pipeline(setup.stage, setup.reranker, rerank_depth=50)
    queries = _cycle(setup.queries)
    benchmark.pedantic(
        lambda: pipeline.search(next(queries), k=10), rounds=RERANK_ROUNDS, iterations=1, warmup_rounds=1
    )


class _Precomputed(FirstStage):
    """The real document store, with candidates computed once per query beforehand."""

    def __init__(self, stage: EmbeddedFirstStage, queries: Sequence[str]) -> None:
        self.stage = stage
        self.runs = {q: stage.search(q, 100, "rrf") for q in queries}

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        return self.runs[query][:k]

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        return self.stage.get_texts(ids)


class _FixedScores:
    def score(self, query: str, passages: list[str]) -> np.ndarray:
        return np.linspace(1.0, 0.0, num=len(passages), dtype=np.float32)


def test_overhead(benchmark, setup: Setup) -> None:
    pipeline = Pipeline(_Precomputed(setup.stage, setup.queries), _FixedScores(), rerank_depth=50)
    queries = _cycle(setup.queries)
    benchmark(lambda: pipeline.search(next(queries), k=10))


def test_cached_rerank(benchmark, setup: Setup) -> None:
    cache = ScoreCache(capacity=100_000)
    reranker = CrossEncoder.load(cache=cache)
    query = setup.queries[0]
    texts = setup.stage.get_texts([c.id for c in setup.stage.search(query, 50, "rrf")])
    reranker.score(query, texts)  # fill the cache
    benchmark(lambda: reranker.score(query, texts))
    assert cache.hits >= 50


def test_cached_pipeline(benchmark, setup: Setup) -> None:
    cache = ScoreCache(capacity=100_000)
    pipeline = Pipeline(setup.stage, CrossEncoder.load(cache=cache), rerank_depth=50, cache=cache)
    query = setup.queries[0]
    pipeline.search(query, k=10)  # first call fills the cache
    benchmark(lambda: pipeline.search(query, k=10))
