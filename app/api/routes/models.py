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


@router.get("", response_model=ModelList, summary="List merged models, newest first")
def list_models(
    ctx: Ctx,
    _key: PredictKey,
    page: Page,
    method: Annotated[str | None, Query(max_length=64)] = None,
    base_id: Annotated[str | None, Query(max_length=64)] = None,
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
)
def get_model(ctx: Ctx, _key: PredictKey, model_id: str) -> ModelOut:
    return ModelOut.model_validate(svc.get_model_dict(ctx=ctx, model_id=model_id))


@router.get(
    "/{model_id}/artifact",
    response_class=FileResponse,
    responses=error_responses(404, 503),
    summary="Download the self-contained model file (safetensors; sha256 verified, ETag = sha256)",
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
