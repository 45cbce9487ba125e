"""`lrt-rerank plan` from the command line on a slice of SciFact with a real index and a small cross-encoder,
then `eval --plan` and `search --plan`; bad inputs are one line on stderr with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrt_rerank.cli import main
from lrt_rerank.datasets import load_dataset
from lrt_rerank.plan.planfile import Plan
from tiny_beir import tiny_scifact_with_index


@pytest.fixture(scope="module")
def tiny(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_scifact_with_index(shared_data, tmp_path_factory.mktemp("plan"))


def error_lines(err: str) -> list[str]:
    """The lines of stderr past the progress bars; a traceback would show here too."""
    assert "Traceback" not in err
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("lrt-rerank")]


def plan_args(root: Path, index: Path, model: Path, out: Path, budget: str = "60000") -> list[str]:
    return ["plan", "--dataset", str(root), "--split", "train", "--index", str(index), "--reranker", str(model),
            "--budget-ms", budget, "--latency-queries", "3", "--folds", "3", "--out", str(out)]


def test_plan_then_eval_and_search_with_it(tiny: tuple[Path, Path], small_cross_encoder_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, index = tiny
    out, png = tmp_path / "plan.json", tmp_path / "plan.png"
    assert main([*plan_args(root, index, small_cross_encoder_dir, out), "--plot", str(png), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    plan = Plan.load(out)
    assert summary["chosen"] == plan.describe() and summary["out"] == str(out)
    assert plan.evidence["split"] == "train" and plan.evidence["queries"] == len(load_dataset(root, "train").eval_query_ids())
    assert len(plan.evidence["table"]) == 1 + 5 * 6  # the first stage; 1 length x 5 depths x 6 weights
    assert png.stat().st_size > 10_000
    assert main(["eval", "--dataset", str(root), "--split", "dev", "--index", str(index), "--plan", str(out), "--json"]) == 0
    rows = {r["system"]: r for r in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    assert set(rows) == {"bm25", "dense", "rrf", "plan"}
    assert rows["plan"]["p95_ms"] >= rows["plan"]["first_stage_p95_ms"]  # the whole query
    query = load_dataset(root, "dev").queries[next(iter(load_dataset(root, "dev").qrels))]
    assert main(["search", str(index), query, "--plan", str(out), "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 10


def test_a_budget_below_the_first_stage_is_one_line(tiny: tuple[Path, Path], small_cross_encoder_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, index = tiny
    assert main(plan_args(root, index, small_cross_encoder_dir, tmp_path / "p.json", budget="0.001")) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("lrt-rerank plan: error: --budget-ms 0.001: below the first stage's own p95")


def test_a_model_that_fails_to_load_is_one_line(tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, index = tiny
    assert main(plan_args(root, index, tmp_path / "missing", tmp_path / "p.json")) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"lrt-rerank plan: error: --reranker {tmp_path / 'missing'}: cannot load it")
