"""Merged models: list, read, download the artifact (ETag = sha256): predict scope; upload an artifact: admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminKey, Ctx, Page, PredictKey, receive_upload
from app.schemas.common import error_responses
from app.schemas.models import ModelList, ModelOut
from app.services import models as svc
from app.services.model_upload import register_model_upload
from app.services.registry import Actor
from app.services.registry_versions import register_version

router = APIRouter(prefix="/models", tags=["models"])


@router.get(
    "",
    response_model=ModelList,
    summary="List merged models, newest first",
    description="Every model a merge job produced; filter by method and base. Register one under a name with "
    "POST /registered-models/{name}/versions to refer to it as name@alias.",
)
def list_models(
    ctx: Ctx,
    _key: PredictKey,
    page: Page,
    method: Annotated[str | None, Query(max_length=64, description="only this merge method")] = None,
    base_id: Annotated[str | None, Query(max_length=64, description="only this base")] = None,
) -> ModelList:
    items, total = svc.list_models(ctx=ctx, method=method, base_id=base_id, limit=page.limit, offset=page.offset)
    return ModelList(
        items=[ModelOut.model_validate(m) for m in items], total=total, limit=page.limit, offset=page.offset
    )


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    responses={
        200: {"model": ModelOut, "description": "the same bytes were already uploaded for this base and target"},
        **error_responses(400, 404, 413, 422),
    },
    summary="Upload a model artifact made elsewhere (e.g. `steph merge --out`) so it can be registered and used",
    description="The file must be a complete STEPH model artifact (its content digest is checked) whose dims and "
    "time bins are the base's. With `register_as`, it also becomes the next version of that registered name.",
)
async def upload_model(
    ctx: Ctx,
    key: AdminKey,
    file: Annotated[UploadFile, File(description="the model artifact (.safetensors written by steph)")],
    base_id: Annotated[str, Form(max_length=64, description="the base (family) the model belongs to")],
    target_checkpoint_id: Annotated[str, Form(max_length=64, description="the target cancer's checkpoint")],
    register_as: Annotated[
        str | None, Form(max_length=100, description="optional registered name to add it to as a new version")
    ] = None,
) -> JSONResponse:
    upload = await receive_upload(ctx, file, (".safetensors",), what="model artifact")
    try:
        model, created = await run_in_threadpool(
            register_model_upload, ctx, upload=upload, base_id=base_id, target_checkpoint_id=target_checkpoint_id
        )
    finally:
        upload.path.unlink(missing_ok=True)
    if register_as:
        await run_in_threadpool(
            lambda: register_version(ctx=ctx, name=register_as, model_ref=model["id"], actor=Actor.from_key(key))
        )
    body = ModelOut.model_validate(model).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200, headers={"Location": f"/models/{model['id']}"})


@router.get(
    "/{model_id}",
    response_model=ModelOut,
    responses=error_responses(404),
    summary="A model: method, params, sources, metrics vs the target's own checkpoint, provenance",
    description="`provenance` names every input by sha256 (base, target and sources, cohort) with the code and "
    "torch versions, so the model can be rebuilt.",
)
def get_model(ctx: Ctx, _key: PredictKey, model_id: str) -> ModelOut:
    return ModelOut.model_validate(svc.get_model_dict(ctx=ctx, model_id=model_id))


@router.get(
    "/{model_id}/artifact",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the model file (safetensors)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "If-None-Match named this sha256: you have the file"},
        **error_responses(404, 503),
    },  # fmt: skip
    summary="Download the self-contained model file (safetensors; sha256 verified, ETag = sha256)",
    description="The file is re-hashed before it is sent (503 when the stored copy is corrupt). Send "
    '`If-None-Match: "<sha256>"` to get 304 when you already have it.',
)
def download_artifact(ctx: Ctx, _key: PredictKey, model_id: str, request: Request) -> Response:
    path, sha = svc.model_artifact(ctx=ctx, model_id=model_id)
    etag = f'"{sha}"'
    if request.headers.get("if-none-match") in (etag, sha):
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"model-{model_id}.safetensors",
        headers={"ETag": etag, "X-Content-SHA256": sha},
    )
