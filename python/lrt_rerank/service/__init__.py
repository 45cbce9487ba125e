"""The HTTP rerank service (FastAPI, served by uvicorn through ``lrt-rerank serve``).

* :mod:`~lrt_rerank.service.app`: the application, its settings and routes;
* :mod:`~lrt_rerank.service.schemas`: request and response bodies (native, Cohere, TEI);
* :mod:`~lrt_rerank.service.cache`: the in-process and Redis score-cache tiers;
* :mod:`~lrt_rerank.service.limits`: request size limits;
* :mod:`~lrt_rerank.service.metrics`: Prometheus metrics.
"""

from lrt_rerank.service.app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]
