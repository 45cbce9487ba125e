"""Python faces of the Rust encoders: ``CrossEncoder`` and ``BiEncoder``."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lrt_rerank import _core
from lrt_rerank.backends import load_with_backend
from lrt_rerank.calibration import Calibration
from lrt_rerank.inputs import check_positive, check_text, check_texts
from lrt_rerank.models.resolve import resolve_model_dir
from lrt_rerank.models.store import CARD, ModelCard, model_sha256, open_model_dir
from lrt_rerank.runtime import ensure_runtime

PathLike = str | os.PathLike[str]


def _from_core(attribute: str, doc: str = "") -> Any:
    """A read-only property answering the Rust core's ``attribute`` (``self._core``)."""
    return property(lambda self: getattr(self._core, attribute), doc=doc or None)


LONG_DOCUMENTS = ("truncate", "windows")
AGGREGATES = ("max", "mean", "sum", "first")


@dataclass(frozen=True)
class ScoreDetails:
    """One passage's score with its window telemetry (see :meth:`CrossEncoder.score_details`).

    ``span`` is the winning window's (start, end) character range in the passage (``passage[start:end]``),
    for highlighting and citations; ``(0, 0)`` for an empty passage.
    """

    score: float
    window: int
    span: tuple[int, int]
    tokens: int
    tokens_scored: int
    windows_scored: int
    windows_dropped: int

    @property
    def tokens_dropped(self) -> int:
        """Passage tokens outside every scored window."""
        return max(0, self.tokens - self.tokens_scored)

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "window": self.window,
            "span": list(self.span),
            "tokens": self.tokens,
            "tokens_scored": self.tokens_scored,
            "tokens_dropped": self.tokens_dropped,
            "windows_scored": self.windows_scored,
            "windows_dropped": self.windows_dropped,
        }


def check_window_options(
    long_documents: object, window_stride: object, max_windows: object, aggregate: object
) -> tuple[str, int | None, int, str]:
    """The window options, checked: ValueError/TypeError naming the argument that is wrong."""
    if long_documents not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents must be one of {', '.join(map(repr, LONG_DOCUMENTS))}, got {long_documents!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(map(repr, AGGREGATES))}, got {aggregate!r}")
    check_positive(window_stride=window_stride, max_windows=max_windows)  # type: ignore[arg-type]
    if max_windows is None:
        raise ValueError("max_windows must be at least 1, got None")
    return str(long_documents), window_stride, int(max_windows), str(aggregate)  # type: ignore[arg-type]


def _open_model_dir(model_dir: PathLike | None, kind: str) -> tuple[Path, ModelCard]:
    """Load the runtime, resolve ``model_dir`` (None/"default": the default of ``kind``) and read its card."""
    ensure_runtime()
    path = resolve_model_dir(model_dir, kind)
    return path, open_model_dir(path, kind)


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
        long_documents: str | None = None,
        window_stride: int | None = None,
        max_windows: int | None = None,
        aggregate: str | None = None,
        max_tokens_per_doc: int | None = None,
        backend: str = "ort",
        precision: str | None = None,
    ) -> "CrossEncoder":
        """Load a cross-encoder directory (``None`` or ``"default"``: the packaged default).

        A batch holds at most ``batch_size`` pairs and ``token_budget`` padded tokens (default: the
        engine's, 512).

        Long passages (see docs/long-documents.md): ``long_documents="truncate"`` (default) cuts each
        pair at ``max_length``; ``"windows"`` scores windows of the passage's tokens (``max_length`` − the
        query's tokens − the template's special tokens each, every ``window_stride`` tokens, default half a
        window, at most ``max_windows``, default 8) and aggregates them with ``aggregate``: ``"max"``
        (default), ``"mean"``, ``"sum"`` or ``"first"``. Options left None take the card's
        ``long_documents`` / ``window_stride`` / ``max_windows`` / ``aggregate`` where it has them.
        ``max_tokens_per_doc`` (Cohere's): read at most that many tokens of each passage.

        ``backend``: ``"ort"`` (default), ``"openvino"`` or ``"auto"`` and ``precision`` (OpenVINO's:
        ``"f32"`` or ``"bf16"``, default bf16 where the CPU has it) pick the runtime; see
        :mod:`lrt_rerank.backends`. ``card["runtime"]`` records what ran and why."""
        check_positive(
            max_length=max_length,
            threads=threads,
            batch_size=batch_size,
            token_budget=token_budget,
            max_tokens_per_doc=max_tokens_per_doc,
        )
        path, card = _open_model_dir(model_dir, "cross-encoder")
        defaults = card.data
        mode, stride, cap, agg = check_window_options(
            long_documents if long_documents is not None else defaults.get("long_documents", "truncate"),
            window_stride if window_stride is not None else defaults.get("window_stride"),
            max_windows if max_windows is not None else defaults.get("max_windows", 8),
            aggregate if aggregate is not None else defaults.get("aggregate", "max"),
        )
        fingerprint = model_sha256(path)
        if card.data.get("prompt") is not None:  # the template's instruction changes every score
            prompt = json.dumps(card.data["prompt"], sort_keys=True).encode()
            fingerprint += f"+prompt:{hashlib.sha256(prompt).hexdigest()[:16]}"
        core = load_with_backend(
            _core.CrossEncoderCore,
            path,
            card.data,
            max_length or card.max_length,
            fingerprint,
            threads=threads,
            batch_size=batch_size or 16,
            cache=cache,
            token_budget=token_budget,
            long_documents=mode,
            window_stride=stride,
            max_windows=cap,
            aggregate=agg,
            max_tokens_per_doc=max_tokens_per_doc,
            backend=backend,
            precision=precision,
        )
        return cls(core, path, card, cache)

    def with_windows(
        self,
        long_documents: str = "truncate",
        window_stride: int | None = None,
        max_windows: int = 8,
        aggregate: str = "max",
        max_tokens_per_doc: int | None = None,
    ) -> "CrossEncoder":
        """This model (the same ONNX sessions, tokenizer and cache: nothing is loaded) under other window
        settings (see :meth:`load`); its :attr:`fingerprint` keys its cached scores apart."""
        mode, stride, cap, agg = check_window_options(long_documents, window_stride, max_windows, aggregate)
        check_positive(max_tokens_per_doc=max_tokens_per_doc)
        core = self._core.with_windows(
            long_documents=mode, window_stride=stride, max_windows=cap, aggregate=agg, max_tokens_per_doc=max_tokens_per_doc
        )
        view = CrossEncoder.__new__(CrossEncoder)
        view.__dict__.update(self.__dict__)
        view._core = core
        return view

    fingerprint = _from_core("fingerprint", "The key of this encoder's cached scores: the sha256 of model.onnx, followed by the window settings under long_documents='windows'.")
    sha256 = _from_core("model_fingerprint", "sha256 of model.onnx.")
    max_tokens_per_doc = _from_core("max_tokens_per_doc", "Most tokens read of each passage (None: all).")

    def window_stats(self, query: str, passages: Sequence[str]) -> list[tuple[int, int, int, int]]:
        """Per passage, without scoring it (tokenization only): (tokens, tokens scored, windows scored,
        windows dropped), as :meth:`score_details` reports them."""
        return self._core.window_stats(check_text("query", query), check_texts("passages", passages))

    long_documents = _from_core("long_documents")
    window_stride = _from_core("window_stride", "Tokens between window starts; None: half the window (window_width(query) // 2).")
    max_windows = _from_core("max_windows")
    aggregate = _from_core("aggregate")
    pair_special_tokens = _from_core("pair_special_tokens", "Special tokens the model's pair template adds (3 for BERT, 4 for XLM-R).")

    def window_width(self, query: str) -> int | None:
        """Passage tokens per window for ``query``; None when the query alone fills ``max_length``."""
        return self._core.window_width(check_text("query", query))

    def score_details(self, query: str, passages: Sequence[str]) -> list[ScoreDetails]:
        """Per passage, in input order: the score (as :meth:`score` gives it), the winning window and its
        character span, the passage's tokens, the tokens scored, the windows scored and dropped.

        Under ``long_documents="truncate"`` each passage has one window, the truncated pair; the windows
        it would have had past the first count as dropped. Not cached."""
        rows = self._core.score_details(check_text("query", query), check_texts("passages", passages))
        return [
            ScoreDetails(float(s), w, (a, b), t, ts, ws, wd) for s, w, a, b, t, ts, ws, wd in rows
        ]

    def encode_windows(self, query: str, passages: Sequence[str]) -> list[list[tuple[list[int], list[int]]]]:
        """Per passage, (token ids, token type ids) of each window scored, as fed to the model."""
        return self._core.encode_windows(check_text("query", query), check_texts("passages", passages))

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.model_dir.name))

    max_length = _from_core("max_length")
    batch_size = _from_core("batch_size")
    batches_run = _from_core("batches_run", "Batches run through the model's sessions since load (the load-time probe counts one).")

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Raw logits (float32), one per passage, in input order."""
        return self._core.score(check_text("query", query), check_texts("passages", passages))

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
        return self._core.encode(check_text("query", query), check_texts("passages", passages))

    def padding_stats(self, query: str, passages: Sequence[str]) -> tuple[int, int, int]:
        """(padded tokens with length buckets, padded tokens padding all to the longest, real tokens).

        Counted over the pairs ``score`` feeds the model: one per passage under truncation, the
        passages' windows under ``long_documents="windows"``.
        """
        return self._core.padding_stats(check_text("query", query), check_texts("passages", passages))

    def __repr__(self) -> str:
        if self.long_documents == "windows":
            return (
                f"CrossEncoder({self.model_dir}, max_length={self.max_length}, long_documents='windows', "
                f"window_stride={self.window_stride}, max_windows={self.max_windows}, aggregate={self.aggregate!r})"
            )
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
        backend: str = "ort",
        precision: str | None = None,
    ) -> "BiEncoder":
        """Load a bi-encoder directory or snapshot folder (``None`` or ``"default"``: bge-small-en-v1.5 INT8).

        A batch holds at most ``batch_size`` texts and ``token_budget`` padded tokens (default: the
        engine's, 512). ``backend`` and ``precision``: as for :meth:`CrossEncoder.load`."""
        check_positive(max_length=max_length, threads=threads, batch_size=batch_size, token_budget=token_budget)
        path, card = _open_model_dir(model_dir, "bi-encoder")
        core = load_with_backend(
            _core.BiEncoderCore,
            path,
            card.data,
            max_length or card.max_length,
            threads=threads,
            batch_size=batch_size or 32,
            pooling=card.pooling,
            normalize=card.normalize,
            token_budget=token_budget,
            backend=backend,
            precision=precision,
        )
        return cls(core, path, card)

    dim = _from_core("dim")
    max_length = _from_core("max_length")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (n, dim), pooled as the card says; rows L2-normalised unless ``normalize`` is off."""
        return self._core.embed(check_texts("texts", texts))

    @property
    def query_instruction(self) -> str:
        """Text put before every query by :meth:`embed_queries` (the card's ``query_instruction``; often empty)."""
        return str(self.card.get("query_instruction") or "")

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Like :meth:`embed`, for search queries: each is prefixed with :attr:`query_instruction`."""
        prefix = self.query_instruction
        return self.embed([prefix + q for q in check_texts("queries", queries)])

    @property
    def document_prefix(self) -> str:
        """Text put before every document by :meth:`embed_documents` (the card's ``document_prefix``, e.g.
        e5's ``passage: ``; absent from most cards: empty)."""
        return str(self.card.get("document_prefix") or "")

    def embed_documents(self, documents: Sequence[str]) -> np.ndarray:
        """Like :meth:`embed`, for indexed documents: each is prefixed with :attr:`document_prefix`."""
        prefix = self.document_prefix
        return self.embed([prefix + d for d in check_texts("documents", documents)])

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self._core.encode(check_texts("texts", texts))

    def __repr__(self) -> str:
        return f"BiEncoder({self.model_dir}, dim={self.dim})"
