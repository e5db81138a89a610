"""Repository functions: `fn(session, *, keyword-only args)`. They flush, never commit (the caller owns the
transaction). `get_*` return None when absent; services turn that into NotFound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.db.models import (
    ACTIVE_JOB_STATUSES,
    JOB_STATUSES,
    ApiKey,
    Checkpoint,
    Cohort,
    MergeJob,
    Model,
    ModelBase,
    OrmBase,
    utcnow,
)


def new_id(prefix: str) -> str:
    """`<prefix>_<uuid4 hex>`, e.g. `ckpt_3f2a…`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _add(session: Session, row: OrmBase) -> Any:
    session.add(row)
    session.flush()
    return row


def _page(session: Session, stmt: Any, *, limit: int, offset: int) -> tuple[list[Any], int]:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(session.scalars(stmt.limit(limit).offset(offset)))
    return rows, int(total)


# --- API keys -----------------------------------------------------------------------------------------------
def add_api_key(session: Session, *, name: str, prefix: str, key_hash: str, scope: str) -> ApiKey:
    return _add(session, ApiKey(id=new_id("key"), name=name, prefix=prefix, key_hash=key_hash, scope=scope))


def get_api_key_by_hash(session: Session, *, key_hash: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


def find_api_keys(session: Session, *, id_or_prefix: str) -> list[ApiKey]:
    """Keys whose id equals, or whose visible prefix starts with, `id_or_prefix` (literally: `_` and `%` are
    not wildcards)."""
    stmt = select(ApiKey).where((ApiKey.id == id_or_prefix) | ApiKey.prefix.startswith(id_or_prefix, autoescape=True))
    return list(session.scalars(stmt))


def list_api_keys(session: Session, *, include_revoked: bool = True) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(stmt))


def revoke_api_key(session: Session, *, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


# --- bases --------------------------------------------------------------------------------------------------
def find_bases(session: Session, *, sha256: str) -> list[ModelBase]:
    return list(session.scalars(select(ModelBase).where(ModelBase.sha256 == sha256).order_by(ModelBase.created_at)))


def add_base(session: Session, **fields: Any) -> ModelBase:
    """fields: name, encoder, dims, bin_edges, sha256, artifact_key (id generated when absent)."""
    fields.setdefault("id", new_id("base"))
    return _add(session, ModelBase(**fields))


def get_base(session: Session, *, base_id: str) -> ModelBase | None:
    return session.get(ModelBase, base_id)


def list_bases(session: Session, *, limit: int = 100, offset: int = 0) -> tuple[list[ModelBase], int]:
    return _page(session, select(ModelBase).order_by(ModelBase.created_at, ModelBase.id), limit=limit, offset=offset)


# --- checkpoints --------------------------------------------------------------------------------------------
def add_checkpoint(session: Session, **fields: Any) -> Checkpoint:
    """fields: base_id, cancer, name, description, sha256, artifact_key, task_vector_key, tv_norms."""
    fields.setdefault("id", new_id("ckpt"))
    return _add(session, Checkpoint(**fields))


def get_checkpoint(session: Session, *, checkpoint_id: str) -> Checkpoint | None:
    return session.get(Checkpoint, checkpoint_id)


def find_checkpoint(session: Session, *, base_id: str, sha256: str) -> Checkpoint | None:
    stmt = select(Checkpoint).where(Checkpoint.base_id == base_id, Checkpoint.sha256 == sha256)
    return session.scalar(stmt)


def list_checkpoints(
    session: Session,
    *,
    base_id: str | None = None,
    cancer: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Checkpoint], int]:
    stmt = select(Checkpoint).order_by(Checkpoint.created_at, Checkpoint.id)
    if base_id is not None:
        stmt = stmt.where(Checkpoint.base_id == base_id)
    if cancer is not None:
        stmt = stmt.where(Checkpoint.cancer == cancer)
    return _page(session, stmt, limit=limit, offset=offset)


def checkpoint_dependents(session: Session, *, checkpoint: Checkpoint) -> list[str]:
    """What keeps a checkpoint from being deleted: models using it (target or source) and queued/running jobs
    using it. Returns human-readable descriptions, e.g. ["model mdl_…", "running job job_…"]."""
    found: list[str] = []
    for model in session.scalars(select(Model).where(Model.base_id == checkpoint.base_id)):
        source_ids = {s.get("checkpoint_id") for s in (model.sources or []) if isinstance(s, dict)}
        if model.target_checkpoint_id == checkpoint.id or checkpoint.id in source_ids:
            found.append(f"model {model.id}")
    stmt = select(MergeJob).where(MergeJob.base_id == checkpoint.base_id, MergeJob.status.in_(ACTIVE_JOB_STATUSES))
    for job in session.scalars(stmt):
        if job.target_checkpoint_id == checkpoint.id or checkpoint.id in (job.source_checkpoint_ids or []):
            found.append(f"{job.status} job {job.id}")
    return found


def take_write_lock(session: Session) -> None:
    """SQLite (which ignores FOR UPDATE): take the database write lock for the rest of the transaction. Its driver
    begins the transaction at the first write; an UPDATE that matches no row is enough."""
    session.execute(
        update(ModelBase).where(ModelBase.id == "").values(id=ModelBase.id).execution_options(synchronize_session=False)
    )


def lock_rows(session: Session, model: Any, ids: list[str]) -> set[str]:
    """Hold the rows `ids` of `model` (a table with an `id` column) for the rest of the transaction and return the
    ids that still exist. PostgreSQL: SELECT … FOR UPDATE, in id order (two lockers never deadlock). SQLite, which
    ignores FOR UPDATE: a no-op write first takes its database write lock, so the rows read afterwards stay as
    read until the commit. Used where a delete and a new row that depends on the deleted one race (a checkpoint
    deleted while a job naming it is submitted)."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    stmt = select(model.id).where(model.id.in_(wanted)).order_by(model.id)
    if session.get_bind().dialect.name == "postgresql":
        return set(session.scalars(stmt.with_for_update()))
    take_write_lock(session)
    return set(session.scalars(stmt))


def object_referenced(session: Session, *, key: str, exclude_checkpoint_id: str | None = None) -> bool:
    """Whether any row other than `exclude_checkpoint_id` still points at store object `key`."""
    ckpt_stmt = (
        select(func.count())
        .select_from(Checkpoint)
        .where((Checkpoint.artifact_key == key) | (Checkpoint.task_vector_key == key))
    )
    if exclude_checkpoint_id is not None:
        ckpt_stmt = ckpt_stmt.where(Checkpoint.id != exclude_checkpoint_id)
    n = session.scalar(ckpt_stmt) or 0
    n += session.scalar(select(func.count()).select_from(ModelBase).where(ModelBase.artifact_key == key)) or 0
    n += session.scalar(select(func.count()).select_from(Model).where(Model.artifact_key == key)) or 0
    return n > 0


def delete_row(session: Session, *, row: OrmBase) -> None:
    session.delete(row)
    session.flush()


# --- cohorts ------------------------------------------------------------------------------------------------
def add_cohort(session: Session, **fields: Any) -> Cohort:
    """fields: base_id, name, source ('upload'|'path'), location, summary (id generated when absent)."""
    fields.setdefault("id", new_id("coh"))
    return _add(session, Cohort(**fields))


def get_cohort(session: Session, *, cohort_id: str) -> Cohort | None:
    return session.get(Cohort, cohort_id)


def list_cohorts(
    session: Session, *, base_id: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Cohort], int]:
    stmt = select(Cohort).order_by(Cohort.created_at, Cohort.id)
    if base_id is not None:
        stmt = stmt.where(Cohort.base_id == base_id)
    return _page(session, stmt, limit=limit, offset=offset)


# --- merge jobs and models (basic access; the jobs services own the lifecycle) ------------------------------
def get_merge_job(session: Session, *, job_id: str) -> MergeJob | None:
    return session.get(MergeJob, job_id)


def get_model(session: Session, *, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def jobs_by_status(session: Session) -> dict[str, int]:
    """{status: count} for every status (zeros included): the /metrics jobs gauge."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, n in session.execute(select(MergeJob.status, func.count()).group_by(MergeJob.status)):
        counts[status] = int(n)
    return counts


def count_rows(session: Session, *, tables: Sequence[type[OrmBase]] | None = None) -> dict[str, int]:
    """{table name: row count} — used by tests to show that a refused request stored nothing."""
    classes = tables or (ApiKey, ModelBase, Checkpoint, Cohort, MergeJob, Model)
    return {c.__tablename__: int(session.scalar(select(func.count()).select_from(c)) or 0) for c in classes}
