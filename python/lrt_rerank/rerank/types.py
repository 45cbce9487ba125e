"""The types every re-ranking path shares: the re-ranker protocol, cascade stages, one hit type, one result type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Reranker(Protocol):
    """What the core needs from a re-ranker: one score per passage, in input order.

    ``lrt_rerank.CrossEncoder`` and :class:`lrt_rerank.opensearch.remote.RemoteReranker` satisfy it.
    Optional attributes the core uses when present: ``card`` (the interpolation weight),
    ``calibration`` (``apply(logits)`` -> probabilities), ``fingerprint`` (cache keys).
    """

    def score(self, query: str, passages: list[str]) -> npt.NDArray[np.float32]:
        """One relevance score per passage, in input order."""
        ...


class RerankStatus(str, Enum):
    """Why a call was (or was not) re-ranked."""

    DISABLED = "disabled"  # no re-ranker configured
    COMPLETE = "complete"  # every candidate up to the re-rank depth was re-ranked
    PARTIAL = "partial"  # the budget ran out part-way; the rest kept first-stage order (a cascade: the last completed stage's)
    OUT_OF_BUDGET = "out_of_budget"  # no chunk fitted in the budget
    FAILED = "failed"  # the re-ranker raised; first-stage order returned (a cascade: the last completed stage's)
    EMPTY = "empty"  # nothing to re-rank (empty query or no candidates)


@dataclass(frozen=True)
class Hit:
    """One result.

    ``score`` is the re-ranked score when ``reranked`` (the re-ranker's logit, interpolated with the
    first-stage order when the core interpolates), else the first-stage score. ``relevance`` is the
    calibrated probability of the logit (re-ranked hits of a re-ranker with a calibration only).
    ``source`` is what the first stage returned with the hit (OpenSearch's ``_source``), if anything.
    """

    id: str
    score: float
    rank: int
    first_stage_rank: int
    first_stage_score: float
    reranked: bool
    logit: float | None = None
    relevance: float | None = None
    source: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Stage:
    """One stage of a cascade: ``reranker`` re-ranks the top ``depth`` of the previous stage's order.

    ``interpolation`` weighs the previous stage's order in the score (``None``: the re-ranker's card);
    ``name`` labels the stage in telemetry (default: ``stage1``, ``stage2``, ...).
    """

    reranker: Reranker
    depth: int
    interpolation: float | None = None
    name: str | None = None


@dataclass(frozen=True)
class StageReport:
    """Telemetry of one stage of one call: its status, how many candidates it scored, its time, its error."""

    name: str
    status: RerankStatus
    reranked: int
    ms: float
    error: str | None = None


@dataclass(frozen=True)
class SearchResult:
    """Hits and per-call telemetry: the re-rank status, how many were re-ranked, the error that made
    the call fail open (``"Type: message"``), and the time of each stage in milliseconds.

    With a cascade, ``status`` is the worst stage's, ``reranked`` counts the first stage's scored
    candidates and ``stages`` reports each stage (empty without a re-ranker).
    """

    hits: list[Hit]
    status: RerankStatus
    reranked: int
    first_stage_ms: float
    rerank_ms: float
    total_ms: float
    error: str | None = None
    stages: tuple[StageReport, ...] = ()

    @property
    def error_type(self) -> str | None:
        """The exception type's name of a failed call (the part of ``error`` before the colon)."""
        return None if self.error is None else self.error.split(":", 1)[0]
