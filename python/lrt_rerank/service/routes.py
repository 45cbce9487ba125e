"""The service's routes, as top-level functions: each reaches the engine through the application's state.

``create_app`` (:mod:`lrt_rerank.service.app`) wires them; the request bodies' document limits come
from the settings, so ``create_app`` binds each rerank route to its settings' request model.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lrt_rerank.service.engine import Engine, LongDocumentRequest, ReadStats, unavailable
from lrt_rerank.service.schemas import (
    CohereRerankRequestBase,
    CohereRerankResponse,
    CohereResult,
    CohereResultDocument,
    ModelCalibration,
    ModelList,
    ModelObject,
    RerankMeta,
    TeiRerankRequestBase,
    TeiResult,
)

bearer = HTTPBearer(auto_error=False, description="The key given to `lrt-rerank serve --api-key-file` (or $LRT_RERANK_API_KEY).")


def engine_of(request: Request) -> Engine:
    """The engine of the application serving ``request``."""
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(engine_of)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model in a worker thread after start-up; close the engine and metrics on shutdown."""
    engine: Engine = app.state.engine
    thread = threading.Thread(target=engine.load, name="lrt-rerank-model-load", daemon=True)
    thread.start()
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(thread.join)
        engine.close()
        engine.metrics.close()


def authorize(engine: EngineDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """A 401 unless the request carries the service's API key as a bearer token."""
    key = engine.settings.api_key
    assert key is not None
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), key.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """A 422 listing each error's location, message and type (the default handler echoes each bad input
    back; a 1,000-document list is not worth echoing)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def _long_document_request(body: Any, **choices: Any) -> LongDocumentRequest:
    """The window options a request ``body`` chose (long_documents, window_stride, max_windows, aggregate), and ``choices``."""
    return LongDocumentRequest(
        long_documents=body.long_documents,
        window_stride=body.window_stride,
        max_windows=body.max_windows,
        aggregate=body.aggregate,
        **choices,
    )


def _meta(stats: ReadStats | None) -> RerankMeta | None:
    return None if stats is None else RerankMeta(**stats.meta())


async def cohere_rerank(body: CohereRerankRequestBase, response: Response, engine: EngineDep) -> CohereRerankResponse:
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    request = _long_document_request(body, max_tokens_per_doc=body.max_tokens_per_doc)
    ranked, stats = await engine.rank_read(
        body.query, texts, body.top_n, body.raw_scores, response, body.first_stage_order, request, body.first_stage_scores
    )
    return CohereRerankResponse(
        id=str(uuid.uuid4()),
        meta=_meta(stats),
        results=[
            CohereResult(
                index=i,
                relevance_score=s,
                document=CohereResultDocument(text=texts[i]) if body.return_documents else None,
            )
            for i, s in ranked
        ],
    )


async def tei_rerank(body: TeiRerankRequestBase, response: Response, engine: EngineDep) -> list[TeiResult]:
    request = _long_document_request(body, reject_unread=body.truncate is False)
    ranked, _ = await engine.rank_read(
        body.query, body.texts, None, body.raw_scores, response, body.first_stage_order, request, body.first_stage_scores
    )
    return [TeiResult(index=i, score=s, text=body.texts[i] if body.return_text else None) for i, s in ranked]


async def list_models(engine: EngineDep) -> ModelList:
    encoder = engine.encoder
    if encoder is None:
        raise unavailable("model not loaded yet")
    calibration = getattr(encoder, "calibration", None)  # a late-interaction model's scores are raw MaxSim
    return ModelList(
        data=[
            ModelObject(
                id=encoder.name,
                kind=str(encoder.card["kind"]),
                sha256=encoder.sha256,
                card=encoder.card,
                calibration=ModelCalibration(**calibration.to_json()) if calibration is not None else None,
            )
        ]
    )


async def health(engine: EngineDep) -> JSONResponse:
    if engine.core is not None:
        return JSONResponse({"status": "ok"})
    if engine.load_error is not None:
        return JSONResponse({"status": "failed", "error": engine.load_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


async def prometheus_metrics(engine: EngineDep) -> Response:
    body, content_type = engine.metrics.exposition()
    return Response(content=body, media_type=content_type)
