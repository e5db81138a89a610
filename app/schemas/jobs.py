"""Request/response models for merge jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class MergeJobCreate(BaseModel):
    """POST /merge-jobs body. `source_checkpoint_ids` defaults to every other checkpoint of the base."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "method": "steph",
                    "base_id": "base_0123456789abcdef0123456789abcdef",
                    "target_checkpoint_id": "ckpt_0123456789abcdef0123456789abcdef",
                    "cohort_id": "coh_0123456789abcdef0123456789abcdef",
                    "params": {"epochs": 5, "topk": 3},
                }
            ]
        },
    )

    method: str = Field(
        min_length=1, max_length=64, examples=["steph"], description="merge method (GET /methods lists them)"
    )
    base_id: str = Field(min_length=1, max_length=128, description="the model family (base) every checkpoint shares")
    target_checkpoint_id: str = Field(min_length=1, max_length=128, description="the target cancer's checkpoint")
    source_checkpoint_ids: list[str] | None = Field(
        default=None, max_length=256, description="source checkpoints (default: every other checkpoint of the base)"
    )
    cohort_id: str = Field(min_length=1, max_length=128, description="the target cancer's labelled cohort")
    params: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"epochs": 5, "topk": 3}],
        description="method parameters (GET /methods) and training options (epochs, lr, accum, seed …)",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2000,
        description="optional http(s) URL that receives a signed POST when the job ends (X-STEPH-Signature)",
    )


class JobProgress(BaseModel):
    """Training progress; once the job has ended it is final (stage done / failed / cancelled, no ETA)."""

    epoch: int | None = Field(default=None, description="current epoch (1-based)")
    epochs: int | None = Field(default=None, description="epochs in all")
    step: int | None = Field(default=None, description="optimiser steps done")
    total_steps: int | None = Field(default=None, description="optimiser steps in all")
    loss: float | None = Field(default=None, description="latest training loss")
    elapsed_s: float | None = Field(default=None, description="seconds of training so far")
    eta_s: float | None = Field(default=None, description="estimated seconds left (null once the job has ended)")
    stage: str | None = Field(default=None, description="loading inputs, training, done, failed or cancelled")


class MergeJobOut(BaseModel):
    """A merge job: the request, its status and progress, and its outcome."""

    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str = Field(description="job id")
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled")
    method: str = Field(description="merge method")
    base_id: str = Field(description="the model family")
    target_checkpoint_id: str = Field(description="the target cancer's checkpoint")
    source_checkpoint_ids: list[str] = Field(description="the source checkpoints used")
    cohort_id: str = Field(description="the target cancer's cohort")
    params: dict[str, Any] = Field(description="the parameters as submitted")
    progress: JobProgress | None = Field(default=None, description="training progress (final once ended)")
    comparison: dict[str, Any] | None = Field(
        default=None, description="test C-index of the merged model vs the target's own checkpoint"
    )
    comparison_skipped: str | None = Field(
        default=None, description="why there is no comparison (e.g. the cohort has no test split)"
    )
    error: str | None = Field(default=None, description="why the job failed or was cancelled")
    model_id: str | None = Field(default=None, description="the merged model (succeeded jobs)")
    attempts: int = Field(default=0, description="times a worker started the job")
    cancel_requested: bool = Field(default=False, description="a cancel was asked for while it ran")
    worker: str | None = Field(default=None, description="host:pid:thread of the worker that ran it last")
    created_at: datetime | None = Field(default=None, description="when it was submitted (UTC)")
    started_at: datetime | None = Field(default=None, description="when the last attempt started (UTC)")
    finished_at: datetime | None = Field(default=None, description="when it ended (UTC)")
    heartbeat_at: datetime | None = Field(default=None, description="last sign of life of its worker (UTC)")
    webhook_url: str | None = Field(default=None, description="where the completion webhook goes")
    webhook: dict[str, Any] | None = Field(
        default=None, description="delivery record: {url, delivered, attempts, last_status, last_error}"
    )
    promotion: dict[str, Any] | None = Field(
        default=None,
        description="issue 12: the promotion gate's outcome {status: promoted | not_promoted | unchecked, reason, "
        "evidence (weak | clear: whether the 95 % interval of a promotion stays above the margin), collapsed "
        "(STEPH: every merge weight 0 on every train bag), no_source_knowledge (STEPH: λ ≈ 1 on every train "
        "bag)}; the estimate itself is on the model",
    )


class MergeJobList(BaseModel):
    items: list[MergeJobOut] = Field(description="this page")
    total: int = Field(description="rows in all")
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="rows skipped")
