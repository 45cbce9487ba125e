"""Stateless HTTP rerank service (FastAPI).

``create_app(settings)`` builds the application; ``lrt-rerank serve`` runs it under uvicorn.
The model loads in a worker thread after start-up: ``GET /health`` answers 503 until it is
ready and 200 after. Scoring runs in worker threads too (the core releases the GIL), never on
the event loop.

The cache tiers (in-process and Redis) hold raw logits; the model card's calibration turns them
into the default scores after the lookup, so a cached score is calibrated exactly like a fresh one.

A request whose scoring fails (an ONNX Runtime error, a model output that does not fit) is answered
503 with a JSON body and a ``Retry-After`` header and counted in ``lrt_rerank_scoring_errors_total``;
the process keeps serving.
"""

import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lrt_rerank import CrossEncoder, ModelError, ScoreCache
from lrt_rerank.models import store
from lrt_rerank.interpolation import combine, resolve_weight
from lrt_rerank.service.cache import RedisScoreTier, RedisSettings, TwoTierScorer
from lrt_rerank.service.limits import BodySizeLimitMiddleware
from lrt_rerank.service.metrics import MetricsMiddleware, ServiceMetrics
from lrt_rerank.service.schemas import (
    SCORES_DOC,
    CohereRerankResponse,
    CohereResult,
    CohereResultDocument,
    ErrorResponse,
    HealthResponse,
    ModelCalibration,
    ModelList,
    ModelObject,
    TeiResult,
    request_models,
)

log = logging.getLogger(__name__)

SETTINGS_ENV = "LRT_RERANK_SERVICE_SETTINGS"
RETRY_AFTER_S = 1
"""Seconds a client is asked to wait (``Retry-After``) after a 503."""


def unavailable(detail: str) -> HTTPException:
    """A 503 with a ``Retry-After`` header; FastAPI answers it as ``{"detail": ...}``."""
    return HTTPException(status_code=503, detail=detail, headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass(frozen=True)
class ServiceSettings:
    """Everything that configures one service process (JSON-serialisable, see ``to_env``)."""

    model: str = "default"
    """A cross-encoder model directory, or "default" for the default cross-encoder."""
    max_documents: int = 1000
    max_body_bytes: int = 1 << 20
    api_key: str | None = None
    redis_url: str | None = None
    redis_ttl_s: int = 86_400
    redis_timeout_s: float = 0.1
    redis_backoff_s: float = 1.0
    cache_capacity: int = 100_000
    threads: int | None = None
    """Intra-op threads of the model (None: the core's default)."""
    max_concurrent_scoring: int = 2
    """Requests scored at the same time per process; the rest wait their turn."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServiceSettings":
        raw = os.environ.get(SETTINGS_ENV)
        if raw is None:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `lrt-rerank serve`")
        return cls(**json.loads(raw))


EncoderLoader = Callable[[], CrossEncoder]


def resolve_model_dir(model: str) -> Path:
    """The cross-encoder source for ``--model``: "default" (built on first use), a model directory or a
    Hugging Face snapshot folder. Only resolved here: what the folder holds is ``CrossEncoder.load``'s to
    judge (it reads model directories and imports snapshots), so a folder without card.json is not
    rejected here."""
    path = store.resolve_model_dir(model, "cross-encoder")
    if not path.is_dir():
        raise ModelError(
            f"{path}: not a directory (--model must be a model directory, a Hugging Face snapshot or 'default')"
        )
    return path


def default_loader(settings: ServiceSettings) -> EncoderLoader:
    def load() -> CrossEncoder:
        return CrossEncoder.load(str(resolve_model_dir(settings.model)), threads=settings.threads)

    return load


class Engine:
    """The loaded model, its caches and the scoring entry point of one process."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics, loader: EncoderLoader) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache = ScoreCache(capacity=settings.cache_capacity)
        self._loader = loader
        self.scorer: TwoTierScorer | None = None
        self.load_error: str | None = None
        self.limiter = anyio.CapacityLimiter(settings.max_concurrent_scoring)
        self._redis: RedisScoreTier | None = None
        self.interpolation = 0.0
        self.encoder: CrossEncoder | None = None
        self._scoring_lock = threading.Lock()
        self._scoring = 0
        self._scoring_peak = 0
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
        except Exception as err:  # reported by /health and the log; the process keeps answering 503
            self.load_error = f"{type(err).__name__}: {err}"
            log.exception("loading the model failed")
            return
        name = encoder.name
        self.metrics.set_model(name, encoder.fingerprint, encoder.max_length)
        self.interpolation = resolve_weight(encoder, None)
        self.encoder = encoder
        self.scorer = TwoTierScorer(encoder, self.cache, self._redis)
        log.info("model %s (sha256 %s) loaded from %s", name, encoder.fingerprint, encoder.model_dir)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def _score(self, query: str, passages: list[str], queued_at: float) -> tuple[np.ndarray, float, float]:
        """Logits, seconds waited for a scoring slot, seconds spent scoring (runs holding a slot)."""
        assert self.scorer is not None
        start = time.perf_counter()
        with self._scoring_lock:
            self._scoring += 1
            self._scoring_peak = max(self._scoring_peak, self._scoring)
            self.metrics.scoring_in_progress_peak.set(self._scoring_peak)
        self.metrics.scoring_in_progress.inc()
        try:
            scores = self.scorer.score(query, passages)
        finally:
            self.metrics.scoring_in_progress.dec()
            with self._scoring_lock:
                self._scoring -= 1
        done = time.perf_counter()
        redis_stats = self._redis.stats() if self._redis is not None else None
        c = self.cache
        local = {"hits": c.hits, "misses": c.misses, "evictions": c.evictions, "len": len(c)}
        self.metrics.mirror_cache(local, redis_stats)
        return scores, start - queued_at, done - start

    async def rank(
        self, query: str, passages: list[str], top_n: int | None, raw_scores: bool, response: Response, first_stage_order: bool = False
    ) -> list[tuple[int, float]]:
        """(index, score) pairs, best first (ties by index), at most ``top_n`` of them.

        The order follows the logit, or with ``first_stage_order`` (the passages are in first-stage
        order) the card's interpolation of the logit with that order (:func:`lrt_rerank.interpolation.combine`).
        The score is the calibrated probability of the logit (:attr:`CrossEncoder.calibration`), also
        under ``first_stage_order``; with ``raw_scores`` it is the value that sets the order.
        """
        if self.scorer is None or self.encoder is None:
            raise unavailable("model not loaded yet")
        self.metrics.batch_size.observe(len(passages))
        if not passages:
            return []
        try:
            logits, queued, scoring = await anyio.to_thread.run_sync(
                self._score, query, passages, time.perf_counter(), limiter=self.limiter
            )
        except Exception as err:  # the request gets a 503 and the process goes on serving
            self.metrics.scoring_errors.labels(error=type(err).__name__).inc()
            log.error("scoring %d documents failed: %s: %s", len(passages), type(err).__name__, err)
            raise unavailable(f"scoring failed ({type(err).__name__}); retry later") from err
        self.metrics.score_seconds.observe(scoring)
        response.headers["Server-Timing"] = f"queue;dur={queued * 1000:.3f}, score;dur={scoring * 1000:.3f}"
        ranking = logits
        if first_stage_order and self.interpolation > 0:
            ranking = combine(logits, self.interpolation).astype(np.float32)  # float32 like the logits: exact on the wire
        order = np.argsort(-ranking, kind="stable")[:top_n]
        # The logits come from the cache tiers or the model, raw either way: calibrate here, after the cache.
        values = ranking[order].astype(np.float64) if raw_scores else self.encoder.calibration.apply(logits[order])
        # At most 9 significant digits: enough to round-trip a float32 score exactly, and short
        # enough that OpenSearch ml-commons' JSON parser reads a Double, not a BigDecimal (a
        # number over 18 characters breaks its Cohere rerank post-process function).
        return [(int(i), float(f"{v:.9g}")) for i, v in zip(order, values, strict=True)]


DESCRIPTION = f"""
Re-scores candidate passages for a query with a cross-encoder and returns them best first.

* `POST /v1/rerank`: Cohere rerank API (v1) request and response shape.
* `POST /rerank`: Hugging Face text-embeddings-inference rerank shape.
* `GET /v1/models`: the served model, its card and the score calibration in use.

{SCORES_DOC}

Requests carry at most the configured number of documents (422 beyond it) and bodies of at
most the configured size (413 beyond it). Strings must be valid Unicode (an unpaired surrogate escape
is a 422). While the model loads, or when scoring a request fails, the answer is 503 with a JSON
`detail` and a `Retry-After` header. When the service runs with an API key, the rerank
routes and `/v1/models` need `Authorization: Bearer <key>`; `/health`, `/metrics` and the schema stay open.
"""


def create_app(settings: ServiceSettings, loader: EncoderLoader | None = None) -> FastAPI:
    """The rerank application. ``loader`` returns the CrossEncoder (default: load ``settings.model``);
    it runs in a worker thread after start-up. The application owns the process's ScoreCache."""
    metrics = ServiceMetrics()
    engine = Engine(settings, metrics, loader or default_loader(settings))
    schemas = request_models(settings.max_documents)
    bearer = HTTPBearer(auto_error=False, description="The key given to `lrt-rerank serve --api-key`.")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=engine.load, name="lrt-rerank-model-load", daemon=True)
        thread.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(thread.join)
            engine.close()
            metrics.close()

    app = FastAPI(title="lrt-rerank", version=_version(), description=DESCRIPTION, lifespan=lifespan)

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        assert settings.api_key is not None
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), settings.api_key.encode()
        ):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The default handler echoes each bad input back; a 1,000-document list is not worth echoing.
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    cohere_request = schemas.cohere
    tei_request = schemas.tei
    # Only a service started with an API key requires (and documents) bearer auth.
    rerank_dependencies = [Depends(authorize)] if settings.api_key is not None else []
    rerank_responses: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorResponse, "description": f"Request body over {settings.max_body_bytes} bytes."},
        503: {
            "model": ErrorResponse,
            "description": "The model is not loaded yet, or scoring failed; `Retry-After` says when to retry.",
        },
    }
    if settings.api_key is not None:
        rerank_responses[401] = {"model": ErrorResponse, "description": "Missing or wrong API key."}

    @app.post(
        "/v1/rerank",
        response_model=CohereRerankResponse,
        response_model_exclude_none=True,
        dependencies=rerank_dependencies,
        responses=rerank_responses,
        summary="Rerank documents (Cohere-compatible)",
    )
    async def cohere_rerank(body: cohere_request, response: Response) -> CohereRerankResponse:  # type: ignore[valid-type]
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        ranked = await engine.rank(body.query, texts, body.top_n, body.raw_scores, response, body.first_stage_order)
        return CohereRerankResponse(
            id=str(uuid.uuid4()),
            results=[
                CohereResult(
                    index=i,
                    relevance_score=s,
                    document=CohereResultDocument(text=texts[i]) if body.return_documents else None,
                )
                for i, s in ranked
            ],
        )

    @app.post(
        "/rerank",
        response_model=list[TeiResult],
        response_model_exclude_none=True,
        dependencies=rerank_dependencies,
        responses=rerank_responses,
        summary="Rerank texts (text-embeddings-inference-compatible)",
    )
    async def tei_rerank(body: tei_request, response: Response) -> list[TeiResult]:  # type: ignore[valid-type]
        ranked = await engine.rank(body.query, body.texts, None, body.raw_scores, response, body.first_stage_order)
        return [TeiResult(index=i, score=s, text=body.texts[i] if body.return_text else None) for i, s in ranked]

    @app.get(
        "/v1/models",
        response_model=ModelList,
        dependencies=rerank_dependencies,
        responses={k: v for k, v in rerank_responses.items() if k != 413},
        summary="The served model: name, kind, card and score calibration (OpenAI/Cohere-like list)",
    )
    async def list_models() -> ModelList:
        encoder = engine.encoder
        if encoder is None:
            raise unavailable("model not loaded yet")
        return ModelList(
            data=[
                ModelObject(
                    id=encoder.name,
                    kind=str(encoder.card["kind"]),
                    sha256=encoder.fingerprint,
                    card=encoder.card,
                    calibration=ModelCalibration(**encoder.calibration.to_json()),
                )
            ]
        )

    @app.get(
        "/health",
        response_model=HealthResponse,
        response_model_exclude_none=True,
        responses={503: {"model": HealthResponse, "description": "The model is loading, or loading it failed."}},
        summary="Readiness: 200 once the model is loaded, 503 before (or if loading failed)",
    )
    async def health() -> JSONResponse:
        if engine.scorer is not None:
            return JSONResponse({"status": "ok"})
        if engine.load_error is not None:
            return JSONResponse({"status": "failed", "error": engine.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}},
        summary="Prometheus metrics",
    )
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(content=body, media_type=content_type)

    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=frozenset(r.path for r in app.routes))
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory used by ``lrt-rerank serve`` (settings come from the environment)."""
    return create_app(ServiceSettings.from_env())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrt-rerank")
    except PackageNotFoundError:
        return "0+unknown"
