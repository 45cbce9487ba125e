"""The plan's trade-off figure (the ``plot`` extra): MRR@10 against p95 latency for every candidate, the
Pareto front, the budget line, the first stage as the baseline and the chosen pipeline marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrt_rerank.plan.planfile import Plan

COLOURS = {"first stage": "black", "single": "tab:blue", "cascade": "tab:orange"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_plan(plan: Plan, path: str | Path, title: str = "") -> Path:
    """Save the figure of ``plan``'s evidence as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table: list[dict[str, Any]] = plan.evidence["table"]
    points = [(float(row["p95_ms"]), float(row["MRR@10"]["mean"])) for row in table]
    figure, axes = plt.subplots(figsize=(8, 5))
    for kind, colour in COLOURS.items():
        shown = [p for p, row in zip(points, table, strict=True) if row["kind"] == kind and kind != "first stage"]
        if shown:
            axes.scatter(*zip(*shown, strict=True), s=10, alpha=0.45, color=colour, label="single re-ranker" if kind == "single" else kind)
    front = pareto_front(points)
    axes.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:green", lw=1.5, label="Pareto front")
    base_x, base_y = points[0]
    axes.scatter([base_x], [base_y], s=70, color="black", marker="s", zorder=3, label=f"first stage ({base_y:.3f})")
    axes.axhline(base_y, color="black", lw=0.8, ls=":")
    axes.axvline(plan.budget_ms, color="tab:red", lw=1.2, label=f"budget {plan.budget_ms:g} ms")
    axes.axvline(plan.budget_ms - plan.margin_ms, color="tab:red", lw=0.8, ls="--", label=f"budget - margin {plan.margin_ms:g} ms")
    chosen_name = plan.describe()
    pick = next((i for i, row in enumerate(table) if row["pipeline"] == chosen_name), 0)
    axes.scatter([points[pick][0]], [points[pick][1]], s=220, marker="*", color="gold", edgecolor="black", zorder=4,
                 label=f"chosen: {chosen_name}")
    xs = [p[0] for p in points]
    if max(xs) / max(min(xs), 1e-3) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("p95 latency per query, first stage included (ms)")
    axes.set_ylabel("MRR@10")
    ev = plan.evidence
    axes.set_title(title or f"{ev.get('dataset', '')} / {ev.get('split', '')}: {ev.get('queries', '?')} judged queries, {ev.get('date', '')}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
