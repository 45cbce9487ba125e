"""The plan's choice: the most precise candidate whose p95 (first stage included) fits the budget less a
margin, adopted only through the paired-bootstrap guard of ``tune`` (:func:`lrt_rerank.tune.choose`)
against the first stage alone; otherwise the first stage is kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lrt_rerank.plan.grid import Config
from lrt_rerank.tune import FOLDS, choose


def default_margin(budget_ms: float) -> float:
    """The safety margin under the budget: 5% of it, at least 2 ms."""
    return max(2.0, 0.05 * budget_ms)


def check_budget(budget_ms: float, first_stage_p95: float) -> None:
    """A budget the first stage alone cannot meet is refused, naming both figures."""
    if budget_ms <= 0:
        raise ValueError(f"--budget-ms must be > 0, got {budget_ms:g}")
    if budget_ms < first_stage_p95:
        raise ValueError(
            f"--budget-ms {budget_ms:g}: below the first stage's own p95 ({first_stage_p95:.1f} ms on this machine): "
            "no pipeline fits it"
        )


def choose_within(
    configs: Sequence[Config], mrr: npt.NDArray[np.float64], p95_ms: Sequence[float], budget_ms: float, margin_ms: float,
    folds: int = FOLDS,
) -> tuple[int, dict[str, Any]]:
    """Index of the chosen config (``configs[0]`` is the first stage alone) and the guard's evidence."""
    if configs[0].stages:
        raise ValueError("the first candidate must be the first stage alone")
    check_budget(budget_ms, p95_ms[0])
    limit = budget_ms - margin_ms
    feasible = [0] + [i for i in range(1, len(configs)) if p95_ms[i] <= limit]
    chosen, figures = choose([configs[i] for i in feasible], mrr[feasible], folds)
    index = feasible[[configs[i] for i in feasible].index(chosen)]
    figures["within_budget"] = len(feasible) - 1
    figures["limit_ms"] = round(limit, 3)
    if not figures["adopted"]:
        figures["reason"] = f"first stage kept: {figures['reason']}" if len(feasible) > 1 else (
            f"first stage kept: no re-ranking candidate has p95 <= {limit:.1f} ms (budget {budget_ms:g} - margin {margin_ms:g})"
        )
    return index, figures
