"""Data that ships inside the package: the NFCorpus test split (CC BY-SA 4.0; see its ATTRIBUTION.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The bundled BEIR dataset folder's name (under ``lrt_rerank/data``).
BUNDLED_DATASET = "nfcorpus-test"


def bundled_dataset_dir() -> Path:
    """The bundled NFCorpus test split: corpus.jsonl, queries.jsonl, qrels/test.tsv."""
    return Path(str(resources.files("lrt_rerank") / "data" / BUNDLED_DATASET))
