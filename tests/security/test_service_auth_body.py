"""Class 5a (issue 8): the API key and its scope are checked before ANY of the request body is read, on every
route that takes a body. Measured: the bytes the app pulls from the ASGI `receive` channel, and the time a real
uvicorn server takes to answer a request that declares 1 GiB but sends nothing."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest
import uvicorn

from app.main import create_app
from tests.api.conftest import admin, client, ctx, predict, settings  # noqa: F401
from tests.fixtures import free_port

GIB = 2**30
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _body_routes(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every documented route that can take a body (path params filled in)."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        for method in sorted(m.upper() for m in operations if m.upper() in BODY_METHODS):
            out.append((method, re.sub(r"\{[^}]+\}", "x1", path)))
    return out


def _call(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None = None,
          declared: int = GIB):  # fmt: skip
    """Run one request through the ASGI app; returns (status, body, bytes the app received)."""
    got = {"bytes": 0, "calls": 0}

    async def receive():
        got["calls"] += 1
        if body is not None:
            got["bytes"] += len(body)
            return {"type": "http.request", "body": body, "more_body": False}
        chunk = b"\0" * 65536  # "1 GiB" arriving: stop after 16 chunks so a failing test still ends
        got["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": got["calls"] < 16}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    length = str(declared if body is None else len(body)).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "state": {},
        "headers": [(b"host", b"testserver"), (b"content-length", length),
                    (b"content-type", b"multipart/form-data; boundary=xyz"), *headers],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    _call.headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}  # type: ignore[attr-defined]
    return start["status"], payload, got["bytes"]


def test_every_body_route_refuses_before_reading_the_body(client, admin, predict):  # noqa: F811
    app = client.app
    routes = _body_routes(app)
    paths = {p for _, p in routes}
    assert {"/bases", "/checkpoints", "/cohorts", "/predict", "/merge-jobs"} <= paths, paths
    admin_only = [(m, p) for m, p in routes if not p.startswith("/predict")]  # /predict, /predict/bag|paths
    pkey = [(b"authorization", predict["Authorization"].encode())]
    for method, path in routes:
        for headers, status in (([], 401), ([(b"authorization", b"Bearer steph_admin_forged")], 401)):
            got_status, payload, read = _call(app, method, path, headers)
            assert (got_status, read) == (status, 0), (method, path, got_status, read, payload[:200])
            assert b'"unauthorized"' in payload
            # the server must not go on receiving the body it refused (was missing on /cohorts, /predict/bag)
            assert _call.headers.get("connection") == "close", (method, path, _call.headers)
    for method, path in admin_only:
        got_status, payload, read = _call(app, method, path, pkey)
        assert (got_status, read) == (403, 0), (method, path, got_status, read)
        assert b"scope" in payload and _call.headers.get("connection") == "close", (method, path)


def test_an_authorised_request_does_read_its_body(client, admin):  # noqa: F811
    """The measurement can fail: with a valid key the same route reads the body (and answers 422 for '{}')."""
    headers = [(b"authorization", admin["Authorization"].encode()), (b"content-type", b"application/json")]
    status, payload, read = _call(client.app, "POST", "/merge-jobs", headers, body=b"{}")
    assert status == 422 and read == 2, (status, payload)


def test_the_key_is_checked_before_the_size_limit(client, admin):  # noqa: F811
    """A body over the upload cap: 401 without a key (the limits stay private), 413 with one; neither reads it."""
    too_big = client.app.state.settings.max_upload_bytes + 2**21
    status, payload, read = _call(client.app, "POST", "/bases", [], declared=too_big)
    assert (status, read) == (401, 0) and b"unauthorized" in payload
    key = [(b"authorization", admin["Authorization"].encode())]
    status, payload, read = _call(client.app, "POST", "/bases", key, declared=too_big)
    assert (status, read) == (413, 0) and b"STEPH_MAX_UPLOAD_MB" in payload


@pytest.mark.slow
def test_real_server_answers_401_to_a_declared_gib_at_once(settings):  # noqa: F811
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        for path in ("/bases", "/predict", "/cohorts"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                started = time.perf_counter()
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    f"Content-Length: {GIB}\r\n\r\n".encode()
                )
                sock.sendall(b"--b\r\n" + b"\0" * 1000)  # a little of the body, never the rest
                reply = sock.recv(65536)
                elapsed = time.perf_counter() - started
            assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
            assert elapsed < 2.0, elapsed
    finally:
        server.should_exit = True
        thread.join(timeout=30)
