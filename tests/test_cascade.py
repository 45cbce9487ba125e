"""Stages (cascades) in the re-ranking core: a cascade orders as its stages run by hand, one budget spans
them, and a stage cut short or failing keeps the last completed stage's order."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest

from lrt_rerank.first_stage.base import Candidate
from lrt_rerank.rerank import RerankCore, RerankStatus, Stage

QUERY = "q"
N = 30


def candidates() -> list[Candidate]:
    return [Candidate(id=f"d{i}", score=1.0 / (i + 1), rank=i + 1) for i in range(N)]


def texts() -> list[str]:
    return [f"passage {i} " + "x" * ((7 * i) % 11) for i in range(N)]


class Hashed:
    """Scores from a seeded hash of the passage: a fixed, arbitrary order (different per seed)."""

    def __init__(self, seed: int, sleep_ms: float = 0.0) -> None:
        self.seed = seed
        self.sleep_ms = sleep_ms
        self.calls: list[int] = []

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        self.calls.append(len(passages))
        time.sleep(self.sleep_ms * len(passages) / 1000.0)
        return np.array([(zlib.crc32(f'{self.seed}:{p}'.encode()) % 1000) / 37.0 for p in passages], dtype=np.float32)


class Broken:
    def score(self, query: str, passages: list[str]) -> np.ndarray:
        raise RuntimeError("stage two is down")


def by_hand(stages: list[Stage]) -> list[str]:
    """Each stage a single-stage core over the previous one's order (its ranks 1..n as the new first stage)."""
    current, passage_of = candidates(), dict(zip((c.id for c in candidates()), texts(), strict=True))
    for stage in stages:
        result = RerankCore(stage.reranker, stage.depth, stage.interpolation).rerank(QUERY, current, [passage_of[c.id] for c in current])
        current = [Candidate(id=h.id, score=h.score, rank=h.rank) for h in result.hits]
    return [c.id for c in current]


@pytest.mark.parametrize("weights", [(0.0, 0.0), (0.5, 2.0)])
def test_a_cascade_orders_exactly_as_its_stages_run_by_hand(weights: tuple[float, float]) -> None:
    stages = [Stage(Hashed(1), 20, weights[0]), Stage(Hashed(2), 8, weights[1])]
    result = RerankCore.cascade(stages).rerank(QUERY, candidates(), texts())
    assert result.status == RerankStatus.COMPLETE
    assert [h.id for h in result.hits] == by_hand(stages)
    assert [r.reranked for r in result.stages] == [20, 8]
    assert [r.name for r in result.stages] == ["stage1", "stage2"]
    single = RerankCore(stages[0].reranker, 20, weights[0]).rerank(QUERY, candidates(), texts())
    assert [h.id for h in result.hits] != [h.id for h in single.hits]  # the second stage did change the order


def test_the_budget_cut_in_the_second_stage_keeps_the_first_stages_order() -> None:
    slow = Hashed(2, sleep_ms=20.0)
    first = Hashed(1)
    alone = RerankCore(first, 20).rerank(QUERY, candidates(), texts())
    core = RerankCore.cascade([Stage(first, 20), Stage(slow, 10)], chunk_size=4)
    result = core.rerank(QUERY, candidates(), texts(), budget_ms=50.0)
    assert result.status == RerankStatus.PARTIAL
    assert result.stages[0].status == RerankStatus.COMPLETE
    assert result.stages[1].status in (RerankStatus.PARTIAL, RerankStatus.OUT_OF_BUDGET)
    assert [h.id for h in result.hits] == [h.id for h in alone.hits]
    assert slow.calls == [4]  # the probe chunk (80 ms) used the budget up: no further chunk


def test_a_failing_second_stage_keeps_the_first_stages_order_and_names_the_error() -> None:
    first = Hashed(1)
    alone = RerankCore(first, 20).rerank(QUERY, candidates(), texts())
    result = RerankCore.cascade([Stage(first, 20), Stage(Broken(), 10, name="slow")]).rerank(QUERY, candidates(), texts(), top_n=10)
    assert result.status == RerankStatus.FAILED
    assert result.error == "RuntimeError: stage two is down"
    assert result.stages[1].name == "slow" and result.stages[1].error == result.error
    assert [h.id for h in result.hits] == [h.id for h in alone.hits][:10]


def test_a_deeper_later_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="depth 30 is deeper than the previous stage's 20"):
        RerankCore.cascade([Stage(Hashed(1), 20), Stage(Hashed(2), 30)])


def test_the_later_stage_scores_only_the_top_of_the_previous_order() -> None:
    second = Hashed(2)
    result = RerankCore.cascade([Stage(Hashed(1), 20), Stage(second, 5)]).rerank(QUERY, candidates(), texts())
    assert second.calls == [5]
    assert {h.id for h in result.hits[:5]} == set(by_hand([Stage(Hashed(1), 20)])[:5])
