"""lrt-rerank: CPU re-ranking for hybrid search.

Public API: ``CrossEncoder``, ``BiEncoder``, ``ScoreCache``, ``rrf`` and the error types.
The hot path (tokenization, batching, ONNX Runtime inference, RRF, the score cache) is Rust.
"""

from lrt_rerank._core import InferenceError, LrtError, ModelError, RuntimeLoadError, ScoreCache, rrf
from lrt_rerank.encoders import BiEncoder, CrossEncoder

__all__ = [
    "BiEncoder",
    "ColBERT",
    "CrossEncoder",
    "InferenceError",
    "LrtError",
    "ModelError",
    "RuntimeLoadError",
    "ScoreCache",
    "rrf",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ColBERT (late interaction) is imported on first use, so that ``import lrt_rerank`` stays light
    if name == "ColBERT":
        from lrt_rerank.late import ColBERT

        return ColBERT
    raise AttributeError(f"module 'lrt_rerank' has no attribute {name!r}")
