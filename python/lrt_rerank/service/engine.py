"""The service's engine: the loaded model, its cache tiers, and scoring through the re-ranking core.

The cache tiers (in-process and Redis) hold raw logits; the core calibrates after the lookup, so a
cached score is calibrated exactly like a fresh one. A request whose scoring fails (an ONNX Runtime
error, a model output that does not fit) is answered 503 with a ``Retry-After`` header and counted
in ``lrt_rerank_scoring_errors_total``; the process keeps serving.

A tuned fusion (``serve --fusion F``, handed to the workers in :data:`FUSION_ENV`) orders a request
that carries its documents' first-stage scores (:func:`request_signals`) through the core, as the
pipeline does; requests without them are answered as before.

A late-interaction model (``serve --model`` a ColBERT directory or snapshot) is one more re-ranker of the
core: :func:`load_served_model` is the one loader of both kinds. Its documents' token matrices go
through a :class:`~lrt_rerank.late.cache.DocumentCache` (in-process LRU bounded in MiB, plus the Redis
tier when the service has Redis), so a document is encoded on first sight only; its scores are raw
MaxSim (no calibration) and documents are truncated at the card's ``document_length``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
from fastapi import HTTPException, Response

from lrt_rerank import CrossEncoder, ModelError, ScoreCache
from lrt_rerank.first_stage.base import RRF_K, Candidate
from lrt_rerank.late import ColBERT
from lrt_rerank.late.cache import DocumentCache, RedisDocumentTier
from lrt_rerank.models.resolve import is_late_interaction
from lrt_rerank.models.resolve import resolve_model_dir as resolve_source
from lrt_rerank.rerank import RerankCore, RerankStatus, SearchResult
from lrt_rerank.rerank.fusion import Fusion, FusionFormatError, Signals, load_fusion, parse_fusion
from lrt_rerank.service.schemas import FirstStageScores
from lrt_rerank.rerank.redis_tier import RedisScoreTier, RedisSettings
from lrt_rerank.service.metrics import ServiceMetrics
from lrt_rerank.service.settings import ServiceSettings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"""Seconds a client is asked to wait (``Retry-After``) after a 503."""

ServedModel = CrossEncoder | ColBERT
EncoderLoader = Callable[[], ServedModel]

MAX_VARIANTS = 16
"""Window settings kept ready at once (views over the same sessions; the least recently used goes)."""


@dataclass(frozen=True)
class LongDocumentRequest:
    """A request's choices of how long documents are read; None: the served encoder's setting."""

    long_documents: str | None = None
    window_stride: int | None = None
    max_windows: int | None = None
    aggregate: str | None = None
    max_tokens_per_doc: int | None = None
    reject_unread: bool = False
    """TEI's ``truncate: false``: a 413 when a document has tokens no scored window reads."""

    def is_default(self) -> bool:
        return all(
            v is None for v in (self.long_documents, self.window_stride, self.max_windows, self.aggregate, self.max_tokens_per_doc)
        )


@dataclass(frozen=True)
class ReadStats:
    """What was read of one request's documents (the response's ``meta``)."""

    long_documents: str
    documents_truncated: int
    documents_windowed: int
    tokens_dropped: int
    windows_scored: int
    windows_dropped: int
    windows_per_document: tuple[int, ...]
    unread: tuple[int, ...]
    """Indices of the documents with tokens no scored window read."""

    @classmethod
    def of(cls, mode: str, stats: list[tuple[int, int, int, int]]) -> "ReadStats":
        dropped = [max(0, t - ts) for t, ts, _, _ in stats]
        return cls(
            long_documents=mode,
            documents_truncated=sum(1 for d in dropped if d > 0),
            documents_windowed=sum(1 for _, _, w, _ in stats if w > 1),
            tokens_dropped=sum(dropped),
            windows_scored=sum(w for _, _, w, _ in stats),
            windows_dropped=sum(wd for _, _, _, wd in stats),
            windows_per_document=tuple(w for _, _, w, _ in stats),
            unread=tuple(i for i, d in enumerate(dropped) if d > 0),
        )

    def meta(self) -> dict[str, int | str]:
        return {
            "long_documents": self.long_documents,
            "documents_truncated": self.documents_truncated,
            "documents_windowed": self.documents_windowed,
            "tokens_dropped": self.tokens_dropped,
            "windows_scored": self.windows_scored,
            "windows_dropped": self.windows_dropped,
        }


def too_long(unread: tuple[int, ...]) -> HTTPException:
    shown = ", ".join(str(i) for i in unread[:10]) + (", ..." if len(unread) > 10 else "")
    return HTTPException(
        status_code=413,
        detail=f"truncate is false but {len(unread)} text(s) have tokens that would not be read (indices {shown}): "
        "send truncate: true, or long_documents: windows with enough max_windows",
    )


def unavailable(detail: str) -> HTTPException:
    """A 503 with a ``Retry-After`` header; FastAPI answers it as ``{"detail": ...}``."""
    return HTTPException(status_code=503, detail=detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def resolve_model_dir(model: str) -> Path:
    """The cross-encoder source for ``--model``: "default" (built on first use), a model directory or a
    Hugging Face snapshot folder. Only resolved here: what the folder holds is ``CrossEncoder.load``'s to
    judge (it reads model directories and imports snapshots), so a folder without card.json is not
    rejected here."""
    path = resolve_source(model, "cross-encoder")
    if not path.is_dir():
        raise ModelError(
            f"{path}: not a directory (--model must be a model directory, a Hugging Face snapshot or 'default')"
        )
    return path


LONG_DOCUMENTS_ENV = "LRT_RERANK_LONG_DOCUMENTS"
"""JSON of the served encoder's window settings (``serve --long-documents`` etc.), beside the settings."""


def long_document_env(args: object) -> str:
    """The JSON of ``LONG_DOCUMENTS_ENV`` for parsed ``serve`` arguments (unset flags left out)."""
    names = ("long_documents", "window_stride", "max_windows", "aggregate")
    return json.dumps({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


FUSION_ENV = "LRT_RERANK_FUSION"
"""JSON of the served tuned fusion (``serve --fusion F``): ``{"source": path, "fusion": its record}``."""


def fusion_env(path: str | Path) -> str:
    """The JSON of ``FUSION_ENV`` for a ``fusion.json`` (read and validated now: a bad file fails ``serve``)."""
    fusion = load_fusion(path)
    if fusion.further_signals:
        raise FusionFormatError(
            f"{path}: weighs the dense signals {', '.join(fusion.further_signals)}; first_stage_scores carry BM25 and "
            "one dense signal, so the service cannot apply it (apply it with the embedded first stage)"
        )
    return json.dumps({"source": fusion.source, "fusion": fusion.to_json()})


def served_fusion() -> Fusion | None:
    """The fusion ``serve --fusion`` handed over in ``FUSION_ENV``, if any."""
    raw = os.environ.get(FUSION_ENV)
    if not raw:
        return None
    record = json.loads(raw)
    return parse_fusion(record["fusion"], str(record["source"]))


def request_signals(scores: FirstStageScores | None, documents: int, fusion: Fusion | None) -> Signals | None:
    """The :class:`Signals` of a request's ``first_stage_scores`` (None without them); a 422 naming the
    field when the service has no fusion or a list does not fit the documents."""
    if scores is None:
        return None
    if fusion is None:
        raise HTTPException(
            status_code=422,
            detail="first_stage_scores: this service applies no fusion; start it with `lrt-rerank serve --fusion fusion.json`",
        )
    lists = {"bm25": scores.bm25, "dense": scores.dense, "bm25_rank": scores.bm25_rank, "dense_rank": scores.dense_rank}
    for name, values in lists.items():
        if values is not None and len(values) != documents:
            raise HTTPException(
                status_code=422, detail=f"first_stage_scores.{name}: {len(values)} values for {documents} documents"
            )
    if (fusion.rrf_k != RRF_K or fusion.weighted_rrf) and (scores.bm25_rank is None or scores.dense_rank is None):
        raise HTTPException(
            status_code=422,
            detail=f"first_stage_scores.bm25_rank and .dense_rank: the served fusion's prior is {fusion.describe()}, "
            "which needs each document's BM25 and dense ranks",
        )
    for name, pool in (("bm25_range", scores.bm25_range), ("dense_range", scores.dense_range)):
        if pool is not None and pool[0] > pool[1]:
            raise HTTPException(status_code=422, detail=f"first_stage_scores.{name}: lowest {pool[0]} above highest {pool[1]}")
    zeros = [0] * documents
    return Signals(
        np.asarray(scores.bm25, dtype=np.float64),
        np.asarray(scores.dense, dtype=np.float64),
        np.asarray(scores.bm25_rank or zeros, dtype=np.int64),
        np.asarray(scores.dense_rank or zeros, dtype=np.int64),
        scores.bm25_range,
        scores.dense_range,
    )


def load_served_model(model: str, threads: int | None, windows: dict[str, object] | None = None) -> ServedModel:
    """The model ``--model`` names: a ColBERT for a late-interaction directory or snapshot, else a
    cross-encoder read with ``windows`` (the served long-document settings)."""
    path = resolve_model_dir(model)
    if is_late_interaction(path):
        if windows:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in windows)
            raise ModelError(
                f"{path}: a late-interaction model truncates documents at its card's document_length; "
                f"{flags} apply to cross-encoders only"
            )
        return ColBERT.load(path, threads=threads)
    return CrossEncoder.load(str(path), threads=threads, **(windows or {}))  # type: ignore[arg-type]


def default_loader(settings: ServiceSettings) -> EncoderLoader:
    def load() -> ServedModel:
        windows = json.loads(os.environ.get(LONG_DOCUMENTS_ENV) or "{}")
        return load_served_model(settings.model, settings.threads, windows)

    return load


class Engine:
    """The loaded model, its caches and the scoring entry point of one process."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics, loader: EncoderLoader) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache = ScoreCache(capacity=settings.cache_capacity)
        self._loader = loader
        self.core: RerankCore | None = None
        self.load_error: str | None = None
        self.limiter = anyio.CapacityLimiter(settings.max_concurrent_scoring)
        self._redis: RedisScoreTier | None = None
        self.encoder: ServedModel | None = None
        self.document_cache: DocumentCache | None = None
        self._document_tier: RedisDocumentTier | None = None
        self._scoring_lock = threading.Lock()
        self._scoring = 0
        self._scoring_peak = 0
        self._variants: OrderedDict[tuple, RerankCore] = OrderedDict()
        self._variants_lock = threading.Lock()
        self.fusion: Fusion | None = None
        metrics.scoring_slots.set(settings.max_concurrent_scoring)

    def load(self) -> None:
        """Load the model (blocking; runs in a worker thread)."""
        try:
            encoder = self._loader()
            if self.settings.redis_url:
                self._redis = RedisScoreTier(
                    RedisSettings(
                        url=self.settings.redis_url,
                        ttl_s=self.settings.redis_ttl_s,
                        socket_timeout_s=self.settings.redis_timeout_s,
                        backoff_initial_s=self.settings.redis_backoff_s,
                    )
                )
            if isinstance(encoder, ColBERT):
                self._attach_document_cache(encoder)
            self.fusion = served_fusion()
            core = RerankCore(encoder, depth=self.settings.max_documents, cache=self.cache, shared=self._redis, fusion=self.fusion)
        except Exception as err:  # reported by /health and the log; the process keeps answering 503
            self.load_error = f"{type(err).__name__}: {err}"
            log.exception("loading the model failed")
            return
        self.metrics.set_model(encoder.name, encoder.sha256, encoder.max_length)
        self.encoder = encoder
        self.core = core
        log.info("model %s (sha256 %s) loaded from %s", encoder.name, encoder.sha256, encoder.model_dir)

    def _attach_document_cache(self, model: ColBERT) -> None:
        """The late-interaction model's document-embedding cache: in-process LRU, Redis tier when configured."""
        s = self.settings
        if s.redis_url:
            self._document_tier = RedisDocumentTier(
                RedisSettings(url=s.redis_url, ttl_s=s.redis_ttl_s, socket_timeout_s=s.redis_timeout_s, backoff_initial_s=s.redis_backoff_s)
            )
        self.document_cache = DocumentCache(s.document_cache_mib, shared=self._document_tier)
        model.document_cache = self.document_cache

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._document_tier is not None:
            self._document_tier.close()

    def _variant(self, request: LongDocumentRequest) -> RerankCore:
        """The core that reads long documents as ``request`` asks (the served one when it asks nothing)."""
        assert self.core is not None and self.encoder is not None
        if isinstance(self.encoder, ColBERT):
            if not request.is_default() or request.reject_unread:
                raise HTTPException(
                    status_code=422,
                    detail="long_documents, window settings and truncate: false apply to cross-encoders: this service's "
                    f"late-interaction model truncates documents at {self.encoder.max_length} tokens",
                )
            return self.core
        if request.is_default():
            return self.core
        base = self.encoder
        key = (
            request.long_documents or base.long_documents,
            request.window_stride if request.window_stride is not None else base.window_stride,
            request.max_windows or base.max_windows,
            request.aggregate or base.aggregate,
            request.max_tokens_per_doc if request.max_tokens_per_doc is not None else base.max_tokens_per_doc,
        )
        if key == (base.long_documents, base.window_stride, base.max_windows, base.aggregate, base.max_tokens_per_doc):
            return self.core
        with self._variants_lock:
            core = self._variants.get(key)
            if core is not None:
                self._variants.move_to_end(key)
                return core
        view = base.with_windows(*key)
        core = RerankCore(view, depth=self.settings.max_documents, cache=self.cache, shared=self._redis, fusion=self.fusion)
        with self._variants_lock:
            self._variants[key] = core
            while len(self._variants) > MAX_VARIANTS:
                self._variants.popitem(last=False)
        return core

    def _rerank(
        self,
        query: str,
        passages: list[str],
        top_n: int | None,
        first_stage_order: bool,
        queued_at: float,
        request: LongDocumentRequest | None = None,
        signals: Signals | None = None,
    ) -> tuple[SearchResult, float, ReadStats | None]:
        """The core's result, the seconds waited for a scoring slot and what was read of the documents
        (runs holding a slot)."""
        assert self.core is not None
        request = request or LongDocumentRequest()
        waited = time.perf_counter() - queued_at
        core = self._variant(request)
        reader = getattr(core, "reranker", None)
        stats: ReadStats | None = None
        if isinstance(reader, CrossEncoder):
            stats = ReadStats.of(reader.long_documents, reader.window_stats(query, passages))
            if request.reject_unread and stats.unread:
                raise too_long(stats.unread)
        with self._scoring_lock:
            self._scoring += 1
            self._scoring_peak = max(self._scoring_peak, self._scoring)
            self.metrics.scoring_in_progress_peak.set(self._scoring_peak)
        self.metrics.scoring_in_progress.inc()
        candidates = [Candidate(str(i), 0.0, i + 1) for i in range(len(passages))]
        try:
            interpolate = first_stage_order or signals is not None
            result = core.rerank(query, candidates, passages, top_n=top_n, interpolate=interpolate, signals=signals)
        finally:
            self.metrics.scoring_in_progress.dec()
            with self._scoring_lock:
                self._scoring -= 1
        redis_stats = self._redis.stats() if self._redis is not None else None
        c = self.cache
        local = {"hits": c.hits, "misses": c.misses, "evictions": c.evictions, "len": len(c)}
        self.metrics.mirror_cache(local, redis_stats)
        if self.document_cache is not None:
            self.metrics.mirror_document_cache(self.document_cache.stats())
        return result, waited, stats

    async def rank(
        self, query: str, passages: list[str], top_n: int | None, raw_scores: bool, response: Response, first_stage_order: bool = False
    ) -> list[tuple[int, float]]:
        """:meth:`rank_read` without what was read."""
        ranked, _ = await self.rank_read(query, passages, top_n, raw_scores, response, first_stage_order)
        return ranked

    async def rank_read(
        self,
        query: str,
        passages: list[str],
        top_n: int | None,
        raw_scores: bool,
        response: Response,
        first_stage_order: bool = False,
        long_documents: LongDocumentRequest | None = None,
        first_stage_scores: FirstStageScores | None = None,
    ) -> tuple[list[tuple[int, float]], ReadStats | None]:
        """(index, score) pairs, best first (ties by index), at most ``top_n`` of them.

        The order follows the logit, or with ``first_stage_order`` (the passages are in first-stage
        order) the card's interpolation of the logit with that order (:func:`lrt_rerank.interpolation.combine`).
        The score is the calibrated probability of the logit (:attr:`CrossEncoder.calibration`), also
        under ``first_stage_order``; with ``raw_scores`` it is the value that sets the order.
        ``long_documents`` chooses how long documents are read for this request; what was read comes
        back with the ranking (None for an empty list) and is counted in the metrics.
        ``first_stage_scores`` (the passages then in first-stage order) orders by the served fusion; the raw
        score is then the fused value.
        """
        if self.core is None:
            raise unavailable("model not loaded yet")
        signals = request_signals(first_stage_scores, len(passages), self.fusion)
        self.metrics.batch_size.observe(len(passages))
        if not passages:
            return [], None
        result, queued, stats = await anyio.to_thread.run_sync(
            self._rerank, query, passages, top_n, first_stage_order, time.perf_counter(), long_documents, signals,
            limiter=self.limiter,
        )
        if stats is not None:
            self.metrics.count_reads(stats.tokens_dropped, stats.documents_truncated, stats.windows_per_document)
        if result.status is RerankStatus.FAILED:  # the request gets a 503 and the process goes on serving
            error_type = result.error_type or "Exception"
            self.metrics.scoring_errors.labels(error=error_type).inc()
            log.error("scoring %d documents failed: %s", len(passages), result.error)
            raise unavailable(f"scoring failed ({error_type}); retry later")
        scoring = result.rerank_ms / 1000.0
        self.metrics.score_seconds.observe(scoring)
        response.headers["Server-Timing"] = f"queue;dur={queued * 1000:.3f}, score;dur={result.rerank_ms:.3f}"
        # At most 9 significant digits: enough to round-trip a float32 score exactly, and short
        # enough that OpenSearch ml-commons' JSON parser reads a Double, not a BigDecimal (a
        # number over 18 characters breaks its Cohere rerank post-process function).
        ranked = [
            (hit.first_stage_rank - 1, float(f"{(hit.score if raw_scores or hit.relevance is None else hit.relevance):.9g}"))
            for hit in result.hits
        ]
        return ranked, stats
