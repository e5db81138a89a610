"""Merge jobs: submit (202 + Location, Idempotency-Key), read, list, cancel. Admin scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminKey, Ctx, Page
from app.schemas.common import error_responses
from app.schemas.jobs import JobStatus, MergeJobCreate, MergeJobList, MergeJobOut
from app.services import merge_jobs as svc

router = APIRouter(prefix="/merge-jobs", tags=["merge jobs"])


@router.post(
    "",
    status_code=202,
    response_model=MergeJobOut,
    responses={
        200: {"model": MergeJobOut, "description": "replay of an Idempotency-Key"},
        **error_responses(404, 409, 422, 503),
    },
    summary="Queue a merge job; poll GET /merge-jobs/{id} (the finished job names its model_id)",
    description="Everything is validated before the job is queued (ids, method, params). Send an "
    "`Idempotency-Key` header to make retries safe: the same key and body return the same job (200). "
    "With `webhook_url`, the job POSTs a signed summary there when it ends (see X-STEPH-Signature).",
)
async def submit_job(
    ctx: Ctx,
    _key: AdminKey,
    body: MergeJobCreate,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="a client-chosen key that makes retries return the same job")
    ] = None,
) -> JSONResponse:
    job, created = await run_in_threadpool(
        svc.submit_merge_job, ctx=ctx, request=body.model_dump(), idempotency_key=idempotency_key or None
    )
    out = MergeJobOut.model_validate(job).model_dump(mode="json")
    return JSONResponse(out, status_code=202 if created else 200, headers={"Location": f"/merge-jobs/{job['id']}"})


@router.get(
    "",
    response_model=MergeJobList,
    summary="List merge jobs, newest first (filter by status, method)",
    description="Paged with ?limit and ?offset.",
)
def list_jobs(
    ctx: Ctx,
    _key: AdminKey,
    page: Page,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    method: Annotated[str | None, Query(max_length=64, description="only this merge method")] = None,
    base_id: Annotated[str | None, Query(max_length=64, description="only jobs on this base")] = None,
    target_checkpoint_id: Annotated[str | None, Query(max_length=64, description="only this target")] = None,
    cohort_id: Annotated[str | None, Query(max_length=64, description="only jobs on this cohort")] = None,
) -> MergeJobList:
    items, total = svc.list_jobs(
        ctx=ctx, status=status, method=method, limit=page.limit, offset=page.offset, base_id=base_id,
        target_checkpoint_id=target_checkpoint_id, cohort_id=cohort_id,
    )  # fmt: skip
    return MergeJobList(
        items=[MergeJobOut.model_validate(j) for j in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{job_id}",
    response_model=MergeJobOut,
    responses=error_responses(404),
    summary="A job: status, progress (epoch, step, loss, ETA), comparison when done, error when failed",
    description="Once the job has ended its progress is final (stage done / failed / cancelled, no ETA); "
    "`comparison_skipped` says why a succeeded job has no comparison; `webhook` records the delivery.",
)
def get_job(ctx: Ctx, _key: AdminKey, job_id: str) -> MergeJobOut:
    return MergeJobOut.model_validate(svc.get_job(ctx=ctx, job_id=job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=MergeJobOut,
    responses=error_responses(404, 409),
    summary="Cancel: a queued job at once, a running one at its next training step; finished → 409",
    description="A running job gets `cancel_requested: true` and stops at its next training step.",
)
def cancel_job(ctx: Ctx, _key: AdminKey, job_id: str) -> MergeJobOut:
    return MergeJobOut.model_validate(svc.cancel_merge_job(ctx=ctx, job_id=job_id))
