"""Response models for bases, checkpoints and cohorts (built from ORM rows with from_attributes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class BaseOut(BaseModel):
    """A model family: θ₀'s sha256, the dims read from the file and the bin edges (days)."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="base id")
    name: str = Field(description="display name")
    encoder: str = Field(description="feature encoder the family expects, e.g. uni2-h")
    dims: dict[str, Any] = Field(description="dimensions read from θ₀: in_dim (D), hidden, attn, n_bins")
    bin_edges: list[float] = Field(description="survival time-bin edges in days (0, 365, …)")
    sha256: str = Field(description="sha256 of the uploaded θ₀ bytes")
    created_at: datetime = Field(description="when it was registered (UTC)")


class BaseList(BaseModel):
    items: list[BaseOut] = Field(description="this page")
    total: int = Field(description="rows in all")
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="rows skipped")


class CheckpointOut(BaseModel):
    """A registered checkpoint; `sha256` is that of the uploaded bytes, `tv_norms` the per-tensor ‖τ‖₂."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="checkpoint id")
    base_id: str = Field(description="the base (family) it was trained from")
    cancer: str = Field(description="the cancer it was trained on")
    name: str = Field(description="display name (default: the cancer)")
    description: str | None = Field(default=None, description="free text")
    sha256: str = Field(description="sha256 of the uploaded bytes (what `sha256sum file` prints)")
    tv_norms: dict[str, float] = Field(description="‖τ‖₂ of every parameter tensor of the task vector τ = θ_c − θ₀")
    created_at: datetime = Field(description="when it was registered (UTC)")


class CheckpointList(BaseModel):
    items: list[CheckpointOut] = Field(description="this page")
    total: int = Field(description="rows in all")
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="rows skipped")


class CohortPathIn(BaseModel):
    """JSON body of POST /cohorts for a server-side directory under STEPH_DATA_ROOT (admin only)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "brca", "base_id": "base_0123456789abcdef0123456789abcdef", "path": "brca_cohort"}]
        },
    )

    name: str = Field(min_length=1, max_length=200, description="display name of the cohort")
    base_id: str = Field(min_length=1, max_length=64, description="the base whose D the bags must match")
    path: str = Field(min_length=1, max_length=4096, description="absolute, or relative to the data root")


class CohortOut(BaseModel):
    """A registered cohort and its validation summary (patients, events, slides, patches min/median/max,
    splits)."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="cohort id")
    base_id: str = Field(description="the base it was validated against")
    name: str = Field(description="display name")
    source: Literal["upload", "path"] = Field(
        description="upload (stored copy) or path (server directory, used in place)"
    )
    summary: dict[str, Any] = Field(description="validation summary: patients, events, slides, patches per bag, splits")
    created_at: datetime = Field(description="when it was registered (UTC)")


class CohortList(BaseModel):
    items: list[CohortOut] = Field(description="this page")
    total: int = Field(description="rows in all")
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="rows skipped")


class MethodOut(BaseModel):
    name: str = Field(description="method name, used as `method` in POST /merge-jobs")
    paper: str | None = Field(default=None, description="link to the method's paper")
    summary: str | None = Field(default=None, description="one line on what it does")
    learned: bool | None = Field(default=None, description="whether it trains on the target cohort")
    params: list[dict[str, Any]] = Field(default_factory=list, description="[{name, type, default, help}]")


class MethodList(BaseModel):
    items: list[MethodOut] = Field(description="the methods")
    train_params: list[str] = Field(default_factory=list, description="training options accepted in `params`")


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"] = Field(description="ready when every check passed")
    checks: dict[str, bool] = Field(description="database, store, queue: true when reachable/writable")
