"""`lrt-rerank plan` on synthetic re-rankers whose quality and cost are known: the planner picks the known
best within the budget, which holds on held-out queries; the guard keeps the first stage when nothing
helps; bad inputs are refused with errors naming the problem; the figure is drawn."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import evaluate
from lrt_rerank.first_stage.base import Candidate, FirstStage, System
from lrt_rerank.plan.grid import Config, StageSpec
from lrt_rerank.plan.models import PlanModel, open_model
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.plan.planner import make_plan
from lrt_rerank.plan.plot import pareto_front, plot_plan

DOCS = 100


class SyntheticStage(FirstStage):
    """Query ``q<j>``'s candidates ``q<j>-d<i>`` in order i = 0..99; one of them (seeded) is relevant."""

    def __init__(self, relevant_at: dict[str, int], sleep_ms: float = 0.0) -> None:
        self.relevant_at = relevant_at
        self.sleep_ms = sleep_ms

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        time.sleep(self.sleep_ms / 1000.0)
        return [Candidate(f"{query}-d{i}", 1.0 / (i + 1), i + 1) for i in range(min(k, DOCS))]

    def get_texts(self, ids: Sequence[str]) -> list[str]:
        out = []
        for doc in ids:
            query, i = doc.rsplit("-d", 1)
            out.append(f"{doc} {'RELEVANT' if int(i) == self.relevant_at[query] else ''}")
        return out


def synthetic(queries: int, seed: int, split: str = "dev", deepest: int = 70) -> tuple[Dataset, SyntheticStage]:
    rng = np.random.default_rng(seed)
    at = {f"q{seed}x{j}": int(rng.integers(0, deepest)) for j in range(queries)}
    qrels = {q: {f"{q}-d{i}": 1} for q, i in at.items()}
    return Dataset(Path(f"synthetic-{seed}"), split, {}, {q: q for q in at}, qrels), SyntheticStage(at)


class Oracle:
    """Finds the relevant passage wherever it is; costs ``ms`` per passage."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        time.sleep(self.ms * len(passages) / 1000.0)
        return np.array([10.0 if "RELEVANT" in p else 0.0 for p in passages], dtype=np.float32)


class Noise:
    """Knows nothing: a fixed pseudo-random score per passage; nearly free."""

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        return np.array([(zlib.crc32(p.encode()) % 1000) / 100.0 for p in passages], dtype=np.float32)


def model(spec: str, reranker: object) -> PlanModel:
    return PlanModel(spec, None, (None,), 0.0, lambda _: reranker)  # type: ignore[arg-type,return-value]


@pytest.fixture(scope="module")
def oracle_plan() -> Plan:
    dataset, stage = synthetic(60, seed=1)
    # 1 ms per passage: top 50 costs ~50 ms, top 100 ~100 ms; within 90 - 2 ms the best is the top 50
    return make_plan(dataset, stage, [model("oracle", Oracle(1.0)), model("noise", Noise())], 90.0, margin_ms=2.0,
                     latency_queries=20, progress=False)


def test_the_planner_picks_the_known_best_within_the_budget(oracle_plan: Plan) -> None:
    stages = oracle_plan.config.stages
    assert oracle_plan.evidence["adopted"] is True
    assert stages[-1].model == "oracle" and stages[-1].depth == 50  # the deepest oracle that fits
    table = {row["pipeline"]: row for row in oracle_plan.evidence["table"]}
    deeper = table[StageSpec("oracle", None, 100, 0.0).describe()]
    assert deeper["p95_ms"] > 88.0  # the top 100 did not fit: it is not the answer although it finds more
    assert deeper["MRR@10"]["mean"] >= table[oracle_plan.describe()]["MRR@10"]["mean"]
    assert any(row["kind"] == "cascade" for row in oracle_plan.evidence["table"])  # noise is cheaper: noise -> oracle
    assert oracle_plan.evidence["table"][0]["pipeline"] == "first stage"


def test_the_plan_keeps_its_budget_and_its_gain_on_held_out_queries(oracle_plan: Plan) -> None:
    dataset, stage = synthetic(40, seed=2, split="train")
    stages = oracle_plan.stages(open_model=lambda spec: model(spec, Oracle(1.0) if spec == "oracle" else Noise()))
    rows = {r.system: r for r in evaluate(dataset, stage, plan=stages, systems=("rrf",), progress=False)}
    assert rows["plan"].percentiles("total")[95] <= oracle_plan.budget_ms
    assert rows["plan"].metrics["MRR@10"] > rows["rrf"].metrics["MRR@10"] + 0.2


def test_the_guard_keeps_the_first_stage_when_nothing_helps() -> None:
    dataset, stage = synthetic(60, seed=3, deepest=3)  # the first stage already has it in its top 3
    plan = make_plan(dataset, stage, [model("noise", Noise())], 50.0, latency_queries=10, progress=False)
    assert plan.config.stages == ()
    assert plan.evidence["adopted"] is False
    assert plan.evidence["reason"].startswith("first stage kept")
    assert plan.describe() == "first stage"


def test_a_budget_below_the_first_stages_own_p95_is_refused() -> None:
    dataset, stage = synthetic(20, seed=4)
    stage.sleep_ms = 5.0
    with pytest.raises(ValueError, match=r"--budget-ms 2: below the first stage's own p95 \(\d+\.\d ms on this machine\)"):
        make_plan(dataset, stage, [model("noise", Noise())], 2.0, latency_queries=5, progress=False)


def test_a_split_without_judged_queries_is_refused() -> None:
    dataset, stage = synthetic(20, seed=5)
    unjudged = Dataset(dataset.path, "dev", {}, dataset.queries, {q: {d: 0 for d in j} for q, j in dataset.qrels.items()})
    with pytest.raises(ValueError, match="split 'dev' has no query with a relevant judgment"):
        make_plan(unjudged, stage, [model("noise", Noise())], 50.0, progress=False)


def test_planning_on_the_test_split_is_refused() -> None:
    dataset, stage = synthetic(20, seed=5, split="test")
    with pytest.raises(ValueError, match="--split test: tuning on the test split is refused"):
        make_plan(dataset, stage, [model("noise", Noise())], 50.0, progress=False)


def test_a_model_that_fails_to_load_is_named(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text('{"kind": "cross-encoder"}', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"--reranker {tmp_path}: cannot load it \("):
        open_model(str(tmp_path))
    with pytest.raises(ValueError, match="--reranker /no/such/model: cannot load it"):
        open_model("/no/such/model")


def test_a_plan_of_another_model_is_refused(tmp_path: Path) -> None:
    plan = Plan(Config((StageSpec("default", 128, 20, 1.0),)), 100.0, 5.0, {"default": "0" * 64})
    path = plan.save(tmp_path / "plan.json")
    with pytest.raises(ValueError, match=r"plan.json: stage 1 model 'default' has sha256 [0-9a-f]{64}, but the plan was made with 0{64}"):
        Plan.load(path).stages()


def test_the_plans_own_model_loads_at_the_planned_length(tmp_path: Path) -> None:
    default = open_model("default")
    path = Plan(Config((StageSpec("default", 64, 20, 1.0),)), 100.0, 5.0, {"default": default.sha256}).save(tmp_path / "p.json")
    (stage,) = Plan.load(path).stages()
    assert stage.depth == 20 and stage.interpolation == 1.0
    assert stage.reranker.max_length == 64  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change, field",
    [({"version": 2}, "'version' is 2"), ({"format": "other"}, "'format' must be"), ({"pipeline": {"stages": []}}, "'pipeline.budget_ms'")],
)
def test_a_plan_of_another_format_or_version_is_refused(change: dict[str, object], field: str, tmp_path: Path) -> None:
    data = Plan(Config(), 100.0, 5.0, {}).to_json() | change
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=f"plan.json: field {field}"):
        Plan.load(path)


def test_a_plan_round_trips_and_reusing_its_quality_remeasures_latency_only(oracle_plan: Plan, tmp_path: Path) -> None:
    loaded = Plan.load(oracle_plan.save(tmp_path / "plan.json"))
    assert loaded.config == oracle_plan.config and loaded.budget_ms == 90.0
    dataset, stage = synthetic(60, seed=1)
    slower = make_plan(dataset, stage, [model("oracle", Oracle(2.0)), model("noise", Noise())], 90.0, margin_ms=2.0,
                       latency_queries=10, reuse=loaded, progress=False)
    old = {r["pipeline"]: r for r in loaded.evidence["table"]}
    new = {r["pipeline"]: r for r in slower.evidence["table"]}
    assert old.keys() == new.keys()
    assert all(new[k]["MRR@10"] == old[k]["MRR@10"] and new[k]["first_relevant"] == old[k]["first_relevant"] for k in old)
    top30 = StageSpec("oracle", None, 30, 0.0).describe()
    assert new[top30]["p95_ms"] > 1.5 * old[top30]["p95_ms"]  # twice the cost per passage, measured anew
    assert slower.config.stages[-1].depth < 50  # the top 50 no longer fits at 2 ms per passage


def test_the_latency_model_is_checked_against_whole_runs(oracle_plan: Plan) -> None:
    checks = oracle_plan.evidence["latency"]["direct_checks"]
    assert checks and checks[0]["pipeline"] == oracle_plan.describe()
    for check in checks:  # within half of the whole run's p95, or 10 ms for the near-free ones
        assert abs(check["error"]) < 0.5 if check["direct_p95_ms"] > 20.0 else abs(check["error_ms"]) < 10.0, check


def test_the_pareto_front_keeps_only_undominated_points() -> None:
    assert pareto_front([(10, 0.5), (20, 0.4), (30, 0.6), (5, 0.3), (40, 0.6)]) == [3, 0, 2]


def test_the_figure_is_a_png_of_the_expected_size(oracle_plan: Plan, tmp_path: Path) -> None:
    import matplotlib.image

    path = plot_plan(oracle_plan, tmp_path / "plan.png")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (500, 800)
    assert path.stat().st_size > 10_000
    assert image[..., :3].std() > 0.05  # not blank
