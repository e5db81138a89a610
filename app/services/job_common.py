"""Small shared pieces of the merge-job services: outcomes, time, ids, settings access, ORM access."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

RAN, DONE, BUSY, MISSING = "ran", "done", "busy", "missing"
RELEASED = "released"  # run_merge_job handed the job back (queued again) because its process is stopping
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: read them as UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def cfg(settings: Any, name: str, default: Any) -> Any:
    """A setting that may not exist in older Settings versions."""
    value = getattr(settings, name, None)
    return default if value is None else value


def job_lease_s(settings: Any) -> float:
    """Seconds without a heartbeat after which a running job counts as interrupted (its worker died)."""
    return float(cfg(settings, "job_lease_s", 30.0))


def reaper_interval_s(settings: Any) -> float:
    """Seconds between two passes of the job reaper (0 turns it off; see app/services/reaper.py)."""
    return float(cfg(settings, "reaper_interval_s", 10.0))


def exhausted_reason(attempts: int, max_attempts: int) -> str:
    """The `error` of a job failed because its worker died `attempts` times (>= max_attempts)."""
    return (
        f"worker died {attempts} times: the job was interrupted {attempts} times "
        f"(its worker died or the service restarted while it ran; "
        f"max_job_attempts = {max_attempts}). Check the worker logs "
        "for out-of-memory kills, then submit the job again"
    )


def orm() -> Any:
    """The ORM classes (imported lazily so the workers package stays light)."""
    from app.db import models as m

    return SimpleNamespace(
        MergeJob=m.MergeJob, Model=m.Model, Base=m.ModelBase, Checkpoint=m.Checkpoint, Cohort=m.Cohort
    )
