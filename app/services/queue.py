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


class UnavailableQueue:
    """Stands in when no queue could be built: enqueue raises ServiceUnavailable with the reason; ping is
    False."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def enqueue(self, job_id: str) -> None:
        raise ServiceUnavailable(f"merge jobs cannot be queued: {self.reason}")

    def ping(self) -> bool:
        return False

    def close(self) -> None:
        return None
