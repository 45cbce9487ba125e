"""The tuned fusion: one ranking function of the first stage's own signals (and a re-ranker's logit),
chosen on judged queries by ``lrt-rerank tune`` (:mod:`lrt_rerank.tune`) and read from a ``fusion.json``.

For one query's first-stage candidates (in first-stage order, positions 1..n) the fused score is

    score = a * N(BM25 score) + b * N(dense cosine) + c * prior(position_k) + d * z(logit)

* ``N`` is the normalisation: ``zscore`` (mean 0, standard deviation 1 over the query's candidates)
  or ``minmax`` (0..1 over each system's retrieved pool: its top :data:`FEATURE_POOL`, the range that
  OpenSearch's normalization-processor uses, so a ``minmax`` fusion without a prior can run in the node;
  over the candidates when the pool's range is not known);
* ``prior`` is the rank prior of :mod:`lrt_rerank.interpolation`, ``z(-log position)``;
  ``position_k`` is the candidate's position in the order of weighted RRF with constant ``k``
  (``w_bm25/(k + BM25 rank) + w_dense/(k + dense rank)``, ranks counted in each system's top
  :data:`~lrt_rerank.first_stage.base.FUSION_DEPTH`, ``rrf_weights`` 1 and 1 unless tuned); for the
  first stage's own ``k`` (:data:`~lrt_rerank.first_stage.base.RRF_K`) and equal weights it is the
  first-stage position itself;
* ``d * z(logit)`` is the re-ranker's standardised logit (only a fusion fitted with a re-ranker has ``d > 0``).

A first stage with further bi-encoders (its ``dense_signals`` beyond ``"dense"``, named ``dense:NAME``)
brings one more signal each: ``weights`` may give each an ``N(cosine)`` term and ``rrf_weights`` a weight in
the prior's RRF (absent: 0 and 1). The fusion of N signals is the same function with N terms.

``function: "rrf"`` is the case ``a = b = 0, c = 1``: the order of RRF with constant ``k``.
A candidate missing from one system's top :data:`FEATURE_POOL` gets that system's lowest score there.

The BM25 and dense signals come from :func:`first_stage_signals` (two more searches of the same first
stage), so the function means the same for the embedded and the OpenSearch first stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lrt_rerank.first_stage.base import EXTRA_DENSE, FUSION_DEPTH, RRF_K, Candidate, FirstStage
from lrt_rerank.interpolation import rank_prior

FORMAT = "lrt-rerank-fusion"
FORMAT_VERSION = 1
FEATURE_POOL = 200
"""Depth to which BM25 and dense are searched for the candidates' scores."""
FUNCTIONS = ("rrf", "linear")
Normalisation = Literal["zscore", "minmax"]
NORMALISATIONS: tuple[Normalisation, ...] = ("zscore", "minmax")
WEIGHTS = ("bm25", "dense", "prior", "reranker")
RRF_SIGNALS = ("bm25", "dense")
"""The ranked signals RRF fuses, each with its weight in ``rrf_weights`` (and each further ``dense:NAME``)."""

Array = npt.NDArray[np.float64]


class FusionFormatError(ValueError):
    """A ``fusion.json`` that cannot be used; the message names the file and the field."""


def zscore(values: Sequence[float] | Array) -> Array:
    """Standardised over one query's candidates (mean 0, standard deviation 1; all-equal values give 0)."""
    x = np.asarray(values, dtype=np.float64)
    return (x - x.mean()) / (x.std() + 1e-9) if x.size else x


def minmax(values: Sequence[float] | Array) -> Array:
    """Scaled over one query's candidates to 0 (lowest) .. 1 (highest); all-equal values give 0."""
    x = np.asarray(values, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min() + 1e-9) if x.size else x


def normalise(
    values: Array, how: Normalisation, pool: tuple[float, float] | None = None, retrieved: npt.NDArray[np.bool_] | None = None
) -> Array:
    """``zscore`` over ``values``; ``minmax`` over the pool's (lowest, highest) when given, else over ``values``.

    A pool whose scores are all one value (a single match) gives, as OpenSearch's ``min_max`` does, 1 to the
    candidates it ``retrieved`` and 0 to the others."""
    if how == "zscore":
        return zscore(values)
    if pool is None:
        return minmax(values)
    low, high = pool
    if high == low:
        return np.asarray(retrieved, dtype=np.float64) if retrieved is not None else np.zeros(len(values))
    return (np.asarray(values, dtype=np.float64) - low) / (high - low + 1e-9)


@dataclass(frozen=True)
class DenseSignal:
    """A further bi-encoder's signal of one query's candidates: cosine (the pool's lowest where missing),
    rank (0 = not in its top :data:`~lrt_rerank.first_stage.base.FUSION_DEPTH`) and its pool's range."""

    scores: Array
    rank: npt.NDArray[np.int64]
    range: tuple[float, float] | None = None

    def head(self, n: int) -> DenseSignal:
        return DenseSignal(self.scores[:n], self.rank[:n], self.range)


@dataclass(frozen=True)
class Signals:
    """The first stage's signals of one query's candidates, in first-stage order: each system's score
    (its lowest score in the pool where the candidate is missing) and rank (0 = not in its top
    :data:`~lrt_rerank.first_stage.base.FUSION_DEPTH`)."""

    bm25: Array
    dense: Array
    bm25_rank: npt.NDArray[np.int64]
    dense_rank: npt.NDArray[np.int64]
    bm25_range: tuple[float, float] | None = None
    """(lowest, highest) score of BM25's retrieved pool, the ``minmax`` range; None: the candidates'."""
    dense_range: tuple[float, float] | None = None
    """The same for dense."""
    extra: Mapping[str, DenseSignal] = field(default_factory=dict)
    """Each further bi-encoder's signal, by system name ``dense:NAME``."""

    def __len__(self) -> int:
        return int(self.bm25.size)

    @property
    def names(self) -> tuple[str, ...]:
        """The ranked signals, in the order of :meth:`rrf_positions`' weights: BM25, dense, the further ones."""
        return (*RRF_SIGNALS, *self.extra)

    def head(self, n: int) -> Signals:
        """The signals of the first ``n`` candidates (the pools' ranges unchanged)."""
        return Signals(
            self.bm25[:n], self.dense[:n], self.bm25_rank[:n], self.dense_rank[:n], self.bm25_range, self.dense_range,
            {name: signal.head(n) for name, signal in self.extra.items()},
        )

    def rrf_positions(self, k: int, weights: Sequence[float] | None = None) -> npt.NDArray[np.int64]:
        """Each candidate's 0-based position in the order of RRF with constant ``k`` and a weight per
        signal (:attr:`names`; None: all 1) (ties: first-stage order)."""
        ranked = (self.bm25_rank, self.dense_rank, *(signal.rank for signal in self.extra.values()))
        score = np.zeros(len(self))
        for weight, ranks in zip(weights or [1.0] * len(ranked), ranked, strict=True):
            score += np.where(ranks > 0, weight / (k + np.maximum(ranks, 1)), 0.0)
        order = np.argsort(-score, kind="stable")
        positions = np.empty(len(self), dtype=np.int64)
        positions[order] = np.arange(len(self))
        return positions


def first_stage_signals(first_stage: FirstStage, query: str, ids: Sequence[str], pool: int = FEATURE_POOL) -> Signals:
    """:class:`Signals` of the candidates ``ids``: BM25 and each dense signal searched to depth ``pool``."""
    extra = {name: first_stage.search(query, pool, name) for name in first_stage.dense_signals[1:]}  # type: ignore[arg-type]
    return signals_of(ids, first_stage.search(query, pool, "bm25"), first_stage.search(query, pool, "dense"), extra)


def signals_of(
    ids: Sequence[str], bm25: Sequence[Candidate], dense: Sequence[Candidate], extra: Mapping[str, Sequence[Candidate]] | None = None
) -> Signals:
    """:class:`Signals` of the candidates ``ids`` from each system's retrieved pool (best first, ranks 1..n;
    ``extra``: the further dense signals' by name): a candidate missing from a pool gets its lowest score;
    ranks past :data:`~lrt_rerank.first_stage.base.FUSION_DEPTH` count as 0."""
    pools = [bm25, dense, *(extra or {}).values()]
    scores, ranks, ranges = [], [], []
    for found in pools:
        by_id = {c.id: c for c in found}
        floor = min((c.score for c in found), default=0.0)
        scores.append(np.array([by_id[d].score if d in by_id else floor for d in ids], dtype=np.float64))
        ranks.append(np.array([by_id[d].rank if d in by_id and by_id[d].rank <= FUSION_DEPTH else 0 for d in ids], dtype=np.int64))
        ranges.append((floor, max((c.score for c in found), default=0.0)))
    further = {name: DenseSignal(scores[i], ranks[i], ranges[i]) for i, name in enumerate(extra or {}, start=2)}
    return Signals(scores[0], scores[1], ranks[0], ranks[1], ranges[0], ranges[1], further)


def first_stage_features(first_stage: FirstStage, query: str, ids: Sequence[str], pool: int = FEATURE_POOL) -> Array:
    """``[2, len(ids)]``: z(BM25 score) and z(dense cosine) of the candidates ``ids`` (:func:`first_stage_signals`)."""
    signals = first_stage_signals(first_stage, query, ids, pool)
    return np.vstack([zscore(signals.bm25), zscore(signals.dense)]) if ids else np.zeros((2, 0))


def terms(
    signals: Signals,
    logits: Sequence[float] | Array | None,
    normalisation: Normalisation,
    rrf_k: int,
    rrf_weights: Sequence[float] | None = None,
) -> Array:
    """``[4 + further, n]``: the terms the weights multiply: prior(position_k), N(BM25), N(dense), z(logit)
    (0 without logits), then N(cosine) of each further dense signal; ``rrf_weights`` weigh the signals
    (:attr:`Signals.names`; None: all 1) in the prior's RRF order."""
    n = len(signals)
    first_stage_order = rrf_k == RRF_K and (rrf_weights is None or len(set(rrf_weights)) == 1)
    positions = np.arange(n) if first_stage_order else signals.rrf_positions(rrf_k, rrf_weights)
    out = np.zeros((4 + len(signals.extra), n))
    if n:
        out[0] = rank_prior(n)[positions]
        out[1] = normalise(signals.bm25, normalisation, signals.bm25_range, signals.bm25_rank > 0)
        out[2] = normalise(signals.dense, normalisation, signals.dense_range, signals.dense_rank > 0)
        if logits is not None:
            out[3] = zscore(logits)
        for row, signal in enumerate(signals.extra.values(), start=4):
            out[row] = normalise(signal.scores, normalisation, signal.range, signal.rank > 0)
    return out


@dataclass(frozen=True)
class Fusion:
    """A ranking function (module docstring): ``weights`` a, b, c, d by name, ``normalisation`` of the
    scores, ``rrf_k`` and ``rrf_weights`` (by signal, :data:`RRF_SIGNALS`) of the prior's order;
    ``fitted_on`` and ``figures`` record where it came from."""

    function: Literal["rrf", "linear"] = "rrf"
    weights: Mapping[str, float] = field(default_factory=lambda: {"bm25": 0.0, "dense": 0.0, "prior": 1.0, "reranker": 0.0})
    normalisation: Normalisation = "zscore"
    rrf_k: int = RRF_K
    fitted_on: Mapping[str, Any] = field(default_factory=dict, compare=False)
    figures: Mapping[str, Any] = field(default_factory=dict, compare=False)
    source: str = field(default="the fusion", compare=False)
    """Where it was read from (named in errors); not written."""
    rrf_weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(RRF_SIGNALS, 1.0))

    @property
    def further_signals(self) -> tuple[str, ...]:
        """The further dense signals (``dense:NAME``) this fusion names in ``weights`` or ``rrf_weights``."""
        return tuple(dict.fromkeys(k for k in (*self.weights, *self.rrf_weights) if k.startswith(EXTRA_DENSE)))

    def rrf_weight_vector(self, names: Sequence[str] = RRF_SIGNALS) -> tuple[float, ...]:
        """``rrf_weights`` of the signals ``names`` (default :data:`RRF_SIGNALS`); one it does not name: 1."""
        return tuple(float(self.rrf_weights.get(name, 1.0)) for name in names)

    @property
    def weighted_rrf(self) -> bool:
        """The prior's RRF weighs its signals unequally (equal weights give plain RRF's order)."""
        return len(set(self.rrf_weight_vector((*RRF_SIGNALS, *self.further_signals)))) > 1

    @property
    def uses_reranker(self) -> bool:
        return self.weights["reranker"] > 0

    @property
    def is_first_stage_order(self) -> bool:
        """RRF with the first stage's own ``k`` and nothing else: the order the first stage already gives."""
        return self.function == "rrf" and self.rrf_k == RRF_K and not self.weighted_rrf and not self.uses_reranker

    def vector(self, further: Sequence[str] = ()) -> Array:
        """The weights in the order of :func:`terms`' rows, for signals with the further dense signals ``further``."""
        names = ("prior", "bm25", "dense", "reranker", *further)
        return np.array([self.weights.get(k, 0.0) for k in names], dtype=np.float64)

    def scores(self, signals: Signals, logits: Sequence[float] | Array | None = None) -> Array:
        """The fused score of each candidate (higher is better), in the candidates' order."""
        if self.uses_reranker and (logits is None or len(logits) != len(signals)):
            raise ValueError(f"this fusion weighs a re-ranker's logit ({self.weights['reranker']:g}) and needs {len(signals)} logits")
        missing = [name for name in self.further_signals if name not in signals.extra]
        if missing:
            raise ValueError(
                f"{self.source} weighs the dense signal {missing[0]!r}, which the first stage does not have "
                f"(it has {', '.join(signals.names[1:])}); index with that model or tune again"
            )
        further = tuple(signals.extra)
        return self.vector(further) @ terms(signals, logits, self.normalisation, self.rrf_k, self.rrf_weight_vector(signals.names))

    def describe(self) -> str:
        """One line, e.g. ``linear (zscore): 1 BM25 + 0.5 dense + 1 prior`` or ``RRF k=60``."""
        signals = (*RRF_SIGNALS, *self.further_signals)
        weighted = (
            " weighted " + " : ".join(f"{self.rrf_weights.get(k, 1.0):g} {k}" for k in signals) if self.weighted_rrf else ""
        )
        if self.function == "rrf" and not self.uses_reranker:
            return f"RRF k={self.rrf_k}{weighted}"
        names = {"bm25": "BM25", "dense": "dense", "prior": "prior", "reranker": "z(logit)"}
        terms = " + ".join(
            f"{self.weights[k]:g} {names.get(k, k)}" for k in (*WEIGHTS, *self.further_signals) if self.weights.get(k)
        )
        prior = f", prior of RRF k={self.rrf_k}{weighted}" if self.rrf_k != RRF_K or weighted else ""
        return f"{self.function} ({self.normalisation}{prior}): {terms}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "function": self.function,
            "weights": {k: float(self.weights[k]) for k in (*WEIGHTS, *(n for n in self.further_signals if n in self.weights))},
            "normalisation": self.normalisation,
            "rrf_k": self.rrf_k,
            "rrf_weights": {k: float(self.rrf_weights.get(k, 1.0)) for k in (*RRF_SIGNALS, *self.further_signals)},
            "fitted_on": dict(self.fitted_on),
            "figures": dict(self.figures),
        }

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return out


def load_fusion(path: str | Path) -> Fusion:
    """Read and validate a ``fusion.json``; :class:`FusionFormatError` names the file and the field."""
    source = Path(path)
    try:
        record = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FusionFormatError(f"{source}: no such fusion file (write one with `lrt-rerank tune`)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FusionFormatError(f"{source}: not JSON ({exc})") from exc
    return parse_fusion(record, str(source))


def parse_fusion(record: object, source: str = "fusion.json") -> Fusion:
    """A :class:`Fusion` from its JSON object, validated field by field."""

    def fail(name: str, why: str) -> FusionFormatError:
        return FusionFormatError(f"{source}: field '{name}' {why}")

    if not isinstance(record, dict):
        raise FusionFormatError(f"{source}: expected a JSON object")
    if record.get("format") != FORMAT:
        raise fail("format", f"must be {FORMAT!r}, got {record.get('format')!r}")
    if record.get("format_version") != FORMAT_VERSION:
        raise fail("format_version", f"must be {FORMAT_VERSION}, got {record.get('format_version')!r}")
    function = record.get("function")
    if function not in FUNCTIONS:
        raise fail("function", f"must be one of {', '.join(FUNCTIONS)}, got {function!r}")
    values = _number_map(record.get("weights"), "weights", WEIGHTS, "a weight", 0.0, fail)
    if sum(values.values()) <= 0:
        raise fail("weights", "are all 0: the function would rank nothing")
    if function == "rrf" and any(values[k] for k in values if k not in ("prior", "reranker")):
        raise fail("weights", "of function 'rrf' must have bm25 = dense = 0 (and every dense:NAME)")
    normalisation = record.get("normalisation", "zscore")
    if normalisation not in NORMALISATIONS:
        raise fail("normalisation", f"must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
    rrf_k = record.get("rrf_k", RRF_K)
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
        raise fail("rrf_k", f"must be an integer >= 1, got {rrf_k!r}")
    for name in ("fitted_on", "figures"):
        if not isinstance(record.get(name, {}), dict):
            raise fail(name, "must be an object")
    # Absent from a fusion.json written before weighted RRF: equal weights.
    rrf_weights = record.get("rrf_weights", dict.fromkeys(RRF_SIGNALS, 1.0))
    signal_weights = _number_map(rrf_weights, "rrf_weights", RRF_SIGNALS, "a ranked signal", 1.0, fail, positive=True)
    return Fusion(
        function, values, normalisation, rrf_k, record.get("fitted_on", {}), record.get("figures", {}), source, signal_weights
    )


def _number_map(
    value: object,
    field_name: str,
    names: Sequence[str],
    what: str,
    default: float,
    fail: Callable[[str, str], FusionFormatError],
    positive: bool = False,
) -> dict[str, float]:
    """A JSON object of finite numbers >= 0 (> 0 with ``positive``) keyed by ``names`` (absent: ``default``)."""
    if not isinstance(value, dict):
        raise fail(field_name, "must be an object with " + ", ".join(names))
    unknown = sorted(k for k in set(value) - set(names) if not (k.startswith(EXTRA_DENSE) and len(k) > len(EXTRA_DENSE)))
    if unknown:
        raise fail(f"{field_name}.{unknown[0]}", f"is not {what} (expected {', '.join(names)} or dense:NAME)")
    out: dict[str, float] = {}
    for name in (*names, *(k for k in value if k not in names)):
        number = value.get(name, default)
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not np.isfinite(number)
            or number < 0
            or (positive and number == 0)
        ):
            raise fail(f"{field_name}.{name}", f"must be a finite number {'>' if positive else '>='} 0, got {number!r}")
        out[name] = float(number)
    return out
