"""Celery tasks: thin wrappers that take a job id and call the service (no logic here); plus the job reaper
thread of each worker process (started when the worker is ready, stopped at shut-down)."""

from __future__ import annotations

import functools
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown, worker_shutting_down

from workers.celery_app import TASK_NAME, get_celery_app

celery_app = get_celery_app()


@functools.cache
def worker_context() -> Any:
    """The worker process's ServiceContext (DB session factory, artifact store, and a Celery queue for the
    reaper's re-sends), built once per process."""
    from app.services.context import build_context
    from app.settings import get_settings
    from workers import CeleryQueue

    settings = get_settings()
    return build_context(settings, queue=CeleryQueue(settings))


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_merge_job_task(self: Any, job_id: str) -> None:
    """Run merge job `job_id`. A job still running elsewhere (fresh heartbeat) is retried after its lease."""
    from app.services.merge_jobs import BUSY, RELEASED, job_lease_s, run_merge_job

    ctx = worker_context()
    outcome = run_merge_job(ctx=ctx, job_id=str(job_id))
    if outcome == BUSY:
        raise self.retry(countdown=job_lease_s(ctx.settings))
    if outcome == RELEASED:  # this worker is stopping: the job is queued again (attempt given back); send it anew
        ctx.queue.enqueue(str(job_id))  # another worker, or this one after its restart, runs it


@celeryd_after_setup.connect
def name_the_runner(sender: str, **_: Any) -> None:
    """Jobs this worker claims carry its node name (`--hostname`, e.g. gpu1@host) in MergeJob.worker, which
    `python -m workers.health` matches: another worker on the same host never vouches for this one."""
    from app.services.job_runner import set_node_name

    set_node_name(str(sender))


@worker_ready.connect
def start_worker_reaper(**_: Any) -> None:
    """Every worker also runs the job reaper (app/services/reaper.py): jobs are recovered while any worker or
    API process is up."""
    import app.services.merge_jobs  # noqa: F401  (imported now: the first job is claimed without import delay)
    from app.services.reaper import start_reaper

    start_reaper(worker_context())


@worker_shutting_down.connect
def hand_back_running_job(**_: Any) -> None:
    """A warm shutdown (SIGTERM: a redeploy, `docker compose stop`) would wait for the running job to finish — up
    to the stop grace period, then SIGKILL spends an attempt. Instead the job stops at its next training step and
    goes back to the queue with its attempt given back (app.services.job_runner.request_shutdown), like the
    embedded runner's. The solo pool runs the job in this process, so the flag reaches it."""
    if worker_context.cache_info().currsize:
        from app.services.job_runner import request_shutdown

        request_shutdown(worker_context())


@worker_shutdown.connect
def stop_worker_reaper(**_: Any) -> None:
    from app.services.reaper import stop_reaper

    if worker_context.cache_info().currsize:  # nothing to stop if the worker never got ready
        stop_reaper(worker_context())
