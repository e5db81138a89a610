"""ServiceContext: what every service receives from its caller (the API app, a Celery task, the CLI)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import make_engine, make_session_factory, session_scope
from app.services.queue import JobQueue, UnavailableQueue
from app.settings import Settings
from app.storage import open_store
from app.storage.store import ArtifactStore

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """settings, a session factory, the artifact store and the job queue (None until `start_queue`)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    queue: JobQueue | None = None
    engine: Engine | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # per-context caches (e.g. the model cache)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits at the end of the block and rolls back on an exception."""
        with session_scope(self.session_factory) as s:
            yield s

    def close(self) -> None:
        """Close the queue and dispose of the engine (idempotent)."""
        if self.queue is not None:
            try:
                self.queue.close()
            finally:
                self.queue = None
        if self.engine is not None:
            self.engine.dispose()


def build_context(settings: Settings, *, queue: JobQueue | None = None) -> ServiceContext:
    """A context for `settings`: engine + session factory on `settings.database_url`, the store from
    `app.storage.open_store` (STEPH_STORE: local directory at `settings.store_root`, or an S3 bucket with that
    directory as scratch cache). The queue is whatever is passed (see `start_queue` to build one)."""
    if settings.store_root is None:  # Settings' validator fills it; only a later assignment can unset it
        raise ValueError("settings.store_root is not set; build Settings through its constructor")
    engine = make_engine(settings.database_url)
    store = open_store(settings)  # STEPH_STORE: the local directory or an S3-compatible bucket
    return ServiceContext(
        settings=settings,
        session_factory=make_session_factory(engine),
        store=store,
        queue=queue,
        engine=engine,
    )


def start_queue(ctx: ServiceContext) -> JobQueue:
    """Build the queue for `ctx.settings.queue` with `workers.build_queue` and attach it to `ctx`.

    When the workers package is not importable the context gets an UnavailableQueue whose `enqueue` raises a
    ServiceUnavailable naming the reason (reads and registrations still work).
    """
    try:
        from workers import build_queue
    except ImportError as exc:
        log.warning("job queue unavailable: %s", exc)
        ctx.queue = UnavailableQueue(f"the workers package could not be imported ({exc.__class__.__name__})")
        return ctx.queue
    ctx.queue = build_queue(ctx.settings, lambda: ctx)
    return ctx.queue
