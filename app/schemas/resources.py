"""Response models for bases, checkpoints and cohorts (built from ORM rows with from_attributes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class BaseOut(BaseModel):
    """A model family: θ₀'s sha256, the dims read from the file and the bin edges (days)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    encoder: str
    dims: dict[str, Any]
    bin_edges: list[float]
    sha256: str
    created_at: datetime


class BaseList(BaseModel):
    items: list[BaseOut]
    total: int
    limit: int
    offset: int


class CheckpointOut(BaseModel):
    """A registered checkpoint; `sha256` is that of the uploaded bytes, `tv_norms` the per-tensor ‖τ‖₂."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    base_id: str
    cancer: str
    name: str
    description: str | None = None
    sha256: str
    tv_norms: dict[str, float]
    created_at: datetime


class CheckpointList(BaseModel):
    items: list[CheckpointOut]
    total: int
    limit: int
    offset: int


class CohortPathIn(BaseModel):
    """JSON body of POST /cohorts for a server-side directory under STEPH_DATA_ROOT (admin only)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    base_id: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1, max_length=4096, description="absolute, or relative to the data root")


class CohortOut(BaseModel):
    """A registered cohort and its validation summary (patients, events, slides, patches min/median/max,
    splits)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    base_id: str
    name: str
    source: Literal["upload", "path"]
    summary: dict[str, Any]
    created_at: datetime


class CohortList(BaseModel):
    items: list[CohortOut]
    total: int
    limit: int
    offset: int


class MethodOut(BaseModel):
    name: str
    paper: str | None = None
    summary: str | None = None
    learned: bool | None = None
    params: list[dict[str, Any]] = Field(default_factory=list, description="[{name, type, default, help}]")


class MethodList(BaseModel):
    items: list[MethodOut]
    train_params: list[str] = Field(default_factory=list, description="training options accepted in `params`")


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, bool]
