"""ASGI middleware: a request-body cap (413 before the multipart parser spools an oversize upload to disk) and
Prometheus request metrics labelled by route template."""

from __future__ import annotations

import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body
from app.services.uploads import mib

FORM_OVERHEAD = 1 << 20  # room for multipart headers and form fields next to a file at the cap


def _too_large_message(limit_bytes: int) -> str:
    return (
        f"the request body is larger than the {mib(limit_bytes)} MiB upload limit; send a smaller file or "
        "raise STEPH_MAX_UPLOAD_MB"
    )


class BodySizeLimit:
    """Refuse bodies over `max_upload_bytes + 1 MiB`: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int) -> None:
        self.app = app
        self.file_limit = max_upload_bytes
        self.limit = max_upload_bytes + FORM_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, _too_large_message(self.file_limit))
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Send) -> None:
        import json

        body = json.dumps(error_body("payload_too_large", _too_large_message(self.file_limit))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts requests and observes latency by (method, route template, status)."""

    def __init__(self, app: ASGIApp, *, requests: Any, latency: Any) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            labels = {"method": scope.get("method", ""), "route": template, "status": str(status["code"])}
            self.requests.labels(**labels).inc()
            self.latency.labels(**labels).observe(time.perf_counter() - started)
