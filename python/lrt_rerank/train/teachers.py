"""Distillation teachers: what ``train distill --teacher DIR`` accepts, and the teacher's scores.

Three kinds of ``DIR``:

* a **training checkpoint** (``lrt-train.json``, from ``train teacher``): exported to a temporary
  fused ONNX directory and scored at its training max length; the student keeps some of its layers;
* an engine **model directory** (``card.json`` of kind cross-encoder, FP32 or INT8, e.g. from
  ``models import``): scored as it is, with its own tokenizer and its card's max length;
* a **Hugging Face snapshot** (``config.json``, no ``card.json``): opened by
  :meth:`lrt_rerank.encoders.CrossEncoder.load`, which imports it.

Every kind is scored by the project's own engine (:class:`lrt_rerank.CrossEncoder`). Scores are
cached as JSON keyed by the teacher's sha256 (model.onnx, or model.safetensors for a checkpoint)
and by the exact (query, passage) pairs asked for, so a rerun does not score again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lrt_rerank import CrossEncoder
from lrt_rerank.datasets import Dataset
from lrt_rerank.models.store import CARD, file_sha256
from lrt_rerank.train.data import Group, passage_text
from lrt_rerank.train.model import META_FILE

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

    def score(self, dataset: Dataset, groups: Sequence[Group], threads: int, progress: bool = True) -> Scores:
        """The teacher's logits for every (query, passage) of ``groups``."""
        if self.encoder is not None:
            return _score_groups(self.encoder, dataset, groups, progress)
        from lrt_rerank.train.export import write_model_dir

        with tempfile.TemporaryDirectory(prefix="lrt-teacher-") as tmp:  # the export checks ONNX == torch logits
            model_dir = write_model_dir(self.path, Path(tmp) / "teacher", self.name, self.max_length, {})
            return _score_groups(CrossEncoder.load(str(model_dir), threads=threads, batch_size=16), dataset, groups, progress)


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


def cached_scores(teacher: Teacher, dataset: Dataset, groups: Sequence[Group], cache_dir: Path, threads: int, progress: bool = True) -> Scores:
    """:meth:`Teacher.score`, read from ``cache_dir`` when this teacher already scored these pairs."""
    path = cache_dir / f"teacher-scores-{teacher.sha256[:12]}-{_pairs_digest(teacher, dataset, groups)}.json"
    if path.is_file():
        logger.info("teacher scores from %s", path)
        return json.loads(path.read_text(encoding="utf-8"))
    started = time.perf_counter()
    scores = teacher.score(dataset, groups, threads, progress)
    logger.info("teacher %s scored %d queries in %.0f s", teacher.name, len(scores), time.perf_counter() - started)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(scores), encoding="utf-8")
    os.replace(tmp, path)
    return scores


def _wanted(groups: Sequence[Group]) -> dict[str, list[str]]:
    wanted: dict[str, set[str]] = {}
    for g in groups:
        wanted.setdefault(g.query_id, set()).update((g.positive, *g.negatives))
    return {qid: sorted(ids) for qid, ids in sorted(wanted.items())}


def _pairs_digest(teacher: Teacher, dataset: Dataset, groups: Sequence[Group]) -> str:
    """Short digest of what is scored: the dataset, the teacher's max length and the (query, passage) ids."""
    payload = json.dumps([dataset.name, teacher.max_length, _wanted(groups)], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _score_groups(encoder: CrossEncoder, dataset: Dataset, groups: Sequence[Group], progress: bool) -> Scores:
    out: Scores = {}
    for qid, ids in tqdm(_wanted(groups).items(), desc="teacher scores", disable=not progress):
        logits = encoder.score(dataset.queries[qid], [passage_text(dataset, d) for d in ids])
        out[qid] = {d: float(x) for d, x in zip(ids, logits)}
    return out
