"""GET /health/live (process up) and GET /health/ready (database reachable and migrated, artifact store writable,
queue reachable; each check bounded to a few seconds). The only routes that need no API key."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.schemas.resources import ReadyOut

router = APIRouter(prefix="/health", tags=["operations"])


PROBE_TIMEOUT_S = 3.0  # a dependency that has not answered by then counts as down for this probe
_PROBES = ThreadPoolExecutor(max_workers=3, thread_name_prefix="health-probe")  # one per dependency
_INFLIGHT: dict[tuple[int, str], Future] = {}
_INFLIGHT_LOCK = threading.Lock()


@router.get("/live", summary="Liveness: the process answers")
async def live() -> dict[str, str]:  # on the event loop: answers even when every worker thread is busy
    return {"status": "alive"}


def _probe(ctx: Any, name: str, check: Callable[[], bool]) -> Future:
    """The running check of dependency `name`, or a new one. A dependency that hangs (a stopped object store,
    a database behind a dead link) holds one probe thread until its own client gives up; later probes wait
    on that same check instead of piling up threads."""
    with _INFLIGHT_LOCK:
        running = _INFLIGHT.get((id(ctx), name))
        if running is None or running.done():
            for key in [k for k, f in _INFLIGHT.items() if f.done()]:  # finished checks keep no context alive
                del _INFLIGHT[key]
            running = _INFLIGHT[(id(ctx), name)] = _PROBES.submit(check)
        return running


async def _checks(ctx: Any) -> dict[str, bool]:
    futures = {
        "database": _probe(ctx, "database", lambda: _database_ok(ctx)),
        "store": _probe(ctx, "store", ctx.store.is_writable),
        "queue": _probe(ctx, "queue", lambda: _queue_ok(ctx)),
    }
    waiting = {name: asyncio.wrap_future(f) for name, f in futures.items()}
    await asyncio.wait(waiting.values(), timeout=PROBE_TIMEOUT_S)  # all at once: one slow check delays no other
    out = {}
    for name, future in waiting.items():
        # not done in time (a hung dependency) or raised: down for this answer; the check itself keeps running
        out[name] = future.done() and not future.cancelled() and future.exception() is None and bool(future.result())
    return out


def _database_ok(ctx) -> bool:
    """The database answers and is at the migration this code needs (else its routes would answer 500)."""
    from app.db.migrate import revision_on, schema_problem_at

    try:
        with ctx.session() as s:
            s.execute(text("SELECT 1"))
            return schema_problem_at(revision_on(s.connection())) is None
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
async def ready(request: Request) -> JSONResponse:
    """Each dependency is checked on its own probe thread with a PROBE_TIMEOUT_S limit for this answer: a hung
    dependency reads as down within seconds, and never ties up the threads that serve the API."""
    ctx = getattr(request.app.state, "ctx", None)
    checks = {"database": False, "store": False, "queue": False}
    if ctx is not None:
        checks = await _checks(ctx)
    ok = all(checks.values())
    body = ReadyOut(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
