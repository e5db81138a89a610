"""Response models for merged models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str = Field(description="model id")
    job_id: str | None = Field(
        default=None, description="the merge job that produced it (null once that job is deleted)"
    )
    method: str = Field(description="merge method")
    base_id: str = Field(description="the model family")
    target_checkpoint_id: str = Field(description="the target cancer's checkpoint")
    params: dict[str, Any] = Field(description="method and training parameters as used")
    sources: list[dict[str, Any]] = Field(description="source checkpoints [{checkpoint_id, cancer, sha256}]")
    metrics: dict[str, Any] | None = Field(
        default=None, description="held-out metrics, the comparison with the target's own checkpoint, training summary"
    )
    provenance: dict[str, Any] = Field(description="inputs (with sha256), versions, device: enough to reproduce it")
    artifact_sha256: str = Field(description="sha256 of the model file (GET /models/{id}/artifact)")
    created_at: datetime | None = Field(default=None, description="when it was created (UTC)")
    promotion_status: str = Field(
        default="unchecked",
        description="issue 12: promoted (beat the target's own model in inner CV on the train split by the margin), "
        "not_promoted (still downloadable, not offered as the target's model by default) or unchecked (gate off)",
    )
    promotion: dict[str, Any] | None = Field(
        default=None, description="the gate's evidence: {status, reason, estimate {difference, se, ci_low, …}, gate}"
    )


class ModelList(BaseModel):
    items: list[ModelOut] = Field(description="this page")
    total: int = Field(description="rows in all")
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="rows skipped")
