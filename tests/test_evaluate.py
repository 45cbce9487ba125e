"""Metrics against hand-computed values, latency percentiles, table / JSON / plot output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from lrt_rerank.evaluate import (
    SystemResult,
    json_lines,
    latency_percentiles,
    markdown_table,
    ndcg,
    plot_tradeoff,
    recall,
    reciprocal_rank,
    score_run,
)

JUDGED = {"d1": 1, "d2": 2, "d9": 1, "d0": 0}  # three relevant, one judged non-relevant


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(["d0", "x", "d1"], JUDGED) == pytest.approx(1 / 3)  # grade 0 is not relevant
    assert reciprocal_rank(["d2"], JUDGED) == 1.0
    assert reciprocal_rank([f"x{i}" for i in range(10)] + ["d1"], JUDGED) == 0.0  # rank 11 is outside @10
    assert reciprocal_rank([], JUDGED) == 0.0


def test_ndcg_by_hand() -> None:
    # ranking d3(unjudged), d1(1), d2(2): DCG = 1/log2(3) + 3/log2(4) = 0.6309298 + 1.5 = 2.1309298
    # ideal grades 2, 1, 1: 3/1 + 1/log2(3) + 1/log2(4) = 3 + 0.6309298 + 0.5 = 4.1309298
    assert ndcg(["d3", "d1", "d2"], JUDGED, 5) == pytest.approx(2.1309298 / 4.1309298, abs=1e-6)
    # @2 cuts both the ranking and the ideal: DCG = 1/log2(3); ideal = 3 + 1/log2(3)
    assert ndcg(["d3", "d1", "d2"], JUDGED, 2) == pytest.approx(0.6309298 / 3.6309298, abs=1e-6)
    assert ndcg(["d2", "d1", "d9"], JUDGED, 10) == pytest.approx(1.0)
    assert ndcg(["d0", "x"], JUDGED, 10) == 0.0
    assert ndcg(["d1"], {"d1": 0}, 10) == 0.0  # nothing relevant: 0, not a division by zero


def test_recall() -> None:
    assert recall(["d1", "x", "d2"], JUDGED, 50) == pytest.approx(2 / 3)
    assert recall(["d1", "x", "d2"], JUDGED, 2) == pytest.approx(1 / 3)
    assert recall(["d0"], JUDGED, 50) == 0.0


def test_score_run_averages_and_counts_missing_queries_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": ["x", "a"]}  # q2 has no run
    means = score_run(run, qrels, ["q1", "q2"])
    assert means["MRR@10"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert means["R@50"] == pytest.approx(0.5)
    assert means["NDCG@10"] == pytest.approx((1 / math.log2(3)) / 2)
    with pytest.raises(ValueError):
        score_run(run, qrels, [])


def test_latency_percentiles_interpolate() -> None:
    values = latency_percentiles([float(v) for v in range(1, 101)])  # 1..100 ms
    assert values[50] == pytest.approx(50.5)
    assert values[95] == pytest.approx(95.05)
    assert values[99] == pytest.approx(99.01)
    assert latency_percentiles([]) == {50: 0.0, 95: 0.0, 99: 0.0}


def _results() -> list[SystemResult]:
    fast = SystemResult(
        "bm25",
        {"MRR@10": 0.5, "NDCG@5": 0.3, "NDCG@10": 0.25, "R@50": 0.2},
        {"first_stage": [1.0, 3.0], "rerank": [0.0, 0.0], "total": [1.0, 3.0]},
        2,
    )
    slow = SystemResult(
        "rrf+rerank",
        {"MRR@10": 0.6, "NDCG@5": 0.4, "NDCG@10": 0.35, "R@50": 0.3},
        {"first_stage": [2.0, 2.0], "rerank": [100.0, 200.0], "total": [102.0, 202.0]},
        2,
    )
    return [fast, slow]


def test_json_lines_have_the_documented_keys() -> None:
    records = [json.loads(line) for line in json_lines(_results()).splitlines()]
    assert [r["system"] for r in records] == ["bm25", "rrf+rerank"]
    for key in ("system", "MRR@10", "NDCG@5", "NDCG@10", "R@50", "p50_ms", "p95_ms", "p99_ms"):
        assert key in records[0]
    assert records[1]["p50_ms"] == pytest.approx(152.0)  # total latency, midpoint of 102 and 202
    assert records[1]["rerank_p50_ms"] == pytest.approx(150.0)
    assert records[1]["first_stage_p95_ms"] == pytest.approx(2.0)
    assert records[0]["MRR@10"] == 0.5


def test_markdown_table_rows() -> None:
    table = markdown_table(_results()).splitlines()
    assert table[0].startswith("| system | MRR@10 | NDCG@5 | NDCG@10 | R@50 |")
    assert len(table) == 4
    assert table[2].startswith("| BM25 | 0.500 | 0.300 | 0.250 | 0.200 |")
    assert "RRF + re-ranker" in table[3]
    assert "150.0 / 195.0 / 199.0" in table[3]  # re-rank p50 / p95 / p99 of 100 and 200 ms


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = plot_tradeoff(_results(), tmp_path / "plots" / "tradeoff.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
