"""ASGI middleware: a request-body cap (413 before the multipart parser spools an oversize upload to disk),
authentication before the body is read (AuthBeforeBody), and Prometheus request metrics labelled by route
template (unknown methods and paths collapse to one label value each, so the label sets stay bounded)."""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.uploads import mib

FORM_OVERHEAD = 1 << 20  # room for multipart headers and form fields next to a file at the cap
UI_PREFIX = "/ui"
UI_BODY_LIMIT = 64 << 10  # the web UI's forms (login, start a merge) are a few hundred bytes
UI_COOKIE = "steph_ui_key"  # app.api.routes.ui.COOKIE (not imported: the UI module pulls in Jinja2)
UI_PUBLIC = ("/ui/login", "/ui/logout")  # the login form must read its body; logout only drops the cookie


def _too_large_message(limit_bytes: int) -> str:
    return (
        f"the request body is larger than the {mib(limit_bytes)} MiB upload limit; send a smaller file or "
        "raise STEPH_MAX_UPLOAD_MB"
    )


class BodySizeLimit:
    """Refuse bodies over `max_upload_bytes + 1 MiB` (413): from Content-Length as soon as the app first asks for
    the body — without reading any of it, and after AuthBeforeBody, so a caller without a key learns nothing
    about the limits — else while streaming. A request whose body is never read is not refused."""

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int) -> None:
        self.app = app
        self.file_limit = max_upload_bytes
        self.limit = max_upload_bytes + FORM_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = UI_BODY_LIMIT if _is_ui(scope) else self.limit
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").strip()
        too_large = declared.isdigit() and int(declared) > limit
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if too_large:
                raise HTTPException(413, _too_large_message(self.file_limit), headers={"Connection": "close"})
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large_message(self.file_limit))
            return message

        await self.app(scope, limited_receive, send)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED_ROUTE = "<unmatched>"


def metric_labels(scope: Scope, status: int) -> dict[str, str]:
    """Bounded labels: a known HTTP method or OTHER, the matched route template or <unmatched>, the status."""
    method = scope.get("method", "")
    route = getattr(scope.get("route"), "path", None)
    endpoint = scope.get("endpoint")
    if route is None and endpoint is not None:  # a plain Starlette route (/openapi.json, /docs) names no "route"
        app = scope.get("app")
        route = next((r.path for r in getattr(app, "routes", ()) if getattr(r, "endpoint", None) is endpoint), None)
    return {
        "method": method if method in KNOWN_METHODS else OTHER_METHOD,
        "route": route if isinstance(route, str) and route else UNMATCHED_ROUTE,
        "status": str(status) if 100 <= status <= 599 else "other",
    }


def may_have_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length", b"").strip()
    return b"transfer-encoding" in headers or (length not in (b"", b"0"))


def required_scope(route: Any) -> str | None:
    """The API-key scope a route needs ('admin' / 'predict'), from its dependency tree; None when public."""
    from app.api.deps import AUTH_DEPENDENCIES

    stack, found = list(getattr(getattr(route, "dependant", None), "dependencies", ())), set()
    while stack:
        dep = stack.pop()
        if dep.call in AUTH_DEPENDENCIES:
            found.add(AUTH_DEPENDENCIES[dep.call])
        stack.extend(dep.dependencies)
    return "admin" if "admin" in found else ("predict" if found else None)


def _is_ui(scope: Scope) -> bool:
    path = scope.get("path", "")
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def _ui_needs(scope: Scope) -> str | None:
    """The scope a /ui form post needs before its body is read: a valid key of any scope in the session cookie
    (the page itself answers a predict key on an admin form with a readable 403 page); None for login/logout."""
    return None if scope.get("path") in UI_PUBLIC else "predict"


def _cookie_key(scope: Scope) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    raw = dict(scope.get("headers") or []).get(b"cookie", b"").decode("latin-1")
    try:
        morsel = SimpleCookie(raw).get(UI_COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel is not None else None


def _bearer_key(scope: Scope) -> str | None:
    raw = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, credentials = raw.partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _check_key(ctx: Any, key: str | None, needed: str) -> Exception | None:
    from app.services import auth
    from app.services.errors import ServiceError, ServiceUnavailable

    try:
        with ctx.session() as s:
            auth.authenticate(s, key=key, required_scope=needed)
    except ServiceError as exc:
        return exc
    except Exception:  # the database blinked: refuse now rather than read a body nobody may send
        return ServiceUnavailable("the API key could not be checked (database unreachable); retry in a moment")
    return None


class AuthBeforeBody:
    """Check the API key and its scope BEFORE any byte of the request body is received, on every route that
    needs a key: the app's first `receive()` (routing is done by then, so `scope["route"]` names the route and
    its auth dependency) authenticates first and raises a 401/403 HTTPException instead of pulling the body.
    The web UI's form posts (under /ui, authenticated by the session cookie) are checked the same way, from the
    cookie; only /ui/login and /ui/logout read their (≤ 64 KiB) body without a key.
    An unauthenticated 1 GiB upload is answered at once and none of its bytes are read; the route's own
    dependency checks the key again. Requests without a body are left to that dependency alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        if scope["type"] != "http" or ctx is None or not may_have_body(scope):
            await self.app(scope, receive, send)
            return
        checked = False

        async def guarded_receive() -> Message:
            nonlocal checked
            if not checked:
                checked = True
                ui = _is_ui(scope)
                needed = _ui_needs(scope) if ui else required_scope(scope.get("route"))
                if needed is not None:
                    key = _cookie_key(scope) if ui else _bearer_key(scope)
                    error = await anyio.to_thread.run_sync(_check_key, ctx, key, needed)
                    if error is not None:
                        http_error = _as_http_error(error)
                        if ui and http_error.status_code == 401:  # a browser form: back to the login page
                            raise HTTPException(303, "log in again", headers={"Location": "/ui/login",
                                                                              "Connection": "close"})  # fmt: skip
                        raise http_error
            return await receive()

        await self.app(scope, guarded_receive, send)


def _as_http_error(exc: Exception) -> HTTPException:
    """401/403 as an HTTPException: FastAPI re-raises those from body parsing (other errors become a 400)."""
    from app.api.errors import classify

    status, _ = classify(exc) or (401, "unauthorized")
    headers = {"Connection": "close", **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return HTTPException(status, str(exc), headers=headers)


class NoStoreUI:
    """`Cache-Control: no-store` on every /ui answer that sets no caching of its own: after a logout, Back must not
    show the previous user's pages (held-out patient ids) on a shared workstation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, no_store)


CLIENT_CLOSED = 499  # the status /metrics records for a request whose client disconnected before the answer


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
        status = {"code": 500, "answered": False, "gone": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                status["answered"] = True
            await send(message)

        async def watch(message_source: Receive = receive) -> Message:
            message = await message_source()
            if message["type"] == "http.disconnect" and not status["answered"]:
                status["gone"] = True  # the client left before any answer (mid-upload, or a timeout)
            return message

        try:
            await self.app(scope, watch, capture)
        finally:
            # CLIENT_CLOSED (499, as nginx logs it): a client that went away is not a server error; whatever was
            # (or was not) answered afterwards reached nobody
            labels = metric_labels(scope, CLIENT_CLOSED if status["gone"] else int(status["code"]))
            self.requests.labels(**labels).inc()
            self.latency.labels(**labels).observe(time.perf_counter() - started)
