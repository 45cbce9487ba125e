"""A re-ranker that calls the rerank service over HTTP (``POST /v1/rerank``, Cohere shape).

For :class:`~lrt_rerank.opensearch.searcher.HybridSearcher` in applications that do not load
the model in-process: it asks the service for raw logits of every document, so its scores are
those of the in-process ``CrossEncoder`` on the same model. Network failures, timeouts and
error answers raise :class:`RemoteRerankError` (the searcher then keeps the RRF order).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import numpy.typing as npt


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
                answer = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise RemoteRerankError(f"{self.url} answered {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RemoteRerankError(f"{self.url} unreachable: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise RemoteRerankError(f"{self.url} answered invalid JSON ({exc.msg})") from exc
        scores = np.full(len(passages), np.nan, dtype=np.float32)
        try:
            for result in answer["results"]:
                scores[int(result["index"])] = float(result["relevance_score"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RemoteRerankError(f"{self.url} answered an unexpected shape ({exc!r})") from exc
        if np.isnan(scores).any():
            raise RemoteRerankError(f"{self.url} scored {int((~np.isnan(scores)).sum())} of {len(passages)} documents")
        return scores
