"""The HTTP rerank service (FastAPI, served by uvicorn through ``lrt-rerank serve``; the ``serve`` extra).

* :mod:`~lrt_rerank.service.app`: builds the application (wiring only);
* :mod:`~lrt_rerank.service.routes`: the routes, as functions reaching the engine through app state;
* :mod:`~lrt_rerank.service.engine`: the model, its cache tiers, scoring through the re-ranking core;
* :mod:`~lrt_rerank.service.settings`: the settings of one process;
* :mod:`~lrt_rerank.service.schemas`: request and response bodies (Cohere, TEI);
* :mod:`~lrt_rerank.service.cohere_v2`: Cohere's v2 route (its body, model-name check, error shape);
* :mod:`~lrt_rerank.service.limits`: request size limits;
* :mod:`~lrt_rerank.service.metrics`: Prometheus metrics.
"""

from lrt_rerank.service.app import create_app
from lrt_rerank.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
