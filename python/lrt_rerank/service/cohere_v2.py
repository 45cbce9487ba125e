"""Cohere's rerank API v2 (``POST /v2/rerank``): its request body, model-name check and error shape.

The request and response follow the ``cohere`` SDK's v2 types (``ClientV2.rerank``: ``model``, ``query``,
``documents``, ``top_n``, ``max_tokens_per_doc``, ``priority``; ``V2RerankResponse``: ``id``, ``results``
of ``index`` and ``relevance_score``, ``meta``). Scoring goes through v1's flow
(:func:`lrt_rerank.service.routes.cohere_rerank`), so auth, limits, metrics, caches and fail-open are the
same. Every HTTP error on v2 is a Cohere ``{"id", "message"}`` body (the body-size limit's 413 carries
``message`` too), with a status the SDK maps to a typed error: 400 (not JSON), 401, 404 (another model
name), 422, 503 (loading, scoring failed; with ``Retry-After``), and 429 should a limit ever answer it.
"""

from __future__ import annotations

import uuid

from fastapi import HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrt_rerank.service.engine import unavailable
from lrt_rerank.service.routes import EngineDep, cohere_rerank, validation_error
from lrt_rerank.service.schemas import CohereRerankRequestBase, CohereRerankResponse

PATH = "/v2/rerank"

MODEL_DOC = (
    "The served model's id (`GET /v1/models`). Another name is a 404 unless the service runs with "
    "`serve --any-model-name`."
)


class CohereV2Error(BaseModel):
    id: str = Field(description="A unique id for this error.")
    message: str = Field(description="What went wrong.")


def request_model(v1_model: type[CohereRerankRequestBase]) -> type[CohereRerankRequestBase]:
    """v1's body (its ``documents`` limited as the settings say, its extensions) with v2's required
    ``model`` and accepted ``priority``."""

    class CohereV2RerankRequest(v1_model):  # type: ignore[valid-type, misc]
        model: str = Field(description=MODEL_DOC)  # type: ignore[assignment]
        priority: int | None = Field(default=None, description="Accepted for compatibility and ignored.")

    return CohereV2RerankRequest


async def cohere_v2_rerank(body: CohereRerankRequestBase, response: Response, engine: EngineDep) -> CohereRerankResponse:
    encoder = engine.encoder
    if encoder is None:
        raise unavailable("model not loaded yet")
    if not engine.settings.any_model_name and body.model != encoder.name:
        raise HTTPException(
            status_code=404,
            detail=f"model {body.model!r} not found: this service serves {encoder.name!r} "
            "(GET /v1/models; start it with `serve --any-model-name` to accept any name)",
        )
    return await cohere_rerank(body, response, engine)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"id": str(uuid.uuid4()), "message": message}, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Cohere's error body on v2; FastAPI's ``{"detail": ...}`` elsewhere."""
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path != PATH:
        return await http_exception_handler(request, exc)
    return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def request_error(request: Request, exc: Exception) -> Response:
    """On v2, a body that is not JSON is a 400 and a body that does not fit the schema a 422, each with one
    message naming the fields; elsewhere the service's usual 422."""
    assert isinstance(exc, RequestValidationError)
    if request.url.path != PATH:
        return await validation_error(request, exc)
    errors = exc.errors()
    broken = [e for e in errors if e.get("type") == "json_invalid"]
    if broken:
        return _error(400, f"body: not valid JSON ({broken[0].get('ctx', {}).get('error', broken[0]['msg'])})")
    return _error(422, "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors))


def _location(loc: tuple[int | str, ...]) -> str:
    """``documents.3`` for ``("body", "documents", 3)``."""
    return ".".join(str(p) for p in loc[1:] if p != "body") if len(loc) > 1 else "body"
