"""Python faces of the Rust encoders: ``CrossEncoder`` and ``BiEncoder``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lrt_rerank import _core
from lrt_rerank.calibration import Calibration
from lrt_rerank.models.store import CARD, MODEL, ModelCard, file_sha256
from lrt_rerank.models.resolve import resolve_model_dir
from lrt_rerank.runtime import ensure_runtime
from lrt_rerank.text import lone_surrogate_at

PathLike = str | os.PathLike[str]


def check_text(name: str, text: object) -> str:
    """``text`` if it is a str the core can take (no lone surrogates, see :mod:`lrt_rerank.text`)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    at = lone_surrogate_at(text)
    if at is not None:
        raise ValueError(
            f"{name} is not valid Unicode text: lone surrogate {text[at]!r} at position {at} has no UTF-8 encoding"
        )
    return text


def _check_texts(name: str, texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    if isinstance(texts, bytes) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    return [check_text(f"{name}[{i}]", t) for i, t in enumerate(texts)]


def _check_positive(**values: int | None) -> None:
    """Each value None (the default) or an int >= 1; anything else is a ValueError/TypeError naming the
    argument, not an OverflowError in the core."""
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _open_model_dir(model_dir: PathLike | None, kind: str) -> tuple[Path, ModelCard]:
    """Load the runtime, resolve ``model_dir`` (None/"default": the default of ``kind``) and read its card."""
    ensure_runtime()
    path = resolve_model_dir(model_dir, kind)
    if not path.is_dir():
        raise _core.ModelError(f"{path}: model directory not found")
    card = ModelCard.read(path)
    if card.kind != kind:
        raise _core.ModelError(f"{path / 'card.json'}: this is a {card.kind} model, expected a {kind}")
    if not (path / MODEL).is_file():
        raise _core.ModelError(f"{path / MODEL}: model file not found")
    return path, card


class CrossEncoder:
    """Scores (query, passage) pairs with an ONNX cross-encoder through the Rust core.

    Concurrency: ``score`` releases the GIL. Concurrent calls tokenize in parallel, then queue
    for the model's ONNX Runtime session; each run uses ``threads`` intra-op threads (default:
    all cores), so one call at a time already uses the whole machine.

    ``score`` gives the model's raw scores (logits); ``relevance`` maps them to calibrated
    probabilities with the card's calibration (:mod:`lrt_rerank.calibration`).
    """

    def __init__(self, core: _core.CrossEncoderCore, model_dir: Path, card: ModelCard, cache: _core.ScoreCache | None):
        self._core = core
        self.model_dir = model_dir
        self.card = card.data
        self.cache = cache
        self._calibration = Calibration.from_card(card.data, model_dir / CARD)

    @classmethod
    def load(
        cls,
        model_dir: PathLike | None = None,
        max_length: int | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        cache: _core.ScoreCache | None = None,
        token_budget: int | None = None,
    ) -> "CrossEncoder":
        """Load a cross-encoder directory (``None`` or ``"default"``: the packaged default).

        A batch holds at most ``batch_size`` pairs and ``token_budget`` padded tokens (default: the
        engine's, 512)."""
        _check_positive(max_length=max_length, threads=threads, batch_size=batch_size, token_budget=token_budget)
        path, card = _open_model_dir(model_dir, "cross-encoder")
        fingerprint = file_sha256(path / MODEL)
        core = _core.CrossEncoderCore(
            str(path),
            max_length or card.max_length,
            fingerprint,
            threads=threads,
            batch_size=batch_size or 16,
            cache=cache,
            token_budget=token_budget,
        )
        return cls(core, path, card, cache)

    @property
    def fingerprint(self) -> str:
        """sha256 of model.onnx: part of every cache key."""
        return self._core.fingerprint

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.model_dir.name))

    @property
    def max_length(self) -> int:
        return self._core.max_length

    @property
    def batch_size(self) -> int:
        return self._core.batch_size

    @property
    def batches_run(self) -> int:
        """Batches run through the ONNX sessions since load (the load-time probe counts one)."""
        return self._core.batches_run

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Raw logits (float32), one per passage, in input order."""
        return self._core.score(check_text("query", query), _check_texts("passages", passages))

    @property
    def calibration(self) -> Calibration:
        """The score-to-probability mapping in use: (a, b) of ``sigmoid(a * score + b)`` and their source.

        From the card's ``calibration`` (a Platt fit, see ``lrt-rerank models calibrate``); a card
        without one uses its ``activation`` ("sigmoid" and "identity" both give sigmoid(score)).
        """
        return self._calibration

    def relevance(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities of relevance (float64 in [0, 1]), one per passage, in input order.

        ``sigmoid(a * score + b)`` of :meth:`score`, with (a, b) from :attr:`calibration`: monotone
        in the score, so it ranks exactly as the score does.
        """
        return self._calibration.apply(self.score(query, passages))

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None) -> list[tuple[int, float]]:
        """(index, score) pairs, score descending, ties by index."""
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        scores = self.score(query, passages)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        if top_k is not None:
            order = order[:top_k]
        return [(i, float(scores[i])) for i in order]

    def encode(self, query: str, passages: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(token ids, token type ids) per pair, as fed to the model."""
        return self._core.encode(check_text("query", query), _check_texts("passages", passages))

    def padding_stats(self, query: str, passages: Sequence[str]) -> tuple[int, int, int]:
        """(padded tokens with length buckets, padded tokens padding all to the longest, real tokens)."""
        return self._core.padding_stats(check_text("query", query), _check_texts("passages", passages))

    def __repr__(self) -> str:
        return f"CrossEncoder({self.model_dir}, max_length={self.max_length})"


class BiEncoder:
    """Embeds texts as float32 rows: the card's pooling (mean over the attention mask, or [CLS]),
    L2-normalised unless the card says ``normalize: false``."""

    def __init__(self, core: _core.BiEncoderCore, model_dir: Path, card: ModelCard):
        self._core = core
        self.model_dir = model_dir
        self.card: dict[str, Any] = card.data

    @classmethod
    def load(
        cls,
        model_dir: PathLike | None = None,
        max_length: int | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        token_budget: int | None = None,
    ) -> "BiEncoder":
        """Load a bi-encoder directory or snapshot folder (``None`` or ``"default"``: bge-small-en-v1.5 INT8).

        A batch holds at most ``batch_size`` texts and ``token_budget`` padded tokens (default: the
        engine's, 512)."""
        _check_positive(max_length=max_length, threads=threads, batch_size=batch_size, token_budget=token_budget)
        path, card = _open_model_dir(model_dir, "bi-encoder")
        core = _core.BiEncoderCore(
            str(path),
            max_length or card.max_length,
            threads=threads,
            batch_size=batch_size or 32,
            pooling=card.pooling,
            normalize=card.normalize,
            token_budget=token_budget,
        )
        return cls(core, path, card)

    @property
    def dim(self) -> int:
        return self._core.dim

    @property
    def max_length(self) -> int:
        return self._core.max_length

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (n, dim), pooled as the card says; rows L2-normalised unless ``normalize`` is off."""
        return self._core.embed(_check_texts("texts", texts))

    @property
    def query_instruction(self) -> str:
        """Text put before every query by :meth:`embed_queries` (the card's ``query_instruction``; often empty)."""
        return str(self.card.get("query_instruction") or "")

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Like :meth:`embed`, for search queries: each is prefixed with :attr:`query_instruction`."""
        prefix = self.query_instruction
        return self.embed([prefix + q for q in _check_texts("queries", queries)])

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self._core.encode(_check_texts("texts", texts))

    def __repr__(self) -> str:
        return f"BiEncoder({self.model_dir}, dim={self.dim})"
