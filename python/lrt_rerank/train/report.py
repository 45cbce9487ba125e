"""Figures for the model card and README: re-rank the RRF top-50 with a model directory through the
engine (``CrossEncoder``), score with :mod:`lrt_rerank.evaluate`, time each query's re-rank.

Besides the pure re-ranked order, the card records the interpolation weight chosen on dev
(``w * z(logit) + (1 - w) * z(RRF score)``, see :mod:`lrt_rerank.train.scoring`) and its effect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import latency_percentiles
from lrt_rerank.train.data import Candidates, passage_text
from lrt_rerank.train.scoring import best_weight, metrics_for, reranked_run

DEPTH = 50


def first_stage_row(dataset: Dataset, candidates: Candidates) -> dict[str, Any]:
    return {"system": "RRF first stage", **_round(metrics_for(dataset, candidates.ids))}


def rerank_logits(
    model_dir: Path, dataset: Dataset, candidates: Candidates, depth: int = DEPTH, threads: int | None = None, progress: bool = True
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Logits for each query's top ``depth`` and the wall time (ms) of each query's re-rank call."""
    from lrt_rerank import CrossEncoder

    encoder = CrossEncoder.load(str(model_dir), threads=threads)
    first = next(iter(candidates.ids))
    encoder.score(dataset.queries[first], [passage_text(dataset, d) for d in candidates.ids[first][:depth]])  # warm-up
    logits: dict[str, np.ndarray] = {}
    timings: list[float] = []
    for qid in tqdm(list(candidates.ids), desc=f"re-rank {model_dir.name}", disable=not progress, leave=False):
        texts = [passage_text(dataset, d) for d in candidates.ids[qid][:depth]]
        started = time.perf_counter()
        logits[qid] = np.asarray(encoder.score(dataset.queries[qid], texts), dtype=np.float64)
        timings.append((time.perf_counter() - started) * 1000.0)
    return logits, timings


def model_row(
    label: str, model_dir: Path, dataset: Dataset, candidates: Candidates, logits: dict[str, np.ndarray], timings: list[float], weight: float | None
) -> dict[str, Any]:
    import json

    card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    p = latency_percentiles(timings)
    row: dict[str, Any] = {
        "system": label,
        **_round(metrics_for(dataset, reranked_run(candidates, logits, 1.0))),
        "rerank_p50_ms": round(p[50], 1),
        "rerank_p95_ms": round(p[95], 1),
        "parameters": card.get("parameters"),
        "layers": card.get("layers"),
        "max_length": card.get("max_length"),
    }
    if weight is not None:
        row["interpolated"] = {"weight": weight, **_round(metrics_for(dataset, reranked_run(candidates, logits, weight)))}
    return row


def dev_weight(dataset: Dataset, candidates: Candidates, logits: dict[str, np.ndarray]) -> tuple[float, dict[float, float]]:
    return best_weight(dataset, candidates, logits)


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}
