"""create_app(): the FastAPI application with its lifespan, error handlers, middleware and routers.

Start-up (lifespan): migrate (embedded default, or STEPH_AUTO_MIGRATE=true) → ServiceContext → job queue
(`workers.build_queue`) → re-enqueue interrupted jobs (embedded) → first-start admin key. Shut-down closes
the queue and the engine. `uvicorn app.main:app` serves `create_app()` with settings from the environment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import app as app_package
from app.api.errors import install_error_handlers
from app.api.metrics import AppMetrics
from app.api.metrics import router as metrics_router
from app.api.middleware import AuthBeforeBody, BodySizeLimit, NoStoreUI, RequestMetrics
from app.api.openapi import install_openapi
from app.api.routes import bases, checkpoints, cohorts, health, jobs, meta, models, predict
from app.api.routes import lifecycle as lifecycle_routes  # issue 9
from app.api.routes import registry as registry_routes  # issue 9
from app.api.routes import reports as report_routes  # issue 10
from app.api.routes import ui as ui_routes  # issue 10
from app.services.auth import bootstrap_admin_key
from app.services.context import ServiceContext, build_context, start_queue
from app.services.merge_jobs import recover_interrupted_jobs
from app.services.reaper import start_reaper, stop_reaper
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

app: FastAPI  # not bound at import: the module __getattr__ below builds it on first access

ROUTERS = (
    health.router,
    meta.router,
    bases.router,
    checkpoints.router,
    cohorts.router,
    jobs.router,
    models.router,
    predict.router,
    registry_routes.router,
    lifecycle_routes.router,
    report_routes.router,  # issue 10
    ui_routes.router,  # issue 10
    metrics_router,
)


def include_routers(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)


def recover_jobs(ctx: ServiceContext) -> list[str]:
    """Re-enqueue jobs left queued or running by a previous process (embedded runner only)."""
    ids = recover_interrupted_jobs(ctx)
    if ids:
        log.info("re-enqueued %d interrupted merge job(s)", len(ids))
    return list(ids)


def start_context(settings: Settings) -> ServiceContext:
    """Everything the lifespan does before serving: migrate, context, queue, recovery, bootstrap key."""
    from app.db.migrate import check_current, upgrade

    if settings.migrate_on_start:
        upgrade(settings.database_url)
    check_current(settings.database_url)  # a database behind the code would answer 500s: refuse to start, say why
    if settings.predict_device == "cuda":  # without a GPU: refuse to start, saying why ("auto" cannot fail and
        from app.services.model_cache import resolve_predict_device  # imports torch: only for this check)

        resolve_predict_device(settings)
    ctx = build_context(settings)
    ctx.store.clear_tmp()
    start_queue(ctx)
    if settings.queue == "embedded":
        recover_jobs(ctx)
    start_reaper(ctx)  # issue 8: stale running / lost queued jobs are re-enqueued (README, "Job guarantees")
    bootstrap_admin_key(ctx)
    return ctx


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: from the environment). State lives in app.state.ctx once started."""
    settings = settings or get_settings()
    logging.getLogger("app").setLevel(settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = start_context(settings)
        app.state.ctx = ctx
        try:
            yield
        finally:
            app.state.ctx = None
            stop_reaper(ctx)
            ctx.close()

    app = FastAPI(
        title="STEPH Service",
        version=app_package.__version__,
        description="Model merging for cancer survival prediction from whole-slide image feature bags "
        "(STEPH: sparse task-vector mixup with hypernetworks). Authenticate with "
        '`Authorization: Bearer <key>`; errors are `{"error": {"code", "message"}}`.',
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ctx = None
    app.state.metrics = AppMetrics(lambda: app.state.ctx)
    include_routers(app)
    install_openapi(app)  # issue 9: auth + error responses documented on every operation
    install_error_handlers(app)
    # issue 8: inside everything but the 500 catcher, so the key is checked before the size and the body
    app.add_middleware(AuthBeforeBody)
    app.add_middleware(BodySizeLimit, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMetrics, requests=app.state.metrics.requests, latency=app.state.metrics.latency)
    app.add_middleware(NoStoreUI)  # outermost: every /ui answer, error pages and redirects included
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` for uvicorn, built lazily so importing this module has no side effects."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
