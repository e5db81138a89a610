"""A bare ASGI app for bench.predict_load_http's HTTP floor: POST /sink receives the request body into one
buffer and answers its length — no model, no file, no validation. What uvicorn (h11) + Starlette cost to move a
bag's bytes from a client on this machine into server memory; no route of the service can be faster."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def sink(request: Request) -> JSONResponse:
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
    return JSONResponse({"bytes": len(received)})


app = Starlette(routes=[Route("/sink", sink, methods=["POST"])])
