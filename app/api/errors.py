"""One table from errors to HTTP statuses, and the handlers that render every error the same way:

    {"error": {"code": "<snake_case>", "message": "<what was wrong and how to fix it>",
               "details": <optional, e.g. validation problems>}}

FastAPI's default `{"detail": …}` shape is not used anywhere. No tracebacks or server paths reach a
response: unexpected exceptions become a generic 500 whose error id is logged with the traceback.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.api.middleware import may_have_body
from app.domain.task_vectors import IncompatibleCheckpointError
from app.services import errors as se
from app.storage.errors import StoreError, StoreFull, StoreReadOnly, StoreUnavailable, storage_error

log = logging.getLogger(__name__)


def _optional(module: str, name: str) -> type[Exception] | None:
    """An error class from a module that may not be importable yet (other helpers write them)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def error_table() -> list[tuple[type[Exception], int, str]]:
    """(exception class, status, code), most specific first; the first isinstance match wins."""
    rows: list[tuple[type[Exception] | None, int, str]] = [
        (se.Unauthorized, 401, "unauthorized"),
        (se.Forbidden, 403, "forbidden"),
        (se.NotFound, 404, "not_found"),
        (se.Conflict, 409, "conflict"),
        (se.PayloadTooLarge, 413, "payload_too_large"),
        (se.UnsupportedMediaType, 415, "unsupported_media_type"),
        (se.UnsafeArchive, 422, "unsafe_archive"),
        (se.UnprocessableInput, 422, "unprocessable_input"),
        (se.InvalidInput, 400, "invalid_input"),
        (se.ServiceUnavailable, 503, "service_unavailable"),
        (IncompatibleCheckpointError, 422, "incompatible_checkpoint"),
        (_optional("app.io.errors", "ArtifactError"), 500, "artifact_error"),
        (_optional("app.io.errors", "BagFormatError"), 422, "bad_bag"),
        (_optional("app.io.errors", "CheckpointFormatError"), 422, "bad_checkpoint"),
        (_optional("app.io.errors", "LabelError"), 422, "bad_labels"),
        (_optional("app.io.errors", "CohortError"), 422, "bad_cohort"),
        (_optional("app.io.errors", "InputFileError"), 422, "bad_file"),
        (_optional("app.domain.merging.registry", "UnknownMethodError"), 422, "unknown_method"),
        (_optional("app.domain.merging.base", "MergeParamsError"), 422, "invalid_params"),
        (StoreFull, 507, "insufficient_storage"),  # issue 11: a full / read-only store is not a 500
        (StoreReadOnly, 503, "store_read_only"),
        (StoreUnavailable, 503, "store_unavailable"),
        (StoreError, 500, "store_error"),
        (se.ServiceError, 400, "error"),
    ]
    return [(cls, status, code) for cls, status, code in rows if cls is not None]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def classify(exc: Exception) -> tuple[int, str] | None:
    for cls, status, code in error_table():
        if isinstance(exc, cls):
            return status, exc.code if isinstance(exc, se.ServiceError) else code
    return None


def _http_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        429: "too_many_requests",
        503: "service_unavailable",
    }.get(status, "http_error")


async def _known_error(request: Request, exc: Exception) -> JSONResponse:
    found = classify(exc)
    if found is None:
        return await _unexpected(request, exc)
    status, code = found
    if status >= 500:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    headers: dict[str, str] = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    retry_after = getattr(exc, "retry_after_s", None)  # issue 7: 503 server_busy (app.services.admission)
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, int(retry_after)))}
    if status in (401, 403, 413) and may_have_body(request.scope):
        # refused before its body was read (routes that read their own body check the key first): close the
        # connection, so the server does not go on receiving a body nobody will use (docs/security.md)
        headers["Connection"] = "close"
    message = str(exc) or type(exc).__name__
    return JSONResponse(error_body(code, message, getattr(exc, "details", None)), status, headers=headers or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for StarletteHTTPException only
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:  # Starlette names only the first route of the path; list every method it has
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
    return JSONResponse(error_body(_http_code(exc.status_code), message), exc.status_code, headers=headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the API documents for this path (from the OpenAPI paths: every route is there)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m.lower() in ("get", "post", "put", "patch", "delete")}
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # registered for RequestValidationError only
    problems = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"][1:] or first["loc"]) or "request"
    message = f"invalid request: {where}: {first['msg']}" + (
        f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if first["loc"] == ["body"] and content_type not in ("application/json", "multipart/form-data"):
        message += (  # e.g. curl -d '{…}' sends application/x-www-form-urlencoded: the JSON was never parsed
            f"; the body was sent as {content_type or 'no content type'}: send JSON with the header "
            "'Content-Type: application/json' (curl: -H 'Content-Type: application/json')"
        )
    if request.url.path.startswith("/ui/") and "/figures/" not in request.url.path:  # a page, not an API answer
        from app.api.routes.ui import templates

        page = message.replace("invalid request: query.", "the address's ").replace("invalid request: ", "")
        return templates.TemplateResponse(request, "error.html", {"nav": "error", "message": page}, status_code=422)
    return JSONResponse(error_body("validation_error", message, problems), 422)


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    """A disk-full / read-only OSError (e.g. while an upload streams into the store) → 507 / 503; others → 500.
    EACCES / EPERM count as "store not writable" only for a file inside the store's root."""
    root = getattr(getattr(getattr(request.app.state, "ctx", None), "store", None), "root", None)
    name = getattr(exc, "filename", None)
    in_store = root is not None and isinstance(name, str | bytes) and Path(os.fsdecode(name)).is_relative_to(root)
    mapped = storage_error(exc, permissions=in_store)
    return await (_known_error(request, mapped) if mapped is not None else _unexpected(request, exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    message = f"internal server error (error id {error_id}); the details are in the server log"
    return JSONResponse(error_body("internal_error", message), 500)


class CatchUnexpected:
    """ASGI middleware (innermost): an unexpected exception becomes the JSON 500 here instead of in Starlette's
    ServerErrorMiddleware, which sends the same response but then re-raises, so uvicorn logs the error a second
    time and closes the connection: a client reusing it lost its next, unrelated request. An exception after
    the response has started is re-raised (nothing else can be sent then)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer, nothing went wrong here
            log.info("client disconnected during %s %s", scope.get("method"), scope.get("path"))
        except Exception as exc:
            if started:
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: table classes, HTTPException, validation errors, and a catch-all 500 (rendered
    by CatchUnexpected, added as the innermost middleware; the handler stays for what escapes it)."""
    for cls, _, _ in error_table():
        app.add_exception_handler(cls, _known_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(CatchUnexpected)  # first added = innermost: every other middleware sees a plain 500
