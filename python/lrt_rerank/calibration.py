"""Score calibration: from a re-ranker's raw score to a probability of relevance.

**Platt scaling** (Platt, 1999): ``relevance = sigmoid(a * score + b)``, with ``(a, b)`` fitted by
maximum likelihood on labelled (score, relevant?) pairs of a tuning split. As Platt proposed,
the targets are smoothed: a positive counts as ``(N+ + 1) / (N+ + 2)`` and a negative as
``1 / (N- + 2)``, so a small or separable sample cannot drive the fit to certainty. The fit is
Newton's method on the two parameters with a backtracking line search (Lin, Lin & Weng, 2007),
run on standardised scores so that raw scores of any offset and scale (the shipped LRT's run
from about 18 to 32) are well conditioned; the result is mapped back to the raw score.

**Quality of probabilities** (labels are 0/1):

* ECE, expected calibration error: the predictions fall into 10 equal-width bins over [0, 1]
  (bin k holds ``k/10 <= p < (k+1)/10``; ``p = 1`` goes into the last bin), and
  ``ECE = sum over non-empty bins of (n_bin / N) * |mean label - mean prediction|``. 0 is perfect;
  a model that says 1.0 for everything scores (1 - share of positives).
* Brier score: ``mean((p - label)^2)``.

**The model card** records a fit under ``calibration``::

    {"method": "platt", "a": float, "b": float, "dataset": str, "split": str, "depth": int,
     "pairs": int, "positives": int, "ece": float, "brier": float, "fitted": "YYYY-MM-DD"}

``ece`` and ``brier`` are those of the calibrated probabilities on the fitting split. A card
without ``calibration`` maps scores through its ``activation`` field: ``"sigmoid"`` gives
``sigmoid(score)``; ``"identity"`` (the graph outputs a bare logit) gives ``sigmoid(score)`` as
well, since a probability needs the squashing; a card without either gives ``sigmoid(score)``.
A calibration fitted on a split named ``test`` is refused when written and when read: test
judgments are for reporting only.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lrt_rerank._core import ModelError
from lrt_rerank.jsonfile import read_json_object

METHOD = "platt"
ECE_BINS = 10
FIELD = "calibration"
ACTIVATIONS = ("sigmoid", "identity")
_MAX_NEWTON_STEPS = 100

FloatArray = npt.NDArray[np.float64]


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """The logistic function in float64, without overflow for any finite input (±1000 included)."""
    values = np.asarray(x, dtype=np.float64)
    with np.errstate(under="ignore"):  # exp(-1000) underflowing to 0 is the right answer
        small = np.exp(-np.abs(values))  # in (0, 1]: never overflows
        return np.where(values >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


def is_test_split(split: str) -> bool:
    """True for the split reserved for reporting (``test``, any case or surrounding space)."""
    return split.strip().lower() == "test"


def _check_pairs(values_in: npt.ArrayLike, labels: npt.ArrayLike, what: str) -> tuple[FloatArray, FloatArray]:
    values = np.asarray(values_in, dtype=np.float64).reshape(-1)
    targets = np.asarray(labels).reshape(-1)
    if values.size != targets.size:
        raise ValueError(f"{values.size} {what} but {targets.size} labels")
    if values.size == 0:
        raise ValueError(f"no {what} given")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} must be finite numbers")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("labels must be 0 or 1 (relevant: qrels grade > 0)")
    return values, targets.astype(np.float64)


def expected_calibration_error(probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of [0, 1] (see the module docstring)."""
    p, y = _check_pairs(probabilities, labels, "probabilities")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    gap = np.abs(np.bincount(index, weights=y, minlength=bins) - np.bincount(index, weights=p, minlength=bins))
    # sum over bins of (n_b / N) * |sum_b(y)/n_b - sum_b(p)/n_b| = sum over bins of |sum_b(y) - sum_b(p)| / N
    return float(gap[count > 0].sum() / p.size)


def brier_score(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean squared difference between probability and 0/1 label."""
    p, y = _check_pairs(probabilities, labels, "probabilities")
    return float(np.mean((p - y) ** 2))


def fit_platt(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """``(a, b)`` maximising the likelihood of Platt's smoothed targets under ``sigmoid(a * score + b)``.

    ``labels`` are 0/1; both classes must occur and the scores must not all be equal.
    """
    s, y = _check_pairs(scores, labels, "scores")
    positives = float(y.sum())
    negatives = float(y.size - positives)
    if positives == 0 or negatives == 0:
        raise ValueError(f"need both relevant and non-relevant pairs to fit, got {positives:.0f} and {negatives:.0f}")
    centre, spread = float(s.mean()), float(s.std())
    if not spread > 0:
        raise ValueError(f"all {s.size} scores are equal ({centre:g}): they carry no information to calibrate")
    x = (s - centre) / spread
    t = np.where(y > 0, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    design = np.stack([x, np.ones_like(x)], axis=1)

    def loss(theta: FloatArray) -> float:
        f = design @ theta  # cross-entropy against soft targets: log(1 + e^f) - t f, computed stably
        return float(np.sum(np.logaddexp(0.0, f) - t * f))

    theta = np.array([0.0, math.log((positives + 1.0) / (negatives + 1.0))])
    current = loss(theta)
    for _ in range(_MAX_NEWTON_STEPS):
        p = sigmoid(design @ theta)
        gradient = design.T @ (p - t)
        weights = p * (1.0 - p)
        hessian = (design * weights[:, None]).T @ design + 1e-12 * np.eye(2)
        step = -np.linalg.solve(hessian, gradient)
        decrease = float(gradient @ step)  # negative: the Hessian is positive definite
        if -decrease < 1e-12 * s.size:  # the Newton decrement: converged
            break
        size = 1.0
        while True:
            candidate = theta + size * step
            value = loss(candidate)
            if value <= current + 1e-4 * size * decrease:
                theta, current = candidate, value
                break
            size /= 2.0
            if size < 1e-10:
                raise ValueError("Platt fit: the line search made no progress (scores too extreme to fit in float64)")
    else:
        raise ValueError(f"Platt fit did not converge in {_MAX_NEWTON_STEPS} Newton steps")
    slope, intercept = float(theta[0]), float(theta[1])
    return slope / spread, intercept - slope * centre / spread


@dataclass(frozen=True)
class CalibrationRecord:
    """The card's ``calibration`` object: a Platt fit and where it was made."""

    a: float
    b: float
    dataset: str
    split: str
    depth: int
    pairs: int
    positives: int
    ece: float
    brier: float
    fitted: str
    method: str = METHOD

    def __post_init__(self) -> None:
        _validate(asdict(self), "calibration record")

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        return {"method": record.pop("method"), **record}

    @classmethod
    def from_json(cls, value: object, where: str) -> CalibrationRecord:
        """Parse a card's ``calibration`` object; ``where`` (the card's path) prefixes every error."""
        if not isinstance(value, dict):
            raise ModelError(f"{where}: field 'calibration' must be a JSON object, got {type(value).__name__}")
        _validate(value, where)
        return cls(**{name: value[name] for name in _FIELDS})


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_FIELDS: dict[str, tuple[str, Any]] = {
    "method": (f"must be {METHOD!r}", lambda v: v == METHOD),
    "a": ("must be a finite number > 0 (a larger score must mean more relevant)", lambda v: _is_number(v) and v > 0),
    "b": ("must be a finite number", _is_number),
    "dataset": ("must be a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "split": (
        "must name a tuning split (a non-empty string other than 'test': never fit on test)",
        lambda v: isinstance(v, str) and bool(v.strip()) and not is_test_split(v),
    ),
    "depth": ("must be an integer >= 1", lambda v: _is_count(v) and v >= 1),
    "pairs": ("must be an integer >= 2", lambda v: _is_count(v) and v >= 2),
    "positives": ("must be an integer >= 1", lambda v: _is_count(v) and v >= 1),
    "ece": ("must be a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
    "brier": ("must be a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
    "fitted": ("must be an ISO date (YYYY-MM-DD)", lambda v: isinstance(v, str) and _is_iso_date(v)),
}


def _is_iso_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _validate(value: Mapping[str, object], where: str) -> None:
    for name, (rule, ok) in _FIELDS.items():
        if name not in value:
            raise ModelError(f"{where}: field 'calibration.{name}' is missing")
        if not ok(value[name]):
            raise ModelError(f"{where}: field 'calibration.{name}' {rule}, got {value[name]!r}")
    if value["positives"] >= value["pairs"]:  # type: ignore[operator]
        raise ModelError(
            f"{where}: field 'calibration.positives' ({value['positives']}) must be below 'calibration.pairs' "
            f"({value['pairs']}): a fit needs non-relevant pairs too"
        )


@dataclass(frozen=True)
class Calibration:
    """The score-to-relevance mapping a model uses: ``sigmoid(a * score + b)`` and where (a, b) came from."""

    a: float
    b: float
    source: str
    record: CalibrationRecord | None = None

    @property
    def calibrated(self) -> bool:
        """True when (a, b) come from a fit (the card's ``calibration``), not from a bare activation."""
        return self.record is not None

    def apply(self, scores: npt.ArrayLike) -> FloatArray:
        """Probabilities in [0, 1] (float64), monotone increasing in the score."""
        return sigmoid(self.a * np.asarray(scores, dtype=np.float64) + self.b)

    def to_json(self) -> dict[str, Any]:
        return {
            "formula": "sigmoid(a * score + b)",
            "a": self.a,
            "b": self.b,
            "calibrated": self.calibrated,
            "source": self.source,
            **({"fitted_on": f"{self.record.dataset}/{self.record.split}"} if self.record is not None else {}),
        }

    @classmethod
    def from_card(cls, card: Mapping[str, object], card_path: Path) -> Calibration:
        """The mapping a card asks for: its ``calibration``, else its ``activation``, else plain sigmoid."""
        if FIELD in card:
            record = CalibrationRecord.from_json(card[FIELD], str(card_path))
            return cls(
                record.a,
                record.b,
                f"card.json calibration: Platt fit on {record.dataset}/{record.split} "
                f"({record.pairs} pairs, {record.fitted})",
                record,
            )
        activation = card.get("activation")
        if activation is None:
            return cls(1.0, 0.0, "card.json has no calibration or activation: sigmoid(score), uncalibrated")
        if activation not in ACTIVATIONS:
            raise ModelError(f"{card_path}: field 'activation' must be one of {ACTIVATIONS}, got {activation!r}")
        if activation == "identity":
            return cls(1.0, 0.0, "card.json activation 'identity' (the score is a logit): sigmoid(score), uncalibrated")
        return cls(1.0, 0.0, "card.json activation 'sigmoid': sigmoid(score), uncalibrated")


def write_calibration(card_path: Path, record: CalibrationRecord) -> None:
    """Set ``calibration`` in ``card_path`` atomically (temporary file + rename), keeping every other field."""
    data = read_json_object(card_path, unreadable="cannot read the model card")
    data[FIELD] = record.to_json()
    handle, tmp = tempfile.mkstemp(prefix=f".{card_path.name}-", suffix=".tmp", dir=card_path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, card_path.stat().st_mode & 0o777)
        os.replace(tmp, card_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
