"""Checkpoints: POST /checkpoints (multipart file + cancer, base_id), GET, DELETE (409 while used)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminKey, Ctx, Page, receive_upload
from app.schemas.common import error_responses
from app.schemas.resources import CheckpointList, CheckpointOut
from app.services import checkpoints as svc
from app.services.bases import CHECKPOINT_SUFFIXES

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])


@router.post(
    "",
    status_code=201,
    response_model=CheckpointOut,
    responses={
        200: {"model": CheckpointOut, "description": "the same bytes were already registered"},
        **error_responses(400, 404, 413, 422),
    },
    summary="Register a cancer-specific checkpoint against its base; stores θ_c and τ = θ_c − θ₀",
)
async def create_checkpoint(
    ctx: Ctx,
    _key: AdminKey,
    file: Annotated[UploadFile, File(description=".safetensors or reference .pth")],
    cancer: Annotated[str, Form(max_length=100, description="the cancer it was trained on, e.g. brca")],
    base_id: Annotated[str, Form(max_length=64, description="the base (θ₀) it was fine-tuned from")],
    name: Annotated[str | None, Form(max_length=200, description="display name (default: the cancer)")] = None,
    description: Annotated[str | None, Form(max_length=2000, description="free text")] = None,
) -> JSONResponse:
    cancer_ = svc.clean_label(cancer, "cancer")
    name_ = svc.clean_label(name, "name", max_len=200, required=False)
    description_ = (description or "").strip() or None
    upload = await receive_upload(ctx, file, CHECKPOINT_SUFFIXES, what="checkpoint file")
    try:
        row, created = await run_in_threadpool(
            svc.register_checkpoint,
            ctx,
            upload=upload,
            cancer=cancer_,
            base_id=base_id,
            name=name_,
            description=description_,
        )
    finally:
        upload.path.unlink(missing_ok=True)
    body = CheckpointOut.model_validate(row).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200, headers={"Location": f"/checkpoints/{row.id}"})


@router.get("", response_model=CheckpointList, summary="List checkpoints (filter by base and cancer)")
def list_checkpoints(
    ctx: Ctx,
    _key: AdminKey,
    page: Page,
    base_id: Annotated[str | None, Query(max_length=64, description="only checkpoints of this base")] = None,
    cancer: Annotated[str | None, Query(max_length=100, description="only this cancer")] = None,
) -> CheckpointList:
    rows, total = svc.list_checkpoints(ctx, base_id=base_id, cancer=cancer, limit=page.limit, offset=page.offset)
    return CheckpointList(
        items=[CheckpointOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{checkpoint_id}", response_model=CheckpointOut, responses=error_responses(404), summary="One checkpoint")
def get_checkpoint(ctx: Ctx, _key: AdminKey, checkpoint_id: str) -> CheckpointOut:
    return CheckpointOut.model_validate(svc.get_checkpoint(ctx, checkpoint_id=checkpoint_id))


@router.delete(
    "/{checkpoint_id}",
    status_code=204,
    responses=error_responses(404, 409),
    summary="Delete a checkpoint (refused with 409 while a model or a queued/running job uses it)",
)
def delete_checkpoint(ctx: Ctx, _key: AdminKey, checkpoint_id: str) -> Response:
    svc.delete_checkpoint(ctx, checkpoint_id=checkpoint_id)
    return Response(status_code=204)
