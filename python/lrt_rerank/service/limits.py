"""Request body size limit of the rerank service (ASGI middleware).

A request whose ``Content-Length`` exceeds the limit is answered 413 before its body is read.
A body without a length (chunked transfer encoding) is counted while it streams in and
answered 413 as soon as it passes the limit. The 413 body carries the reason as ``detail`` (the service's
error shape) and ``message`` (Cohere's). Accepted bodies are buffered (they are small by
construction) and replayed to the application.
"""

from __future__ import annotations

import json

from lrt_rerank.service.metrics import ASGIApp, HttpMiddleware, Message, Receive, Scope, Send


class BodySizeLimitMiddleware(HttpMiddleware):
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        super().__init__(app)
        self.max_body_bytes = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._reject(send, f"Content-Length {declared} exceeds the limit")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._reject(send, "request body exceeds the limit")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, reason: str) -> None:
        text = f"{reason}: at most {self.max_body_bytes} bytes per request body"
        payload = json.dumps({"detail": text, "message": text}).encode()  # `message`: what Cohere's clients read
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
