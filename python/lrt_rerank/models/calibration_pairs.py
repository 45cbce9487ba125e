"""(query, passage) pairs that calibrate static INT8 activation ranges, from a BEIR folder or the bundled corpus.

Each query of a split is paired with its judged passages (any grade, best first): the judgments only
choose which passages go with which query, nothing is scored against them. The first queries give the
calibration pairs; the queries after them (held out) give the lists on which an import measures the
INT8 model's per-query rank fidelity against FP32.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lrt_rerank.bundled import BUNDLED_DATASET, bundled_dataset_dir
from lrt_rerank.datasets import DatasetError, load_dataset

#: Pairs per calibration set, judged passages per query, and the held-out lists' count and length.
DEFAULT_PAIRS = 256
PER_QUERY = 4
HOLDOUT_QUERIES, HOLDOUT_MIN, HOLDOUT_DEPTH = 8, 10, 20
DEFAULT_SPLIT = "dev"
BUNDLED_NOTE = (
    f"the bundled {BUNDLED_DATASET} corpus and queries; its test judgments are used only to pair queries with "
    "passages, never to score or choose anything"
)


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    split: str
    pairs: list[tuple[str, str]]
    #: held-out (query, passages) lists for the fidelity measurement
    holdout: list[tuple[str, list[str]]]
    note: str = ""

    @property
    def digest(self) -> str:
        """sha256 of the pairs (JSON): two sets with equal digests calibrate alike."""
        return hashlib.sha256(json.dumps(self.pairs, ensure_ascii=False).encode("utf-8")).hexdigest()

    def card(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "split": self.split, "pairs": len(self.pairs), "sha256": self.digest}
        if self.note:
            out["note"] = self.note
        return out


def parse_spec(spec: str) -> tuple[Path, str]:
    """``DATASET[:SPLIT]`` -> (folder, split); the split defaults to dev."""
    folder, sep, split = spec.rpartition(":")
    if not sep or not split or "/" in split:
        return Path(spec), DEFAULT_SPLIT
    return Path(folder), split


def calibration_pairs(spec: str | None = None, count: int = DEFAULT_PAIRS) -> CalibrationSet:
    """The calibration set of ``spec`` (``DATASET[:SPLIT]``, a BEIR folder), else of the bundled corpus.

    Raises :class:`~lrt_rerank.datasets.DatasetError` naming the folder or qrels file that is wrong.
    """
    if count < 1:
        raise ValueError(f"calibration pair count must be at least 1, got {count}")
    if spec is None:
        folder, split, note = bundled_dataset_dir(), "test", BUNDLED_NOTE
    else:
        folder, split = parse_spec(spec)
        note = ""
        if not folder.is_dir():
            raise DatasetError(f"--calibrate {spec}: {folder} is not a directory (expected a BEIR dataset folder)")
        if not (folder / "qrels" / f"{split}.tsv").is_file():
            raise DatasetError(f"--calibrate {spec}: {folder / 'qrels' / f'{split}.tsv'} is missing (no split {split!r})")
    dataset = load_dataset(folder, split)
    pairs: list[tuple[str, str]] = []
    holdout: list[tuple[str, list[str]]] = []
    for qid, judged in dataset.qrels.items():
        ranked = sorted(judged, key=lambda doc: (-judged[doc], doc))
        passages = [dataset.corpus[doc].full_text for doc in ranked if not dataset.corpus[doc].is_empty]
        if len(pairs) < count:
            pairs += [(dataset.queries[qid], p) for p in passages[: min(PER_QUERY, count - len(pairs))]]
        elif len(passages) >= HOLDOUT_MIN:
            holdout.append((dataset.queries[qid], passages[:HOLDOUT_DEPTH]))
            if len(holdout) == HOLDOUT_QUERIES:
                break
    if not pairs:
        raise DatasetError(f"{folder / 'qrels' / f'{split}.tsv'}: no judged (query, passage) pairs to calibrate on")
    return CalibrationSet(dataset.name if spec else BUNDLED_DATASET, split, pairs, holdout, note)
