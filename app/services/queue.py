"""The job-queue interface. Implementations live in `workers/` (embedded thread runner, Celery)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from app.services.errors import ServiceUnavailable


@runtime_checkable
class JobQueue(Protocol):
    """Carries job ids only: the SQL table is the ledger (commit the job row first, then enqueue its id)."""

    def enqueue(self, job_id: str) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


def known_job_ids(queue: object) -> set[str] | None:
    """The job ids the queue still holds (waiting, or delivered but not yet acknowledged), or None when it
    cannot tell (no such method, or the broker is unreachable). The reaper re-enqueues a queued job only when
    this returns a set without it."""
    fn = getattr(queue, "known_job_ids", None)
    if not callable(fn):
        return None
    try:
        ids = fn()
    except Exception:  # an unreachable broker: nothing can be re-enqueued now anyway
        return None
    return None if ids is None else set(ids)


class UnavailableQueue:
    """Stands in when no queue could be built: enqueue raises ServiceUnavailable with the reason; ping is
    False."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def enqueue(self, job_id: str) -> None:
        raise ServiceUnavailable(f"merge jobs cannot be queued: {self.reason}")

    def ping(self) -> bool:
        return False

    def known_job_ids(self) -> set[str] | None:
        return None

    def close(self) -> None:
        return None
