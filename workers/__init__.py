"""Job queues: `build_queue(settings, ctx)` picks the embedded thread runner or Celery from `settings.queue`.

Both implement `app.services.queue.JobQueue`: `enqueue(job_id)`, `ping() -> bool`, `close()`, and
`known_job_ids()` (what the job reaper, app/services/reaper.py, asks before re-sending a queued job).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CeleryQueue:
    """Sends `steph.run_merge_job(job_id)` to Redis; `ping()` is a Redis PING with a short timeout."""

    def __init__(self, settings: Any) -> None:
        from workers.celery_app import make_celery

        self._url = settings.redis_url
        self._app = make_celery(settings)

    def enqueue(self, job_id: str) -> None:
        from workers.celery_app import QUEUE_NAME, TASK_NAME

        self._app.send_task(TASK_NAME, args=[str(job_id)], queue=QUEUE_NAME)

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(self._url, socket_timeout=1.0, socket_connect_timeout=1.0)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError, ValueError):
            return False

    def known_job_ids(self) -> set[str] | None:
        """Job ids the broker still holds (queued or delivered, not acknowledged); None when Redis is unreachable."""
        import redis

        from workers.broker import held_job_ids
        from workers.celery_app import QUEUE_NAME, TASK_NAME

        try:
            client = redis.Redis.from_url(self._url, socket_timeout=5.0, socket_connect_timeout=1.0)
            try:
                return held_job_ids(client, QUEUE_NAME, TASK_NAME)
            finally:
                client.close()
        except (redis.RedisError, OSError, ValueError):
            return None

    def close(self) -> None:
        self._app.close()


def build_queue(settings: Any, ctx: Any) -> Any:
    """The JobQueue for `settings.queue` ('embedded' default, or 'celery').

    ctx: the ServiceContext, or a zero-argument callable returning it (the embedded runner resolves it lazily,
    because the context itself holds the queue).
    """
    kind = str(getattr(settings, "queue", "embedded")).lower()
    if kind == "celery":
        return CeleryQueue(settings)
    if kind != "embedded":
        raise ValueError(f"unknown queue {kind!r}: set STEPH_QUEUE to 'embedded' or 'celery'")
    from workers.embedded import EmbeddedQueue

    get_ctx: Callable[[], Any] = ctx if callable(ctx) and not hasattr(ctx, "settings") else (lambda: ctx)
    return EmbeddedQueue(get_ctx, workers=int(getattr(settings, "embedded_workers", 1)))
