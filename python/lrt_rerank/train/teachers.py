"""Distillation teachers: what ``train distill --teacher DIR`` accepts, and the teacher's scores.

Three kinds of ``DIR``:

* a **training checkpoint** (``lrt-train.json``, from ``train teacher``): exported to a temporary
  fused ONNX directory and scored at its training max length; the student keeps some of its layers;
* an engine **model directory** (``card.json`` of kind cross-encoder, FP32 or INT8, e.g. from
  ``models import``): scored as it is, with its own tokenizer and its card's max length;
* a **Hugging Face snapshot** (``config.json``, no ``card.json``): opened by
  :meth:`lrt_rerank.encoders.CrossEncoder.load`, which imports it.

Every kind is scored by the project's own engine (:class:`lrt_rerank.CrossEncoder`). Scores are
cached on disk pair by pair, keyed by the teacher's sha256 (model.onnx, or model.safetensors for a
checkpoint), the query and the passage (:mod:`lrt_rerank.train.score_cache`), so a rerun does not
score again and an interrupted one resumes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lrt_rerank import CrossEncoder
from lrt_rerank.datasets import Dataset
from lrt_rerank.models.store import CARD, file_sha256
from lrt_rerank.train.data import Group, passage_text
from lrt_rerank.train.model import META_FILE
from lrt_rerank.train.score_cache import ScoreCache

logger = logging.getLogger(__name__)

CHECKPOINT = "training-checkpoint"
MODEL_DIR = "model-directory"
HF_SNAPSHOT = "huggingface-snapshot"
HF_CONFIG = "config.json"

Scores = dict[str, dict[str, float]]


def teacher_kind(path: Path) -> str:
    """Which kind of teacher ``path`` is; ``ValueError`` naming the path when it is none of them."""
    if not path.is_dir():
        raise ValueError(f"{path}: teacher directory not found")
    if (path / META_FILE).is_file():
        return CHECKPOINT
    if (path / CARD).is_file():
        return MODEL_DIR
    if (path / HF_CONFIG).is_file():
        return HF_SNAPSHOT
    raise ValueError(
        f"{path}: not a teacher: expected a training checkpoint ({META_FILE}, from `lrt-rerank train teacher`), "
        f"a cross-encoder model directory ({CARD}, e.g. from `lrt-rerank models import`) "
        f"or a Hugging Face snapshot folder ({HF_CONFIG})"
    )


@dataclass
class Teacher:
    """A resolved teacher. ``encoder`` is the loaded engine model (model directories and snapshots);
    a checkpoint is exported only when its scores are not cached."""

    path: Path
    kind: str
    name: str
    sha256: str
    max_length: int
    encoder: CrossEncoder | None = None

    def provenance(self) -> dict[str, Any]:
        """What the student's metadata and card record about its teacher."""
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "path": str(self.path), "max_length": self.max_length}

    @contextmanager
    def engine(self, threads: int) -> Iterator[CrossEncoder]:
        """The engine that scores for this teacher; a checkpoint is exported to a temporary fused ONNX
        directory first (the export checks ONNX against torch logits)."""
        if self.encoder is not None:
            yield self.encoder
            return
        from lrt_rerank.train.export import write_model_dir

        with tempfile.TemporaryDirectory(prefix="lrt-teacher-") as tmp:
            model_dir = write_model_dir(self.path, Path(tmp) / "teacher", self.name, self.max_length, {})
            yield CrossEncoder.load(str(model_dir), threads=threads, batch_size=16)


def open_teacher(path: Path, threads: int) -> Teacher:
    """Resolve ``path`` (see the module docstring); model directories and snapshots are loaded here."""
    kind = teacher_kind(path)
    if kind == CHECKPOINT:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        max_length = meta.get("recipe", {}).get("max_length")
        if not isinstance(max_length, int):
            raise ValueError(f"{path / META_FILE}: field 'recipe.max_length' must be an integer, got {max_length!r}")
        return Teacher(path, kind, path.name, file_sha256(path / "model.safetensors"), max_length)
    encoder = CrossEncoder.load(path, threads=threads, batch_size=16)
    return Teacher(path, kind, encoder.name, encoder.fingerprint, encoder.max_length, encoder)


def score_lists(
    teacher: Teacher, lists: Sequence[tuple[str, list[str]]], cache_dir: Path, threads: int, progress: bool = True
) -> list[np.ndarray]:
    """The teacher's logits for every (query, passages) list, read from the on-disk cache
    (:mod:`lrt_rerank.train.score_cache`) where this teacher already scored a pair; the rest is scored
    (only the missing passages of each list) and committed query by query, so a rerun resumes."""
    cache = ScoreCache(cache_dir, teacher.sha256, teacher.max_length)
    try:
        found = [cache.get(query, passages) for query, passages in lists]
        missing = [i for i, row in enumerate(found) if any(s is None for s in row)]
        logger.info("teacher %s: %d of %d lists cached in %s", teacher.name, len(lists) - len(missing), len(lists), cache.path)
        if missing:
            started = time.perf_counter()
            pairs = 0
            with teacher.engine(threads) as encoder:
                for i in tqdm(missing, desc="teacher scores", unit="query", disable=not progress):
                    query, passages = lists[i]
                    todo = sorted({p for p, s in zip(passages, found[i]) if s is None})
                    logits = encoder.score(query, todo)
                    cache.put(query, zip(todo, logits))
                    scored = dict(zip(todo, (float(x) for x in logits)))
                    found[i] = [s if s is not None else scored[p] for p, s in zip(passages, found[i])]
                    pairs += len(todo)
            logger.info("teacher %s scored %d pairs in %.0f s", teacher.name, pairs, time.perf_counter() - started)
        return [np.asarray(row, dtype=np.float64) for row in found]
    finally:
        cache.close()


def cached_scores(teacher: Teacher, dataset: Dataset, groups: Sequence[Group], cache_dir: Path, threads: int, progress: bool = True) -> Scores:
    """:func:`score_lists` for the (query, passage) pairs of training groups, as ``{query id: {doc id: logit}}``."""
    wanted: dict[str, set[str]] = {}
    for g in groups:
        wanted.setdefault(g.query_id, set()).update((g.positive, *g.negatives))
    qids = sorted(wanted)
    ids = {q: sorted(wanted[q]) for q in qids}
    lists = [(dataset.queries[q], [passage_text(dataset, d) for d in ids[q]]) for q in qids]
    logits = score_lists(teacher, lists, cache_dir, threads, progress)
    return {q: {d: float(x) for d, x in zip(ids[q], row)} for q, row in zip(qids, logits)}
