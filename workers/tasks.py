"""Celery tasks: thin wrappers that take a job id and call the service (no logic here)."""

from __future__ import annotations

import functools
from typing import Any

from workers.celery_app import TASK_NAME, get_celery_app

celery_app = get_celery_app()


@functools.cache
def worker_context() -> Any:
    """The worker process's ServiceContext (DB session factory, artifact store), built once per process."""
    from app.services.context import build_context
    from app.settings import get_settings

    return build_context(get_settings())


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_merge_job_task(self: Any, job_id: str) -> None:
    """Run merge job `job_id`. A job still running elsewhere (fresh heartbeat) is retried after its lease."""
    from app.services.merge_jobs import BUSY, job_lease_s, run_merge_job

    ctx = worker_context()
    outcome = run_merge_job(ctx=ctx, job_id=str(job_id))
    if outcome == BUSY:
        raise self.retry(countdown=job_lease_s(ctx.settings))
