"""SQLAlchemy 2.0 models: the service's tables (docs/CONTRACTS.md "Service data model").

Ids are strings (`<prefix>_<uuid4 hex>`); times are timezone-aware UTC (stored naive-UTC on SQLite and read
back aware). JSON columns are replaced, not mutated in place (assign a new dict/list so the change is
flushed). `artifact_key` / `task_vector_key` are ArtifactStore keys: the sha256 hex of the stored
safetensors object.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_JOB_STATUSES = ("queued", "running")
SCOPES = ("admin", "predict")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """DateTime(timezone=True) that always returns aware UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column: use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class OrmBase(DeclarativeBase):
    """Declarative base of every table (`OrmBase.metadata` is what Alembic compares against)."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class ApiKey(OrmBase):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ModelBase(OrmBase):
    """A model family: the shared initial weights θ₀ plus its settings (dims, bin edges, encoder name)."""

    __tablename__ = "bases"
    __table_args__ = (UniqueConstraint("family_key", name="uq_bases_family_key"),)  # issue 8

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    encoder: Mapped[str] = mapped_column(String(200))
    dims: Mapped[dict[str, Any]]
    bin_edges: Mapped[list[Any]]
    sha256: Mapped[str] = mapped_column(String(64))
    artifact_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # issue 8: sha256 of (file sha256, encoder, bin edges) — a family's identity, unique in the database so that
    # concurrent identical registrations make one row (NULL only for duplicates that predate migration 0002)
    family_key: Mapped[str | None] = mapped_column(String(64), default=None)


class Checkpoint(OrmBase):
    """A cancer-specific fine-tuned checkpoint of a base, with its task vector τ = θ_c − θ₀."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("base_id", "sha256", name="uq_checkpoints_base_sha256"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_id: Mapped[str] = mapped_column(ForeignKey("bases.id"), index=True)
    cancer: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    sha256: Mapped[str] = mapped_column(String(64))
    artifact_key: Mapped[str] = mapped_column(String(64))
    task_vector_key: Mapped[str] = mapped_column(String(64))
    tv_norms: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cohort(OrmBase):
    """A target cancer's labeled patients; `location` is a store-relative dir (upload) or a data-root path."""

    __tablename__ = "cohorts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_id: Mapped[str] = mapped_column(ForeignKey("bases.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MergeJob(OrmBase):
    """The job ledger. Checkpoint ids are plain strings (no FK): finished jobs stay as history."""

    __tablename__ = "merge_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    base_id: Mapped[str] = mapped_column(ForeignKey("bases.id"), index=True)
    target_checkpoint_id: Mapped[str] = mapped_column(String(64), index=True)
    source_checkpoint_ids: Mapped[list[Any]]
    cohort_id: Mapped[str] = mapped_column(ForeignKey("cohorts.id"), index=True)
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    comparison: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    model_id: Mapped[str | None] = mapped_column(String(64), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    # issue 9: completion webhook (URL per job) and its delivery record; why a comparison was skipped
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    webhook: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    comparison_skipped: Mapped[str | None] = mapped_column(Text, default=None)
    # issue 12: the promotion gate's outcome for the model it produced ({status, reason, collapsed})
    promotion: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class Model(OrmBase):
    """A merged model produced by a job (its artifact is a self-contained safetensors file in the store)."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("merge_jobs.id"), unique=True, default=None)
    method: Mapped[str] = mapped_column(String(64))
    base_id: Mapped[str] = mapped_column(ForeignKey("bases.id"), index=True)
    target_checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    params: Mapped[dict[str, Any]]
    sources: Mapped[list[Any]]
    metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    provenance: Mapped[dict[str, Any]]
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # issue 12: the promotion gate — promoted | not_promoted | unchecked, and its evidence (estimate, reason)
    promotion_status: Mapped[str] = mapped_column(String(16), default="unchecked", server_default="unchecked")
    promotion: Mapped[dict[str, Any] | None] = mapped_column(default=None)


# issue 9: the model registry (names, numbered versions, movable aliases and their history)
class RegisteredModel(OrmBase):
    """A registered model name (e.g. `brca-survival`) whose numbered versions each point at a models row."""

    __tablename__ = "registered_models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    tags: Mapped[dict[str, Any]]
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(OrmBase):
    """Version `version` of a registered model: one models row (a model may be registered under many names)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("registered_model_id", "version", name="uq_model_versions_version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    registered_model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    tags: Mapped[dict[str, Any]]
    created_by: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(OrmBase):
    """An alias (`champion`, `candidate` …) of a registered model: points at one of its versions."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("registered_model_id", "alias", name="uq_model_aliases_alias"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    registered_model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str | None] = mapped_column(String(200), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasEvent(OrmBase):
    """One change of an alias: who (API key id and name), when, from which version to which (None = unset)."""

    __tablename__ = "alias_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    registered_model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer, default=None)
    to_version: Mapped[int | None] = mapped_column(Integer, default=None)
    actor_key_id: Mapped[str | None] = mapped_column(String(64), default=None)
    actor: Mapped[str | None] = mapped_column(String(200), default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)


MergedModel = Model  # alias: "models" rows are merged models
ALL_TABLES: tuple[str, ...] = ("api_keys", "bases", "checkpoints", "cohorts", "merge_jobs", "models")
ALL_TABLES += ("registered_models", "model_versions", "model_aliases", "alias_events")  # issue 9
