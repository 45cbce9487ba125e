"""Synthetic judged queries for the fusion tests: ranked lists whose best fusion weights are known by construction."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from lrt_rerank import rrf
from lrt_rerank.first_stage.base import Candidate
from lrt_rerank.rerank.fusion import signals_of
from lrt_rerank.tune import Judged


def ranked(ids: list[str]) -> list[Candidate]:
    return [Candidate(doc_id, float(len(ids) - rank), rank) for rank, doc_id in enumerate(ids, start=1)]


def synthetic_judged(queries: int, lists: Callable[[str, str, list[str]], dict[str, list[str]]]) -> list[Judged]:
    """``queries`` judged queries of 30 documents, one relevant: ``lists(relevant, distractor, the other 28)``
    ranks them per signal ("bm25", "dense", then any "dense:NAME"); the candidates are their RRF (k = 60)."""
    out = []
    for q in range(queries):
        ids = [f"q{q}d{i}" for i in range(30)]
        relevant = ids[0]
        by_signal = lists(relevant, ids[1], ids[2:])
        candidates = [doc_id for doc_id, _ in rrf(list(by_signal.values()), k=60.0)]
        bm25, dense = ranked(by_signal.pop("bm25")), ranked(by_signal.pop("dense"))
        signals = signals_of(candidates, bm25, dense, {name: ranked(ids) for name, ids in by_signal.items()})
        out.append(Judged(f"q{q}", candidates, signals, np.array([d == relevant for d in candidates])))
    return out
