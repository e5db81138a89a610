"""Response model of the garbage collection (POST /admin/gc, `steph gc`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GcObject(BaseModel):
    """One unreferenced store object."""

    key: str = Field(description="store key (sha256 of the bytes)")
    bytes: int = Field(description="size in bytes")


class GcReport(BaseModel):
    """What was removed (or, in a dry run, would be)."""

    dry_run: bool = Field(description="true: nothing was changed")
    objects: list[GcObject] = Field(description="store objects that no base, checkpoint or model references")
    bytes: int = Field(description="their total size in bytes")
    cohort_dirs: list[str] = Field(description="uploaded cohort directories without a cohort row")
    expired_jobs: list[str] = Field(description="finished jobs past STEPH_JOB_RETENTION_DAYS without a model")
