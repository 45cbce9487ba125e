"""A ``--reranker`` value as a loaded re-ranker: above both encoders (cross-encoder and ColBERT) and model resolution."""

from __future__ import annotations

from pathlib import Path

from lrt_rerank.encoders import CrossEncoder
from lrt_rerank.late import ColBERT
from lrt_rerank.models.resolve import is_late_interaction


def load_reranker(spec: str, backend: str = "ort") -> CrossEncoder | ColBERT | None:
    """A ``--reranker`` value: 'none' → None; 'default' → the default cross-encoder; anything else → that
    model directory (or snapshot folder): a ColBERT for a late-interaction one, else a cross-encoder;
    loaded by the runtime ``backend`` names (see :mod:`lrt_rerank.backends`)."""
    if spec == "none":
        return None
    if spec == "default":
        return CrossEncoder.load(backend=backend)
    model_dir = Path(spec)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--reranker {spec}: not 'default', 'none' or a model directory")
    if is_late_interaction(model_dir):
        return ColBERT.load(model_dir, backend=backend)
    return CrossEncoder.load(str(model_dir), backend=backend)
