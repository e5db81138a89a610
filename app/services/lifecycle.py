"""Deleting models, merge jobs, cohorts and bases with referential safety (checkpoints: services.checkpoints).

Each delete checks, in the same transaction that removes the row, what still uses the thing, and refuses with a
Conflict (409) whose message names every user and whose `details.used_by` lists them. What is kept on purpose:

- a model is refused while a registered-model version points at it (move the aliases, delete the versions);
- a merge job is refused while queued/running (cancel it) or while the model it produced exists (the job is that
  model's provenance); deleting a model detaches it from its job (`job.model_id` = null, the job stays);
- a cohort is refused while any merge job names it; a base while checkpoints, cohorts, jobs or models use it.

Store objects of a deleted row are removed once no other row references them (content-addressed objects are
shared). A path cohort's directory belongs to the user and is never touched; an uploaded one is removed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from app.db import repositories as repo
from app.db.models import ACTIVE_JOB_STATUSES, Checkpoint, Cohort, MergeJob, Model, ModelBase
from app.services.errors import Conflict, not_found
from app.services.registry_versions import model_registrations
from app.services.store_refs import delete_unreferenced


def refuse_if_used(kind: str, ident: str, users: list[str], fix: str) -> None:
    """Raise Conflict naming up to 10 users (all of them in details.used_by)."""
    if not users:
        return
    shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    raise Conflict(f"{kind} {ident!r} is still used by {shown}; {fix}", details={"used_by": users})


def delete_model(*, ctx: Any, model_id: str) -> dict[str, Any]:
    """Remove a model row and (when unshared) its artifact; its job stays with model_id cleared."""
    with ctx.session() as s:
        repo.lock_rows(s, Model, [model_id])  # a version registration racing this: one of the two waits
        row = repo.get_model(s, model_id=model_id)
        if row is None:
            raise not_found("model", model_id, hint="list them with GET /models")
        refuse_if_used(
            "model",
            model_id,
            model_registrations(s, model_id),
            "move the aliases to another version (PUT /registered-models/{name}/aliases/{alias}) or delete them, "
            "then delete the versions (DELETE /registered-models/{name}/versions/{version})",
        )
        s.execute(update(MergeJob).where(MergeJob.model_id == model_id).values(model_id=None))
        key = row.artifact_key
        repo.delete_row(s, row=row)
    return {"deleted": f"model {model_id}", "store_objects_removed": delete_unreferenced(ctx, key)}


def delete_job(*, ctx: Any, job_id: str) -> dict[str, Any]:
    """Remove a finished merge job; refused while it is active or while its model exists."""
    with ctx.session() as s:
        job = repo.get_merge_job(s, job_id=job_id)
        if job is None:
            raise not_found("merge job", job_id, hint="list them with GET /merge-jobs")
        if job.status in ACTIVE_JOB_STATUSES:
            raise Conflict(
                f"merge job {job_id!r} is {job.status}; cancel it first (POST /merge-jobs/{job_id}/cancel)",
                details={"used_by": [f"{job.status} job {job_id}"]},
            )
        users = [f"model {m}" for m in s.scalars(select(Model.id).where(Model.job_id == job_id))]
        refuse_if_used("merge job", job_id, users, "it is the model's provenance: delete the model first")
        repo.delete_row(s, row=job)
    return {"deleted": f"merge job {job_id}", "store_objects_removed": []}


def delete_cohort(*, ctx: Any, cohort_id: str) -> dict[str, Any]:
    """Remove a cohort row and, for an uploaded cohort, its directory in the store."""
    with ctx.session() as s:
        repo.lock_rows(s, Cohort, [cohort_id])  # a job submitted now naming it: one of the two waits
        row = repo.get_cohort(s, cohort_id=cohort_id)
        if row is None:
            raise not_found("cohort", cohort_id, hint="list them with GET /cohorts")
        jobs = s.execute(select(MergeJob.id, MergeJob.status).where(MergeJob.cohort_id == cohort_id))
        users = [f"{status} job {jid}" for jid, status in jobs]
        refuse_if_used("cohort", cohort_id, users, "delete those merge jobs first (DELETE /merge-jobs/{id})")
        uploaded = row.source == "upload"
        repo.delete_row(s, row=row)
    if uploaded:
        ctx.store.delete_cohort(cohort_id)
    return {"deleted": f"cohort {cohort_id}", "store_objects_removed": [], "directory_removed": uploaded}


def base_dependents(s: Any, base_id: str) -> list[str]:
    """Every row that names base `base_id`: checkpoints, cohorts, merge jobs and models."""
    found: list[str] = []
    for cls, label in ((Checkpoint, "checkpoint"), (Cohort, "cohort"), (MergeJob, "merge job"), (Model, "model")):
        found += [f"{label} {i}" for i in s.scalars(select(cls.id).where(cls.base_id == base_id).order_by(cls.id))]
    return found


def delete_base(*, ctx: Any, base_id: str) -> dict[str, Any]:
    """Remove a base (θ₀) once nothing uses it; its store object goes when unshared."""
    with ctx.session() as s:
        row = s.get(ModelBase, base_id)
        if row is None:
            raise not_found("base", base_id, hint="list them with GET /bases")
        refuse_if_used("base", base_id, base_dependents(s, base_id), "delete them first")
        key = row.artifact_key
        repo.delete_row(s, row=row)
    return {"deleted": f"base {base_id}", "store_objects_removed": delete_unreferenced(ctx, key)}


def delete_checkpoint(*, ctx: Any, checkpoint_id: str) -> dict[str, Any]:
    """services.checkpoints.delete_checkpoint (409 while a model or an active job uses it), with a report."""
    from app.services.checkpoints import delete_checkpoint as delete

    with ctx.session() as s:
        row = repo.get_checkpoint(s, checkpoint_id=checkpoint_id)
        keys = () if row is None else (row.artifact_key, row.task_vector_key)
    before = {k for k in keys if ctx.store.exists(k)}
    delete(ctx, checkpoint_id=checkpoint_id)
    gone = [k for k in keys if k in before and not ctx.store.exists(k)]
    return {"deleted": f"checkpoint {checkpoint_id}", "store_objects_removed": gone}
