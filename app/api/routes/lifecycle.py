"""Lifecycle: DELETE for models, merge jobs, cohorts and bases (409 names what still uses them), and the
admin garbage collection of unreferenced store objects / expired jobs (dry run by default). Admin scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminKey, Ctx
from app.schemas.common import error_responses
from app.schemas.lifecycle import GcReport
from app.services import gc
from app.services import lifecycle as svc

router = APIRouter()
CONFLICT = "409 lists every user in `error.details.used_by`."


@router.delete(
    "/models/{model_id}",
    status_code=204,
    tags=["models"],
    responses=error_responses(404, 409),
    summary="Delete a model (409 while a registered version or alias points at it)",
    description="Removes the model row and, when no other row shares it, its artifact. The job that produced it "
    "stays, with model_id cleared. " + CONFLICT,
)
def delete_model(ctx: Ctx, _key: AdminKey, model_id: str) -> Response:
    svc.delete_model(ctx=ctx, model_id=model_id)
    return Response(status_code=204)


@router.delete(
    "/merge-jobs/{job_id}",
    status_code=204,
    tags=["merge jobs"],
    responses=error_responses(404, 409),
    summary="Delete a finished merge job (409 while queued/running, or while the model it produced exists)",
    description="A succeeded job is its model's provenance: delete the model first. " + CONFLICT,
)
def delete_job(ctx: Ctx, _key: AdminKey, job_id: str) -> Response:
    svc.delete_job(ctx=ctx, job_id=job_id)
    return Response(status_code=204)


@router.delete(
    "/cohorts/{cohort_id}",
    status_code=204,
    tags=["cohorts"],
    responses=error_responses(404, 409),
    summary="Delete a cohort (409 while a merge job names it); an uploaded cohort's files go too",
    description="A cohort registered from a server path keeps its directory (it belongs to you). " + CONFLICT,
)
def delete_cohort(ctx: Ctx, _key: AdminKey, cohort_id: str) -> Response:
    svc.delete_cohort(ctx=ctx, cohort_id=cohort_id)
    return Response(status_code=204)


@router.delete(
    "/bases/{base_id}",
    status_code=204,
    tags=["bases"],
    responses=error_responses(404, 409),
    summary="Delete a base (409 while checkpoints, cohorts, jobs or models use it)",
    description="Its θ₀ object is removed from the store when no other base shares the bytes. " + CONFLICT,
)
def delete_base(ctx: Ctx, _key: AdminKey, base_id: str) -> Response:
    svc.delete_base(ctx=ctx, base_id=base_id)
    return Response(status_code=204)


@router.post(
    "/admin/gc",
    response_model=GcReport,
    tags=["admin"],
    summary="Garbage-collect unreferenced store objects, orphan cohort dirs and expired jobs (dry run first)",
    description="`dry_run=true` (the default) only reports. Objects younger than STEPH_GC_GRACE_S are spared; "
    "finished jobs without a model expire after STEPH_JOB_RETENTION_DAYS (unset: never). The same as `steph gc`.",
)
async def collect_garbage(
    ctx: Ctx,
    _key: AdminKey,
    dry_run: Annotated[bool, Query(description="report only; pass false to delete")] = True,
) -> GcReport:
    report = await run_in_threadpool(lambda: gc.collect_garbage(ctx=ctx, dry_run=dry_run))
    return GcReport.model_validate(report)
