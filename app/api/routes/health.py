"""GET /health/live (process up) and GET /health/ready (database, artifact store writable, queue reachable).
The only routes that need no API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.schemas.resources import ReadyOut

router = APIRouter(prefix="/health", tags=["operations"])


@router.get("/live", summary="Liveness: the process answers")
def live() -> dict[str, str]:
    return {"status": "alive"}


def _database_ok(ctx) -> bool:
    try:
        with ctx.session() as s:
            s.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _queue_ok(ctx) -> bool:
    try:
        return bool(ctx.queue is not None and ctx.queue.ping())
    except Exception:
        return False


@router.get(
    "/ready",
    summary="Readiness: database, artifact store and job queue",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut}},
)
def ready(request: Request) -> JSONResponse:
    ctx = getattr(request.app.state, "ctx", None)
    checks = {"database": False, "store": False, "queue": False}
    if ctx is not None:
        checks = {"database": _database_ok(ctx), "store": ctx.store.is_writable(), "queue": _queue_ok(ctx)}
    ok = all(checks.values())
    body = ReadyOut(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
