"""Merged models: list, read, download the artifact (ETag = sha256). Predict or admin scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from app.api.deps import Ctx, Page, PredictKey
from app.schemas.common import error_responses
from app.schemas.models import ModelList, ModelOut
from app.services import models as svc

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
    responses=error_responses(404, 503),
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
