"""Connecting to an OpenSearch cluster with opensearch-py, from :class:`ConnectionSettings`."""

from __future__ import annotations

import logging

from opensearchpy import OpenSearch
from opensearchpy.exceptions import AuthenticationException, AuthorizationException, SSLError, TransportError
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError

from lrt_rerank.opensearch.connection import ConnectionSettings
from lrt_rerank.quiet import quiet_logger


class ClusterAuthError(ConnectionError):
    """The cluster answered 401 (authentication failed) or 403 (forbidden); one line naming the URL."""


def connect(settings: ConnectionSettings | str, timeout: float | None = None) -> OpenSearch:
    """A client for the cluster of ``settings`` (or a bare URL, no credentials), checked with one request.

    Raises ``ConnectionError`` naming the URL when nothing answers there or the TLS handshake fails
    (naming the CA it trusted), and :class:`ClusterAuthError` on 401/403. The messages never hold
    the password. opensearch-py logs every request at INFO on the ``opensearch`` logger; unless
    that logger's level was set, it is raised to WARNING here (an evaluation sends thousands).
    """
    transport_log = logging.getLogger("opensearch")
    if transport_log.level == logging.NOTSET:
        transport_log.setLevel(logging.WARNING)
    if isinstance(settings, str):
        settings = ConnectionSettings(settings)
    kwargs = settings.client_kwargs()
    if timeout is not None:
        kwargs["timeout"] = timeout
    url = settings.url
    client = OpenSearch(**kwargs)
    try:
        with quiet_logger(transport_log, logging.CRITICAL):  # a failure is reported below in one line, not per retry with a traceback
            client.info()
    except AuthenticationException:
        client.close()
        who = f"for user {settings.user!r}; check --user and the password" if settings.user else "without credentials; give --user"
        raise ClusterAuthError(f"OpenSearch at {url}: authentication failed (401) {who}") from None
    except AuthorizationException:
        client.close()
        raise ClusterAuthError(f"OpenSearch at {url}: forbidden (403) for user {settings.user!r}: it lacks cluster:monitor/main") from None
    except SSLError as exc:
        client.close()
        raise ConnectionError(
            f"OpenSearch at {url}: TLS handshake failed, trusting {settings.trust()} ({_reason(exc)}); "
            "pass the cluster's CA with --ca-certs"
        ) from None
    except (OpenSearchConnectionError, TransportError) as exc:
        client.close()
        reason = _reason(exc)
        hint = "; if it serves https, use an https:// URL" if not settings.tls and "RemoteDisconnected" in reason else ""
        raise ConnectionError(f"OpenSearch at {url} is not reachable ({reason}){hint}; start one with `lrt-rerank opensearch up`") from None
    return client


def _reason(exc: Exception) -> str:
    """The innermost reason of a transport error, without the request that carried the credentials."""
    info = getattr(exc, "info", None)
    inner = info if isinstance(info, BaseException) else exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    return f"{type(inner).__name__}: {inner}"[:300]


