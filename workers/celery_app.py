"""Celery wiring for production: Redis broker, JSON only, late acks, prefetch 1, tasks take a job id.

A worker that dies mid-job (kill -9, OOM, lost machine) never acks its message. The job reaper
(app/services/reaper.py, a thread in every API and worker process) puts the job back in the queue once its
heartbeat is older than `job_lease_s` (and re-sends queued jobs whose message Redis lost), so recovery takes
`job_lease_s + reaper_interval_s` (README, "Job guarantees"), not the visibility timeout. Redis still makes
the dead worker's message visible again after `visibility_timeout` seconds; that late copy finds the job
finished (or running elsewhere: retried later) and does nothing. `run_merge_job` bounds the retries with the
job's `attempts` counter (`max_job_attempts`), so a job that keeps killing workers ends as failed with the
reason. Keep the visibility timeout above your longest job (a redelivered message of a running job costs a
retry every lease, never a second run).
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

TASK_NAME = "steph.run_merge_job"
QUEUE_NAME = "steph-merge"


def _cfg(settings: Any, name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def make_celery(settings: Any) -> Celery:
    """A Celery app for `settings.redis_url` (broker; results are not stored: the SQL table is the ledger)."""
    visibility = float(_cfg(settings, "celery_visibility_timeout_s", 3600))
    app = Celery("steph", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE_NAME,
        task_routes={TASK_NAME: {"queue": QUEUE_NAME}},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3.0,
        # the API answers 503 quickly when Redis is down instead of hanging on publish retries
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        broker_transport_options={
            "visibility_timeout": visibility,
            # scan for unacked messages of dead workers every few seconds (kombu's default is ~100 s)
            "unacked_restore_interval": max(1, min(10, int(visibility // 2) or 1)),
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


@functools.cache
def get_celery_app() -> Celery:
    """The process-wide app built from `app.settings.get_settings()` (what `steph worker` runs)."""
    from app.settings import get_settings

    return make_celery(get_settings())


def __getattr__(name: str) -> Any:  # `celery -A workers.celery_app worker` looks up `app` / `celery`
    if name in ("app", "celery"):
        return get_celery_app()
    raise AttributeError(name)


def run_worker(argv: list[str] | None = None) -> int:
    """Start a Celery worker (what `steph worker` calls): solo pool, one job at a time per process.

    The solo pool runs the job in the worker process itself, so killing the worker kills the job and leaves
    its message unacked for redelivery; it also avoids forking after CUDA is initialised. Scale with more
    processes.
    Extra `argv` items are passed to `celery worker` (e.g. ["--loglevel", "DEBUG", "--hostname", "gpu1@%h"]).
    """
    import workers.tasks  # noqa: F401  (registers the task on the app)

    args = [
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "--queues",
        QUEUE_NAME,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *(argv or []),
    ]
    get_celery_app().worker_main(args)
    return 0
