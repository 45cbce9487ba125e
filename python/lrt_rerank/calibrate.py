"""Fitting and measuring a cross-encoder's score calibration on a judged dataset split.

:func:`collect` runs the re-ranking pipeline the way ``lrt-rerank eval`` does (the embedded or
OpenSearch first stage's RRF candidates, the top ``depth`` re-scored by the cross-encoder,
interpolation off so each score is the model's own) on the split's judged queries, and labels
every (query, candidate) pair from the split's qrels: relevant when the grade is > 0; an
unjudged candidate counts as not relevant. These are the pairs a deployed re-ranker sees.

:func:`fit` turns them into a Platt :class:`~lrt_rerank.calibration.CalibrationRecord`; it
refuses a ``test`` split. :func:`measure` only reports, for any split, how well the
probabilities of the mapping in use (and of the bare ``sigmoid(score)``) match the labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lrt_rerank.calibration import (
    ECE_BINS,
    Calibration,
    CalibrationRecord,
    brier_score,
    expected_calibration_error,
    fit_platt,
    is_test_split,
    sigmoid,
)
from lrt_rerank.datasets import Dataset
from lrt_rerank.encoders import CrossEncoder
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.pipeline import Pipeline, RerankStatus


class TuningSplitError(ValueError):
    """Raised when asked to fit a calibration on a test split."""


def require_tuning_split(split: str) -> None:
    """Raise :class:`TuningSplitError` for a test split: calibration is tuned on train/dev, never on test."""
    if is_test_split(split):
        raise TuningSplitError(
            f"refusing to fit a calibration on split {split!r}: test judgments are for reporting only. "
            "Fit on a tuning split (--split dev), then measure test with --report-only."
        )


@dataclass(frozen=True)
class LabelledScores:
    """Raw model scores of (query, candidate) pairs and their 0/1 labels."""

    scores: np.ndarray
    labels: np.ndarray
    queries: int

    @property
    def pairs(self) -> int:
        return int(self.scores.size)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())


def collect(
    encoder: CrossEncoder,
    dataset: Dataset,
    first_stage: FirstStage,
    depth: int,
    query_ids: Sequence[str],
    progress: bool = True,
) -> LabelledScores:
    """Raw scores and labels of the top ``depth`` first-stage candidates of each query in ``query_ids``."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not query_ids:
        raise ValueError(f"{dataset.path}: split {dataset.split!r} has no query with a relevant judgment")
    pipeline = Pipeline(first_stage, encoder, rerank_depth=depth, interpolation=0.0)
    scores: list[float] = []
    labels: list[int] = []
    for query_id in tqdm(query_ids, desc=f"score {dataset.name}/{dataset.split}", disable=not progress, leave=False):
        result = pipeline.run(dataset.queries[query_id], k=depth)
        if result.status == RerankStatus.EMPTY:
            continue
        if result.status != RerankStatus.COMPLETE:
            raise RuntimeError(f"query {query_id!r}: re-ranking ended with status {result.status.value!r} (see log)")
        judged = dataset.qrels.get(query_id, {})
        for hit in result.hits:
            scores.append(hit.score)
            labels.append(int(judged.get(hit.id, 0) > 0))
    return LabelledScores(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64), len(query_ids))


@dataclass(frozen=True)
class Quality:
    """How well probabilities match the labels: ECE (10 equal-width bins) and Brier score."""

    ece: float
    brier: float

    @classmethod
    def of(cls, probabilities: np.ndarray, labels: np.ndarray) -> Quality:
        return cls(expected_calibration_error(probabilities, labels, ECE_BINS), brier_score(probabilities, labels))


@dataclass(frozen=True)
class Report:
    """ECE/Brier of several score mappings on one split; ``record`` is the fit, when one was made."""

    dataset: str
    split: str
    depth: int
    data: LabelledScores
    rows: dict[str, Quality]
    record: CalibrationRecord | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "depth": self.depth,
            "queries": self.data.queries,
            "pairs": self.data.pairs,
            "positives": self.data.positives,
            "ece_bins": ECE_BINS,
            "rows": {name: {"ece": q.ece, "brier": q.brier} for name, q in self.rows.items()},
            **({"calibration": self.record.to_json()} if self.record is not None else {}),
        }

    def table(self) -> str:
        share = self.data.positives / self.data.pairs
        lines = [
            f"{self.dataset}/{self.split}: {self.data.queries} queries, top {self.depth} candidates each, "
            f"{self.data.pairs} pairs, {self.data.positives} relevant ({share:.1%})",
            f"| probabilities | ECE ({ECE_BINS} bins) | Brier |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {q.ece:.4f} | {q.brier:.4f} |" for name, q in self.rows.items()]
        return "\n".join(lines)

    def dumps(self) -> str:
        return json.dumps(self.to_json())


RAW = "sigmoid(score)"


def fit(encoder: CrossEncoder, dataset: Dataset, data: LabelledScores, depth: int) -> Report:
    """Fit Platt scaling on ``data`` (collected from ``dataset``'s split; never a test split)."""
    require_tuning_split(dataset.split)
    a, b = fit_platt(data.scores, data.labels)
    if a <= 0:
        raise ValueError(
            f"the fitted slope a = {a:.4g} is not positive: on {dataset.name}/{dataset.split} a higher score does not "
            "mean more relevant, and a calibration with it would reverse the ranking; not written"
        )
    calibrated = Calibration(a, b, "fit").apply(data.scores)
    after = Quality.of(calibrated, data.labels)
    record = CalibrationRecord(
        a=a,
        b=b,
        dataset=dataset.name,
        split=dataset.split,
        depth=depth,
        pairs=data.pairs,
        positives=data.positives,
        ece=after.ece,
        brier=after.brier,
        fitted=datetime.now(timezone.utc).date().isoformat(),
    )
    rows = {RAW: Quality.of(sigmoid(data.scores), data.labels)}
    if encoder.calibration.calibrated:
        rows[f"previous card calibration (a={encoder.calibration.a:.4g}, b={encoder.calibration.b:.4g})"] = Quality.of(
            encoder.calibration.apply(data.scores), data.labels
        )
    rows[f"Platt fit (a={a:.4g}, b={b:.4g})"] = after
    return Report(dataset.name, dataset.split, depth, data, rows, record)


def measure(encoder: CrossEncoder, dataset: Dataset, data: LabelledScores, depth: int) -> Report:
    """ECE/Brier of ``sigmoid(score)`` and of the encoder's calibration in use, on any split; fits nothing."""
    rows = {RAW: Quality.of(sigmoid(data.scores), data.labels)}
    mapping = encoder.calibration
    if mapping.calibrated:
        name = f"card calibration (a={mapping.a:.4g}, b={mapping.b:.4g})"
        rows[name] = Quality.of(mapping.apply(data.scores), data.labels)
    return Report(dataset.name, dataset.split, depth, data, rows)
