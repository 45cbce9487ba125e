"""Stateless HTTP rerank service (FastAPI).

``create_app(settings)`` builds the application; ``lrt-rerank serve`` runs it under uvicorn.
The model loads in a worker thread after start-up: ``GET /health`` answers 503 until it is
ready and 200 after. Scoring runs in worker threads too (the core releases the GIL), never on
the event loop, through the re-ranking core (:mod:`lrt_rerank.service.engine`).

Modules: :mod:`~lrt_rerank.service.settings` (the process's settings),
:mod:`~lrt_rerank.service.engine` (model, cache tiers, scoring), :mod:`~lrt_rerank.service.routes`
(the routes as functions), :mod:`~lrt_rerank.service.cohere_v2` (Cohere's v2 route),
:mod:`~lrt_rerank.service.schemas`, :mod:`~lrt_rerank.service.limits`, :mod:`~lrt_rerank.service.metrics`.
This module only wires them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrt_rerank.service import cohere_v2, routes
from lrt_rerank.service.engine import Engine
from lrt_rerank.service.served import EncoderLoader, default_loader
from lrt_rerank.service.limits import BodySizeLimitMiddleware
from lrt_rerank.service.metrics import MetricsMiddleware, ServiceMetrics
from lrt_rerank.service.schemas import (
    SCORES_DOC,
    CohereRerankResponse,
    ErrorResponse,
    HealthResponse,
    ModelList,
    TeiResult,
    request_models,
)
from lrt_rerank.service.settings import ServiceSettings

DESCRIPTION = f"""
Re-scores candidate passages for a query with a cross-encoder and returns them best first.

* `POST /v2/rerank`: Cohere rerank API (v2) request and response shape; `model` names the served
  model (`GET /v1/models`), errors are Cohere's (`id` and `message`).
* `POST /v1/rerank`: Cohere rerank API (v1) request and response shape (`model` is ignored).
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
    app = FastAPI(title="lrt-rerank", version=_version(), description=DESCRIPTION, lifespan=routes.lifespan)
    app.state.engine = Engine(settings, metrics, loader or default_loader(settings))
    app.add_exception_handler(RequestValidationError, cohere_v2.request_error)
    app.add_exception_handler(StarletteHTTPException, cohere_v2.http_error)

    schemas = request_models(settings.max_documents)
    # Only a service started with an API key requires (and documents) bearer auth.
    guarded = [Depends(routes.authorize)] if settings.api_key is not None else []
    responses: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorResponse, "description": f"Request body over {settings.max_body_bytes} bytes."},
        503: {
            "model": ErrorResponse,
            "description": "The model is not loaded yet, or scoring failed; `Retry-After` says when to retry.",
        },
    }
    if settings.api_key is not None:
        responses[401] = {"model": ErrorResponse, "description": "Missing or wrong API key."}

    def add_rerank_route(
        path: str, route: Callable[..., Awaitable[Any]], body_model: type, response_model: Any,
        route_responses: dict[int | str, dict[str, Any]], summary: str,
    ) -> None:
        """A POST route that reranks: its body checked against ``body_model``, behind the API key if any."""
        app.add_api_route(
            path,
            with_body(route, body_model),
            methods=["POST"],
            response_model=response_model,
            response_model_exclude_none=True,
            dependencies=guarded,
            responses=route_responses,
            summary=summary,
        )

    add_rerank_route(
        "/v1/rerank", routes.cohere_rerank, schemas.cohere, CohereRerankResponse, responses, "Rerank documents (Cohere-compatible)"
    )
    v2_error = cohere_v2.CohereV2Error
    add_rerank_route(
        cohere_v2.PATH,
        cohere_v2.cohere_v2_rerank,
        cohere_v2.request_model(schemas.cohere),
        CohereRerankResponse,
        {
            **{k: {**v, "model": v2_error} for k, v in responses.items()},
            400: {"model": v2_error, "description": "The body is not JSON."},
            404: {"model": v2_error, "description": "`model` is not the served model's id."},
            422: {"model": v2_error, "description": "The body does not fit the schema."},
        },
        "Rerank documents (Cohere v2-compatible)",
    )
    add_rerank_route(
        "/rerank", routes.tei_rerank, schemas.tei, list[TeiResult], responses, "Rerank texts (text-embeddings-inference-compatible)"
    )
    app.get(
        "/v1/models",
        response_model=ModelList,
        dependencies=guarded,
        responses={k: v for k, v in responses.items() if k != 413},
        summary="The served model: name, kind, card and score calibration (OpenAI/Cohere-like list)",
    )(routes.list_models)
    health_503 = {"model": HealthResponse, "description": "The model is loading, or loading it failed."}
    app.get(
        "/health",
        response_model=HealthResponse,
        response_model_exclude_none=True,
        responses={503: health_503},
        summary="Readiness: 200 once the model is loaded, 503 before (or if loading failed)",
    )(routes.health)
    prometheus_200 = {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}
    app.get("/metrics", response_class=Response, responses={200: prometheus_200}, summary="Prometheus metrics")(
        routes.prometheus_metrics
    )
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=frozenset(r.path for r in app.routes))
    return app


def with_body(route: Callable[..., Awaitable[Any]], body_model: type) -> Callable[..., Awaitable[Any]]:
    """``route`` with its ``body`` parameter typed as ``body_model`` (the settings' document limit), so
    FastAPI validates and documents that model."""
    signature = inspect.signature(route, eval_str=True)
    parameters = [p.replace(annotation=body_model) if p.name == "body" else p for p in signature.parameters.values()]

    @functools.wraps(route)
    async def bound(*args: Any, **kwargs: Any) -> Any:
        return await route(*args, **kwargs)

    bound.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return bound


def create_app_from_env() -> FastAPI:
    """uvicorn factory used by ``lrt-rerank serve`` (settings come from the environment)."""
    return create_app(ServiceSettings.from_env())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrt-rerank")
    except PackageNotFoundError:
        return "0+unknown"
