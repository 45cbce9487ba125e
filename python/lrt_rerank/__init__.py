"""lrt-rerank: CPU re-ranking for hybrid search.

Public API: ``CrossEncoder``, ``BiEncoder``, ``ScoreCache``, ``rrf`` and the error types.
The hot path (tokenization, batching, ONNX Runtime inference, RRF, the score cache) is Rust.
"""

from lrt_rerank._core import InferenceError, LrtError, ModelError, RuntimeLoadError, ScoreCache, rrf
from lrt_rerank.encoders import BiEncoder, CrossEncoder

__all__ = [
    "BiEncoder",
    "CrossEncoder",
    "InferenceError",
    "LrtError",
    "ModelError",
    "RuntimeLoadError",
    "ScoreCache",
    "rrf",
]
__version__ = "0.1.0"
