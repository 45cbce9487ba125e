"""RemoteReranker against a real HTTP server (http.server in a thread) that answers what a broken or
unfriendly rerank service might: error statuses, bodies that are not JSON or not UTF-8, results that
are partial, duplicated, out of range or not finite, bodies cut short, a garbage status line.
Each is a RemoteRerankError that says what was wrong, never another exception."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lrt_rerank.opensearch.remote import RemoteReranker, RemoteRerankError

Answer = Callable[[BaseHTTPRequestHandler, dict], None]
"""Writes the whole answer to a request whose JSON body is given."""


class FakeService:
    """A loopback HTTP server whose POST /v1/rerank answers with `self.answer`; records each request."""

    def __init__(self) -> None:
        self.answer: Answer = reply(200, {"results": []})
        self.requests: list[tuple[dict[str, str], dict]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append((dict(self.headers), body))
                service.answer(self, body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def running_service() -> Iterator[FakeService]:
    fake = FakeService()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def service(running_service: FakeService) -> FakeService:
    """The module's server, its request log cleared (each test sets its answer)."""
    running_service.requests.clear()
    return running_service


def reply(
    status: int, payload: object = None, raw: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    data = raw if raw is not None else json.dumps(payload, allow_nan=True).encode()

    def answer(handler: BaseHTTPRequestHandler, _: dict) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def results(pairs: list[tuple[object, object]]) -> dict:
    return {"id": "x", "results": [{"index": i, "relevance_score": s} for i, s in pairs]}


def test_scores_come_back_in_input_order(service: FakeService) -> None:
    service.answer = reply(200, results([(2, 3.5), (0, 1.25), (1, -2.0)]))
    scores = RemoteReranker(service.url, api_key="k").score("q", ["a", "b", "c"])
    assert scores.dtype == np.float32 and scores.tolist() == [1.25, -2.0, 3.5]
    headers, body = service.requests[-1]
    assert headers["Authorization"] == "Bearer k"
    assert body == {"query": "q", "documents": ["a", "b", "c"], "return_documents": False, "raw_scores": True}
    assert RemoteReranker(service.url).score("q", []).shape == (0,)
    assert len(service.requests) == 1  # no documents, no request


@pytest.mark.parametrize(
    "answer, message",
    [
        (reply(401, {"detail": "missing or wrong API key"}), r"answered 401: .*missing or wrong API key"),
        (
            reply(422, {"detail": [{"loc": ["body", "query"], "msg": "Field required"}]}),
            r"answered 422: .*Field required",
        ),
        (reply(503, {"detail": "scoring failed"}, headers={"Retry-After": "1"}), r"answered 503: .*scoring failed"),
        (reply(500, raw=b"\xff\xfe<html>oops"), r"answered 500: .*oops"),
        (reply(200, raw=b"<html>not json</html>"), r"answered invalid JSON"),
        (reply(200, raw=b"\xff\xfe\x00garbage"), r"answered invalid JSON"),  # not UTF-8
        (reply(200, raw=b"[" * 100_000), r"answered invalid JSON"),  # nested too deeply
        (reply(200, raw=b""), r"answered invalid JSON"),
        (reply(200, ["a list"]), r"no 'results' list"),
        (reply(200, {"results": "none"}), r"no 'results' list"),
        (reply(200, results([(0, 1.0)])), r"scored 1 of 2 documents"),  # partial
        (reply(200, results([(0, 1.0), (0, 2.0)])), r"answered document 0 twice"),
        (reply(200, results([(0, 1.0), (2, 2.0)])), r"without a valid index into 2 documents"),
        (reply(200, results([(0, 1.0), (-1, 2.0)])), r"without a valid index"),  # not the last one
        (reply(200, results([(0, 1.0), (1.0, 2.0)])), r"without a valid index"),
        (reply(200, results([(0, 1.0), ("1", 2.0)])), r"without a valid index"),
        (reply(200, results([(0, 1.0), (True, 2.0)])), r"without a valid index"),
        (reply(200, results([(0, 1.0), (1, float("nan"))])), r"without a finite float32 relevance_score"),
        (reply(200, results([(0, 1.0), (1, float("inf"))])), r"without a finite float32 relevance_score"),
        (reply(200, results([(0, 1.0), (1, 1e39)])), r"without a finite float32 relevance_score"),  # beyond float32
        (reply(200, results([(0, 1.0), (1, 10**400)])), r"without a finite float32 relevance_score"),
        (reply(200, results([(0, 1.0), (1, "2.0")])), r"without a finite float32 relevance_score"),
        (reply(200, {"results": [{"index": 0, "relevance_score": 1.0}, "x"]}), r"without a valid index"),
    ],
)
def test_bad_answers_are_remote_rerank_errors(service: FakeService, answer: Answer, message: str) -> None:
    service.answer = answer
    with pytest.raises(RemoteRerankError, match=message):
        RemoteReranker(service.url).score("q", ["a", "b"])


def test_a_body_cut_short_is_a_remote_rerank_error(service: FakeService) -> None:
    def cut_short(handler: BaseHTTPRequestHandler, _: dict) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b'{"results": [')
        handler.close_connection = True

    service.answer = cut_short
    with pytest.raises(RemoteRerankError, match="IncompleteRead"):
        RemoteReranker(service.url).score("q", ["a"])


def test_a_garbage_status_line_is_a_remote_rerank_error(service: FakeService) -> None:
    def garbage(handler: BaseHTTPRequestHandler, _: dict) -> None:
        handler.wfile.write(b"HELLO THERE\r\n\r\n")
        handler.close_connection = True

    service.answer = garbage
    with pytest.raises(RemoteRerankError, match="BadStatusLine"):
        RemoteReranker(service.url).score("q", ["a"])


def test_no_answer_within_the_timeout_is_a_remote_rerank_error(
    unresponsive_endpoint: str, closed_endpoint: str
) -> None:
    with pytest.raises(RemoteRerankError, match="unreachable"):
        RemoteReranker(unresponsive_endpoint, timeout_s=0.2).score("q", ["a"])
    with pytest.raises(RemoteRerankError, match="unreachable"):
        RemoteReranker(closed_endpoint).score("q", ["a"])
