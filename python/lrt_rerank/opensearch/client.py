"""Connecting to an OpenSearch cluster with opensearch-py."""

from __future__ import annotations

import logging

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import TransportError


def connect(url: str, timeout: float = 60.0) -> OpenSearch:
    """A client for ``url`` (e.g. ``http://127.0.0.1:9200``), checked with one request.

    Raises ``ConnectionError`` naming the URL when nothing answers there. opensearch-py logs
    every request at INFO on the ``opensearch`` logger; unless that logger's level was set,
    it is raised to WARNING here (an evaluation sends thousands of requests).
    """
    transport_log = logging.getLogger("opensearch")
    if transport_log.level == logging.NOTSET:
        transport_log.setLevel(logging.WARNING)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"OpenSearch URL {url!r}: expected http://host:port or https://host:port")
    client = OpenSearch(hosts=[url], timeout=timeout, http_compress=False)
    try:
        client.info()
    except (OpenSearchConnectionError, TransportError) as exc:
        raise ConnectionError(f"OpenSearch at {url} is not reachable ({exc}); start one with `lrt-rerank opensearch up`") from exc
    return client
