"""Small shared pieces of the merge-job services: outcomes, time, ids, settings access, ORM access."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

RAN, DONE, BUSY, MISSING = "ran", "done", "busy", "missing"
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


def orm() -> Any:
    """The ORM classes (imported lazily so the workers package stays light)."""
    from app.db import models as m

    return SimpleNamespace(
        MergeJob=m.MergeJob, Model=m.Model, Base=m.ModelBase, Checkpoint=m.Checkpoint, Cohort=m.Cohort
    )
