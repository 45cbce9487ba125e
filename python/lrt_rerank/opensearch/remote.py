"""A re-ranker that calls the rerank service over HTTP (``POST /v1/rerank``, Cohere shape).

For :class:`~lrt_rerank.opensearch.searcher.HybridSearcher` in applications that do not load
the model in-process: it asks the service for raw logits of every document, so its scores are
those of the in-process ``CrossEncoder`` on the same model. Network failures, timeouts and
error answers raise :class:`RemoteRerankError` (the searcher then keeps the RRF order).
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import numpy.typing as npt


FLOAT32_MAX = float(np.finfo(np.float32).max)


class RemoteRerankError(RuntimeError):
    """The rerank service could not be reached, timed out, or answered an error."""


class RemoteReranker:
    def __init__(self, service_url: str, api_key: str | None = None, timeout_s: float = 5.0) -> None:
        if not service_url.startswith(("http://", "https://")):
            raise ValueError(f"service URL {service_url!r}: expected http(s)://host:port")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url = service_url.rstrip("/") + "/v1/rerank"
        self.api_key = api_key
        self.timeout_s = timeout_s

    def score(self, query: str, passages: list[str]) -> npt.NDArray[np.float32]:
        """Raw logits, one per passage, in input order."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        body = json.dumps({"query": query, "documents": passages, "return_documents": False, "raw_scores": True}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (caller's service URL)
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RemoteRerankError(f"{self.url} answered {exc.code}: {_excerpt(exc)}") from exc
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            # HTTPException: a malformed status line or a body cut short (IncompleteRead)
            raise RemoteRerankError(f"{self.url} unreachable or broken answer: {exc!r}") from exc
        try:
            answer = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise RemoteRerankError(f"{self.url} answered invalid JSON ({exc})") from exc
        return _scores(self.url, answer, len(passages))


def _excerpt(exc: urllib.error.HTTPError) -> str:
    """The start of an error answer's body (best effort: the connection may already be broken)."""
    try:
        return exc.read()[:300].decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return "(no readable body)"


def _float32(value: object) -> float | None:
    """``value`` as a float if it is a JSON number that float32 holds finitely, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) and abs(number) <= FLOAT32_MAX else None


def _scores(url: str, answer: Any, n: int) -> npt.NDArray[np.float32]:
    """One finite score per document from a Cohere rerank answer, or RemoteRerankError saying what is wrong."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise RemoteRerankError(f"{url} answered an unexpected shape (no 'results' list)")
    scores = np.full(n, np.nan, dtype=np.float32)
    for result in results:
        index = result.get("index") if isinstance(result, dict) else None
        score = result.get("relevance_score") if isinstance(result, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise RemoteRerankError(
                f"{url} answered a result without a valid index into {n} documents: {result!r:.200}"
            )
        value = _float32(score)
        if value is None:
            raise RemoteRerankError(
                f"{url} answered a result without a finite float32 relevance_score: {result!r:.200}"
            )
        if not np.isnan(scores[index]):
            raise RemoteRerankError(f"{url} answered document {index} twice")
        scores[index] = value
    missing = int(np.isnan(scores).sum())
    if missing:
        raise RemoteRerankError(f"{url} scored {n - missing} of {n} documents")
    return scores
