"""Response models for merged models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    job_id: str | None = None
    method: str
    base_id: str
    target_checkpoint_id: str
    params: dict[str, Any]
    sources: list[dict[str, Any]]
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any]
    artifact_sha256: str
    created_at: datetime | None = None


class ModelList(BaseModel):
    items: list[ModelOut]
    total: int
    limit: int
    offset: int
