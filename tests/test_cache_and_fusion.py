"""ScoreCache semantics, the cross-encoder's use of it, RRF against an independent definition, threads."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from lrt_rerank import CrossEncoder, ScoreCache, rrf
from lrt_rerank._core import cache_key


def test_cache_lru_counters_and_clear() -> None:
    c = ScoreCache(capacity=2)
    c.put_many("m", "q", ["a", "b"], [0.5, 0.25])
    assert c.get_many("m", "q", ["a"]) == [0.5]  # a becomes most recent
    c.put_many("m", "q", ["c"], [1.0])  # evicts b
    assert c.get_many("m", "q", ["b", "a", "c"]) == [None, 0.5, 1.0]
    assert (c.hits, c.misses, c.evictions, len(c)) == (3, 1, 1, 2)
    assert c.get_many("other-model", "q", ["a"]) == [None]  # the fingerprint is part of the key
    c.clear()
    assert len(c) == 0 and c.get_many("m", "q", ["a"]) == [None]
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        ScoreCache(capacity=0)
    with pytest.raises(ValueError, match="2 passages but 1 scores"):
        c.put_many("m", "q", ["a", "b"], [1.0])


def test_cache_key_separates_fields() -> None:
    assert cache_key("m", "ab", "c") != cache_key("m", "a", "bc")
    assert cache_key("m", "q", "p") == cache_key("m", "q", "p")
    assert len(cache_key("m", "q", "p")) == 32


def test_cross_encoder_scores_only_misses(small_cross_encoder_dir: Path) -> None:
    cache = ScoreCache(capacity=1000)
    # one session: batch counts are then ceil(misses / batch_size)
    ce = CrossEncoder.load(small_cross_encoder_dir, threads=1, batch_size=4, cache=cache)
    plain = CrossEncoder.load(small_cross_encoder_dir, threads=2, batch_size=4)
    passages = [f"passage number {i} about fibre and health" for i in range(10)]
    first = ce.score("fibre", passages)
    runs_after_first = ce.batches_run
    assert cache.misses == 10 and cache.hits == 0 and len(cache) == 10
    # a repeated query whose passages all hit must not run the model at all
    second = ce.score("fibre", passages)
    assert ce.batches_run == runs_after_first
    assert cache.hits == 10
    np.testing.assert_array_equal(first, second)
    # a partly new call runs only the misses: 3 new passages → one batch of 4 at most
    mixed = passages[:5] + ["new a", "new b", "new c"]
    got = ce.score("fibre", mixed)
    assert ce.batches_run == runs_after_first + 1
    assert cache.hits == 15 and cache.misses == 13
    np.testing.assert_allclose(got, plain.score("fibre", mixed), atol=1e-5)


def reference_rrf(runs: list[list[str]], k: float, weights: list[float] | None) -> dict[str, float]:
    scores: dict[str, float] = defaultdict(float)
    for r, run in enumerate(runs):
        seen: set[str] = set()
        for pos, doc in enumerate(run):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] += (1.0 if weights is None else weights[r]) / (k + pos + 1)
    return scores


def test_rrf_matches_definition_on_random_runs() -> None:
    rng = random.Random(7)
    for _ in range(200):
        runs = [[f"d{rng.randrange(30)}" for _ in range(rng.randrange(0, 25))] for _ in range(rng.randrange(1, 4))]
        k = rng.choice([0.0, 1.0, 60.0])
        weights = None if rng.random() < 0.5 else [rng.uniform(0, 2) for _ in runs]
        ref = reference_rrf(runs, k, weights)
        out = rrf(runs, k=k, weights=weights)
        assert {d for d, _ in out} == set(ref)
        for d, s in out:
            assert s == pytest.approx(ref[d], abs=1e-12)
        assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)
        assert rrf(runs, k=k, weights=weights) == out  # deterministic
        assert rrf(runs, k=k, weights=weights, top_k=3) == out[:3]


def test_rrf_example_and_errors() -> None:
    out = rrf([["d1", "d2"], ["d2", "d3"]], k=60)
    assert [d for d, _ in out] == ["d2", "d1", "d3"]
    assert out[0][1] == pytest.approx(1 / 61 + 1 / 62)
    with pytest.raises(ValueError, match="weights has 1 entries but there are 2 runs"):
        rrf([["a"], ["b"]], weights=[1.0])
    with pytest.raises(ValueError, match="k must be"):
        rrf([["a"]], k=-5)


def test_concurrent_calls_from_many_threads(small_cross_encoder_dir: Path) -> None:
    cache = ScoreCache(capacity=50)
    ce = CrossEncoder.load(small_cross_encoder_dir, threads=2, batch_size=8, cache=cache)
    plain = CrossEncoder.load(small_cross_encoder_dir, threads=2, batch_size=8)
    queries = [f"query {i}" for i in range(6)]
    passages = [f"text {j} on vitamins and minerals" for j in range(20)]
    expected = {q: plain.score(q, passages) for q in queries}
    errors: list[BaseException] = []
    results: dict[tuple[int, str], np.ndarray] = {}

    def work(t: int) -> None:
        try:
            for q in queries:
                results[(t, q)] = ce.score(q, passages)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "scoring threads still running after 300 s"
    assert not errors
    assert len(results) == 8 * len(queries)
    for (_, q), got in results.items():
        np.testing.assert_allclose(got, expected[q], atol=1e-5)
    assert len(cache) <= 50
    assert cache.hits + cache.misses == 8 * len(queries) * len(passages)
