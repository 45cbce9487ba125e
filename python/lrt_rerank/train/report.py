"""The model report (``lrt-rerank train report``): re-rank the RRF top-50 of the embedded first stage
with each model directory through the engine (``CrossEncoder``), on the tuning split, the test
split and an out-of-domain dataset, and write the figures into a JSON report and the model cards.

* The interpolation weight (``logit + w * prior(first-stage position)``, :mod:`lrt_rerank.interpolation`)
  of each model is chosen on the tuning split (dev) only, then applied unchanged on test and out
  of domain; both the pure re-ranked order and the interpolated one are reported.
* Latency: the models take turns on each query's 50 passages (warm-up first, not timed), so a
  change in machine load hits all of them alike; p50/p95/p99 of the wall time of one
  ``CrossEncoder.score`` call.
* Metrics come from :mod:`lrt_rerank.evaluate`, the project's one implementation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import bootstrap_gains, interval95, latency_percentiles, reciprocal_rank
from lrt_rerank.train.data import Candidates, load_or_mine, passage_text
from lrt_rerank.train.scoring import WEIGHT_GRID, best_weight, metrics_for, reranked_run

logger = logging.getLogger(__name__)

DEPTH = 50


@dataclass(frozen=True)
class Split:
    """One evaluation set: a BEIR dataset folder and split, and its role in the report."""

    dataset: Path
    split: str
    role: str  # "tune" (weights chosen here), "test" or "out-of-domain"

    @property
    def key(self) -> str:
        return f"{self.dataset.name}/{self.split}"


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def interleaved_logits(
    models: dict[str, Path], dataset: Dataset, candidates: Candidates, threads: int | None, progress: bool = True
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[float]]]:
    """Each model's logits for each query's top ``DEPTH``, and each model's per-query wall times (ms)."""
    from lrt_rerank import CrossEncoder

    encoders = {label: CrossEncoder.load(str(path), threads=threads) for label, path in models.items()}
    qids = list(candidates.ids)
    if not qids:
        raise ValueError(f"{dataset.path}: no query to evaluate in split {dataset.split!r}")
    warm = [passage_text(dataset, d) for d in candidates.ids[qids[0]][:DEPTH]]
    for encoder in encoders.values():
        encoder.score(dataset.queries[qids[0]], warm)
    logits: dict[str, dict[str, np.ndarray]] = {label: {} for label in encoders}
    timings: dict[str, list[float]] = {label: [] for label in encoders}
    for qid in tqdm(qids, desc=f"re-rank {dataset.name}/{dataset.split}", disable=not progress, leave=False):
        texts = [passage_text(dataset, d) for d in candidates.ids[qid][:DEPTH]]
        for label, encoder in encoders.items():
            started = time.perf_counter()
            scores = encoder.score(dataset.queries[qid], texts)
            timings[label].append((time.perf_counter() - started) * 1000.0)
            logits[label][qid] = np.asarray(scores, dtype=np.float64)
    return logits, timings


def _model_row(label: str, card: dict[str, Any], dataset: Dataset, candidates: Candidates, logits: dict[str, np.ndarray],
               timings: list[float] | None, weight: float) -> dict[str, Any]:
    """A system's figures; latency and size only for engine models (``timings`` given)."""
    row: dict[str, Any] = {
        "system": f"+ {label}",
        **_round(metrics_for(dataset, reranked_run(candidates, logits, 0.0))),
        "interpolated": {"weight": weight, **_round(metrics_for(dataset, reranked_run(candidates, logits, weight)))},
    }
    if timings is not None:
        p = latency_percentiles(timings)
        row.update({
            "rerank_p50_ms": round(p[50], 1),
            "rerank_p95_ms": round(p[95], 1),
            "rerank_p99_ms": round(p[99], 1),
            "parameters": card.get("parameters"),
            "layers": card.get("layers"),
            "max_length": card.get("max_length"),
        })
    return row


def retention(first: dict[str, Any], teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """How much of the teacher's gain over the first stage a student keeps, ``(student - first) / (teacher - first)``,
    per metric, alone and interpolated; ``None`` where the teacher gains nothing (the ratio means nothing)."""

    def ratio(s: float, t: float, f: float) -> float | None:
        return round((s - f) / (t - f), 3) if t - f > 1e-9 else None

    return {
        metric: {
            "alone": ratio(student[metric], teacher[metric], first[metric]),
            "interpolated": ratio(student["interpolated"][metric], teacher["interpolated"][metric], first[metric]),
        }
        for metric in ("MRR@10", "NDCG@10")
    }


def per_query_mrr(dataset: Dataset, run: dict[str, list[str]]) -> np.ndarray:
    """MRR@10 of each query of ``run`` (in ``run``'s order)."""
    return np.array([reciprocal_rank(ranking, dataset.qrels[qid], 10) for qid, ranking in run.items()], dtype=np.float64)


def add_intervals(rows: list[dict[str, Any]], first: np.ndarray, per_query: dict[str, np.ndarray], teacher: str | None) -> None:
    """Give each model row the 95% paired-bootstrap interval of its interpolated MRR@10 gain over the first
    stage and, beside a teacher whose gain is above 0 in at least 97.5% of the resamples, of its retention."""
    gains = bootstrap_gains(first, per_query)
    for row in rows[1:]:
        label = row["system"].removeprefix("+ ")
        row["gain_interpolated_mrr@10"] = {"mean": round(float((per_query[label] - first).mean()), 4), "ci95": interval95(gains[label])}
    if teacher is None:
        return
    lift = gains[teacher]
    up = lift > 0
    sure = float(up.mean()) >= 0.975
    for row in rows[1:]:
        if "retention" in row:
            label = row["system"].removeprefix("+ ")
            row["retention"]["MRR@10"]["interpolated_ci95"] = interval95(gains[label][up] / lift[up]) if sure else None


Derived = Callable[[Dataset, Candidates, dict[str, dict[str, np.ndarray]]], dict[str, np.ndarray]]


def build_report(
    models: dict[str, Path], splits: list[Split], cache_dir: Path, threads: int | None = None, progress: bool = True,
    teacher: str | None = None, derived: dict[str, Derived] | None = None,
) -> dict[str, Any]:
    """Figures for every model on every split; the "tune" split must come first (it sets the weights).
    ``derived`` systems score a split from its candidates and the models' logits (e.g. the fusion teacher
    of :mod:`lrt_rerank.train.fusion`); they get the same rows, without latency or size.
    With ``teacher`` (one of the labels) every other system's rows gain its :func:`retention`."""
    derived = derived or {}
    labels = [*models, *derived]
    if not splits or splits[0].role != "tune":
        raise ValueError("the first split must be the tuning split (role 'tune'), where interpolation weights are chosen")
    if teacher is not None and teacher not in labels:
        raise ValueError(f"teacher {teacher!r} is not one of the systems {labels}")
    cards = {label: json.loads((path / "card.json").read_text(encoding="utf-8")) for label, path in models.items()}
    report: dict[str, Any] = {
        "protocol": f"re-rank the RRF(BM25, dense) top-{DEPTH} of the embedded first stage; interpolation "
        "logit + w * z(-log first-stage rank), w chosen per model on the tuning split over "
        f"{list(WEIGHT_GRID)}; latency = one CrossEncoder.score call on a query's {DEPTH} passages, models interleaved",
        "threads": threads,
        "models": {label: {"dir": str(path), "sha256": cards[label].get("sha256")} for label, path in models.items()},
        "retention_of": teacher,
        "weights": {},
        "splits": {},
    }
    for split in splits:
        dataset, candidates = load_or_mine(split.dataset, split.split, cache_dir, progress)
        logits, timings = interleaved_logits(models, dataset, candidates, threads, progress)
        for label, score in derived.items():
            logits[label] = score(dataset, candidates, logits)
        if split.role == "tune":
            for label in labels:
                weight, curve = best_weight(dataset, candidates, logits[label])
                report["weights"][label] = {"weight": weight, "chosen_on": split.key, "curve": {str(k): round(v, 4) for k, v in curve.items()}}
        rows = [{"system": "RRF first stage", **_round(metrics_for(dataset, candidates.ids))}]
        for label in labels:
            rows.append(_model_row(label, cards.get(label, {}), dataset, candidates, logits[label], timings.get(label), report["weights"][label]["weight"]))
        if teacher is not None:
            by_label = dict(zip(labels, rows[1:]))
            for label, row in by_label.items():
                if label != teacher:
                    row["retention"] = retention(rows[0], by_label[teacher], row)
        first_run = {qid: candidates.ids[qid] for qid in logits[next(iter(models))]}
        add_intervals(rows, per_query_mrr(dataset, first_run), {
            label: per_query_mrr(dataset, reranked_run(candidates, logits[label], report["weights"][label]["weight"])) for label in labels
        }, teacher)
        report["splits"][split.key] = {"role": split.role, "queries": len(candidates.ids), "rows": rows}
        logger.info("%s: %s", split.key, json.dumps(rows))
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report's tables (MRR@10 / NDCG@5 / NDCG@10, pure and interpolated, the interpolated MRR@10 gain over
    the first stage with its 95% bootstrap interval, p95 latency, parameters; with a teacher, the retention of
    its MRR@10 gain, alone / interpolated, and the interval of the latter when the teacher's gain is clear)."""
    lines: list[str] = []
    for key, data in report["splits"].items():
        kept = any("retention" in row for row in data["rows"])
        header = ("| system | MRR@10 | NDCG@5 | NDCG@10 | interpolated (w): MRR@10 / NDCG@5 / NDCG@10 "
                  "| interpolated MRR@10 gain [95% CI] | re-rank p95 ms | parameters |")
        lines += [f"\n{key} ({data['role']}, {data['queries']} queries)\n",
                  header + (" retention of the teacher's MRR@10 gain: alone / interpolated |" if kept else ""),
                  "|---|---|---|---|---|---|---|---|" + ("---|" if kept else "")]
        for row in data["rows"]:
            inter = row.get("interpolated")
            inter_text = f"({inter['weight']:g}) {inter['MRR@10']:.3f} / {inter['NDCG@5']:.3f} / {inter['NDCG@10']:.3f}" if inter else "–"
            gain = row.get("gain_interpolated_mrr@10")
            gain_text = f"{gain['mean']:+.3f} [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}]" if gain else "–"
            p95 = f"{row['rerank_p95_ms']:.0f}" if "rerank_p95_ms" in row else "–"
            params = f"{row['parameters'] / 1e6:.1f} M" if row.get("parameters") else "–"
            line = f"| {row['system']} | {row['MRR@10']:.3f} | {row['NDCG@5']:.3f} | {row['NDCG@10']:.3f} | {inter_text} | {gain_text} | {p95} | {params} |"
            if kept:
                kept_row = row.get("retention", {}).get("MRR@10")
                if kept_row:
                    ci = kept_row.get("interpolated_ci95")
                    ci_text = f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else ""
                    line += f" {_share(kept_row['alone'])} / {_share(kept_row['interpolated'])}{ci_text} |"
                else:
                    line += " – |"
            lines.append(line)
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "n/a (teacher gains nothing)" if value is None else f"{value:.0%}"


def write_card_figures(model_dir: Path, label: str, report: dict[str, Any]) -> None:
    """Record the report's figures for ``label`` and its chosen interpolation weight in ``model_dir``'s card."""
    path = model_dir / "card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    chosen = report["weights"][label]
    card["interpolation"] = {
        "weight": chosen["weight"],
        "formula": "logit + weight * z(-log r), r = first-stage position, z over the re-ranked candidates of one query (lrt_rerank.interpolation)",
        "chosen_on": chosen["chosen_on"],
        "curve_mrr@10": chosen["curve"],
    }
    card["metrics"] = {
        "protocol": report["protocol"],
        **{key: [row for row in data["rows"] if row["system"] in ("RRF first stage", f"+ {label}")] for key, data in report["splits"].items()},
    }
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
