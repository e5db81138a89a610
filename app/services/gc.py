"""Garbage collection: store objects and uploaded cohort directories no row references, and expired jobs.

    referenced = {bases.artifact_key} ∪ {checkpoints.artifact_key, task_vector_key} ∪ {models.artifact_key}
    garbage    = {keys in the store} − referenced, older than settings.gc_grace_s
    expired    = finished jobs (succeeded/failed/cancelled) without an existing model whose finished_at is older
                 than settings.job_retention_days (unset: jobs never expire)

The grace period spares objects written by a registration or a merge job that has stored its artifact but not yet
committed its row. A dry run (the default everywhere) reports what would go and changes nothing. Only the store's
public methods are used (list_keys, modified_at, size, delete, list_cohort_ids, delete_cohort), so the local and
S3 adapters behave the same.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from app.db.models import Checkpoint, Cohort, MergeJob, Model, ModelBase, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")


def referenced_keys(s: Any) -> set[str]:
    """Every store key some row points at."""
    keys: set[str] = set(s.scalars(select(ModelBase.artifact_key)))
    keys |= set(s.scalars(select(Checkpoint.artifact_key))) | set(s.scalars(select(Checkpoint.task_vector_key)))
    keys |= set(s.scalars(select(Model.artifact_key)))
    return keys


def _old_enough(stamp: float | None, grace_s: float, now: float) -> bool:
    return stamp is not None and now - stamp >= grace_s


def expired_job_ids(s: Any, retention_days: float | None) -> list[str]:
    """Finished jobs past retention whose model (if any) no longer exists."""
    if retention_days is None:
        return []
    cutoff = utcnow() - timedelta(days=float(retention_days))
    stmt = select(MergeJob.id).where(
        MergeJob.status.in_(TERMINAL),
        MergeJob.finished_at.is_not(None),
        MergeJob.finished_at < cutoff,
        ~select(Model.id).where(Model.job_id == MergeJob.id).exists(),
    )
    return sorted(s.scalars(stmt))


def _garbage_objects(ctx: Any, refs: set[str], grace: float, now: float) -> list[dict[str, Any]]:
    stamp = getattr(ctx.store, "modified_at", None)
    found = []
    for key in sorted(set(ctx.store.list_keys()) - refs):
        # a store that cannot say an object's age gets no grace only when none is asked for (gc_grace_s = 0)
        if (grace <= 0) if stamp is None else _old_enough(stamp(key), grace, now):
            found.append({"key": key, "bytes": ctx.store.size(key) or 0})
    return found


def _garbage_cohorts(ctx: Any, s: Any, grace: float, now: float) -> list[str]:
    if not hasattr(ctx.store, "list_cohort_ids"):
        return []
    known = set(s.scalars(select(Cohort.id).where(Cohort.source == "upload")))
    stamp = getattr(ctx.store, "cohort_modified_at", None)
    return [
        cid
        for cid in ctx.store.list_cohort_ids()
        if cid not in known and ((grace <= 0) if stamp is None else _old_enough(stamp(cid), grace, now))
    ]


def collect_garbage(*, ctx: Any, dry_run: bool = True) -> dict[str, Any]:
    """Find (and unless `dry_run`, remove) unreferenced store objects and cohort dirs and expired jobs.

    Returns {dry_run, objects: [{key, bytes}], bytes, cohort_dirs: [id], expired_jobs: [id]}: what was (or
    would be) removed. Jobs are expired first, so their removal never frees objects a model still uses.
    """
    settings = ctx.settings
    grace = float(getattr(settings, "gc_grace_s", 3600.0))
    now = time.time()
    with ctx.session() as s:
        expired = expired_job_ids(s, getattr(settings, "job_retention_days", None))
        if expired and not dry_run:
            s.execute(delete(MergeJob).where(MergeJob.id.in_(expired)))
    with ctx.session() as s:
        objects = _garbage_objects(ctx, referenced_keys(s), grace, now)
        cohorts = _garbage_cohorts(ctx, s, grace, now)
    if not dry_run:
        objects = _delete_unreferenced(ctx, objects)
        for cid in cohorts:
            ctx.store.delete_cohort(cid)
    return {
        "dry_run": dry_run,
        "objects": objects,
        "bytes": sum(o["bytes"] for o in objects),
        "cohort_dirs": cohorts,
        "expired_jobs": expired,
    }


GC_BATCH = 100  # objects locked and deleted per transaction (PostgreSQL holds one advisory lock per object)


def _delete_unreferenced(ctx: Any, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delete each object after re-checking, under the objects' locks (app.services.store_refs), that no row
    started to reference it meanwhile: a registration of the same bytes committing now keeps its object."""
    from app.services.store_refs import lock_objects

    deleted = []
    for start in range(0, len(objects), GC_BATCH):
        batch = objects[start : start + GC_BATCH]
        with ctx.session() as s:
            lock_objects(s, [o["key"] for o in batch])
            refs = referenced_keys(s)
            deleted += [o for o in batch if o["key"] not in refs and ctx.store.delete(o["key"])]
    return deleted
