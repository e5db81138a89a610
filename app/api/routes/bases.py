"""Bases: POST /bases (multipart θ₀ + name, encoder), GET /bases, GET /bases/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminKey, Ctx, Page, receive_upload
from app.schemas.common import error_responses
from app.schemas.resources import BaseList, BaseOut
from app.services import bases as svc
from app.services.checkpoints import clean_label

router = APIRouter(prefix="/bases", tags=["bases"])


@router.post(
    "",
    status_code=201,
    response_model=BaseOut,
    responses={
        200: {"model": BaseOut, "description": "the same file, encoder and bin edges were already registered"},
        **error_responses(400, 404, 413, 422),
    },
    summary="Register a model family from its initial weights θ₀ (.safetensors or reference .pth)",
)
async def create_base(
    ctx: Ctx,
    _key: AdminKey,
    file: Annotated[UploadFile, File(description="θ₀: .safetensors or reference .pth")],
    name: Annotated[str, Form(max_length=200, description="display name of the family")],
    encoder: Annotated[str, Form(max_length=200, description="feature encoder of the bags, e.g. uni2-h")],
    n_bins: Annotated[int | None, Form(ge=1, le=1000, description="time bins (default: the head's outputs)")] = None,
    bin_width_days: Annotated[
        float | None, Form(ge=1, le=36500, allow_inf_nan=False, description="days per bin")
    ] = None,
) -> JSONResponse:
    name_, encoder_ = clean_label(name, "name", max_len=200), clean_label(encoder, "encoder", max_len=200)
    upload = await receive_upload(ctx, file, svc.CHECKPOINT_SUFFIXES, what="base file")
    try:
        row, created = await run_in_threadpool(
            svc.register_base,
            ctx,
            upload=upload,
            name=name_,
            encoder=encoder_,
            n_bins=n_bins,
            bin_width_days=bin_width_days,
        )
    finally:
        upload.path.unlink(missing_ok=True)
    body = BaseOut.model_validate(row).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200, headers={"Location": f"/bases/{row.id}"})


@router.get("", response_model=BaseList, summary="List bases")
def list_bases(ctx: Ctx, _key: AdminKey, page: Page) -> BaseList:
    rows, total = svc.list_bases(ctx, limit=page.limit, offset=page.offset)
    return BaseList(items=[BaseOut.model_validate(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/{base_id}", response_model=BaseOut, responses=error_responses(404), summary="One base")
def get_base(ctx: Ctx, _key: AdminKey, base_id: str) -> BaseOut:
    return BaseOut.model_validate(svc.get_base(ctx, base_id=base_id))
