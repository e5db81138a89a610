"""Request/response models for merge jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class MergeJobCreate(BaseModel):
    """POST /merge-jobs body. `source_checkpoint_ids` defaults to every other checkpoint of the base."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1, max_length=64, examples=["steph"])
    base_id: str = Field(min_length=1, max_length=128)
    target_checkpoint_id: str = Field(min_length=1, max_length=128)
    source_checkpoint_ids: list[str] | None = Field(default=None, max_length=256)
    cohort_id: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"epochs": 5, "top_k": 3}])


class JobProgress(BaseModel):
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    stage: str | None = None


class MergeJobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    method: str
    base_id: str
    target_checkpoint_id: str
    source_checkpoint_ids: list[str]
    cohort_id: str
    params: dict[str, Any]
    progress: JobProgress | None = None
    comparison: dict[str, Any] | None = None
    error: str | None = None
    model_id: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


class MergeJobList(BaseModel):
    items: list[MergeJobOut]
    total: int
    limit: int
    offset: int
