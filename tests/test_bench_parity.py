"""The agreement benches/bench_core.py relies on, checked in the test suite (the benches themselves only
time): on the BM25 top-50 of the first judged test query of NFCorpus and msmarco-sample, at 256 tokens,
the Rust engine and the bench's plain-Python peer (HF tokenizers + onnxruntime, one batch padded to the
longest) give the same FP32 scores, and INT8 scores that rank alike (INT8 activations are quantized per
batch, so batch composition moves them slightly)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench_modules import load_bench
from lrt_rerank import CrossEncoder

bench = load_bench("bench_core")


@pytest.fixture(scope="module")
def model_dirs(shared_data: Path) -> dict[str, Path]:
    return bench.build_model_dirs()


@pytest.fixture(scope="module")
def first_query() -> Callable[[str], tuple[str, list[str]]]:
    """(query, BM25 top-50) of a dataset's first judged test query, indexed once per dataset."""
    return functools.cache(lambda dataset: bench.bm25_candidates(dataset, "test", 1)[0])


@pytest.mark.parametrize("dataset", ["nfcorpus", "msmarco-sample"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engine_and_python_peer_agree(
    model_dirs: dict[str, Path], first_query: Callable[[str], tuple[str, list[str]]], dataset: str, precision: str
) -> None:
    query, passages = first_query(dataset)
    assert len(passages) == bench.DEPTH
    model_dir = model_dirs[precision]
    engine = CrossEncoder.load(model_dir, threads=bench.THREADS, max_length=256)
    ours = engine.score(query, passages)
    theirs = bench.PythonPeer(model_dir, 256).score(query, passages)
    assert ours.shape == theirs.shape == (bench.DEPTH,)
    if precision == "fp32":
        np.testing.assert_allclose(theirs, ours, atol=1e-3)
    else:
        # INT8 activations are quantized per batch. Batched like the peer (all pairs in one batch padded
        # to the longest, one session), the engine must give the peer's scores. Batched its own way it
        # moves them by quantization noise, which is large against this untrained head's tiny spread,
        # so only the overall agreement is checked there.
        one_batch = CrossEncoder.load(
            model_dir, threads=1, max_length=256, batch_size=bench.DEPTH, token_budget=bench.DEPTH * 256
        )
        np.testing.assert_allclose(one_batch.score(query, passages), theirs, atol=1e-5)
        assert np.corrcoef(ours, theirs)[0, 1] > 0.9
