"""POST /predict: score uploaded bags with a merged model. Predict or admin scope."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.deps import Ctx, PredictKey
from app.schemas.common import error_responses
from app.schemas.predict import PredictResponse
from app.services import predict as svc
from app.services.admission import get_admission
from app.services.errors import UnprocessableInput
from app.services.registry import resolve_model_id
from app.services.reports import attach_curve_images

router = APIRouter(tags=["prediction"])


def _patient_ids(patient_id: list[str] | None, patient_ids: str | None) -> list[str] | None:
    if patient_ids:
        try:
            ids = json.loads(patient_ids)
        except json.JSONDecodeError:
            raise UnprocessableInput('patient_ids must be a JSON list of strings, e.g. ["P1", "P1"]') from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise UnprocessableInput('patient_ids must be a JSON list of strings, e.g. ["P1", "P1"]')
        return ids
    return patient_id or None


def _run(ctx: Ctx, model_id: str, files: list[UploadFile], ids: list[str] | None, top: int, image: str | None) -> dict:
    svc.check_file_count(ctx.settings, len(files))
    model_id = resolve_model_id(ctx=ctx, ref=model_id)  # name@alias / name/version → id; 404 before any upload
    saved: list[svc.BagFile] = []
    try:
        for i, f in enumerate(files):
            name = svc.upload_name(f.filename, i)
            dest = ctx.store.new_tmp_path()
            svc.save_bag_upload(f.file, dest, limit_bytes=ctx.settings.max_upload_bytes, name=name)
            saved.append(svc.BagFile(name=name, path=dest))
        result = svc.predict(ctx=ctx, model_id=model_id, files=saved, patient_ids=ids, top_patches=top)
        return attach_curve_images(result, image)  # issue 10: optional survival-curve image per patient
    finally:
        for b in saved:
            b.path.unlink(missing_ok=True)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=error_responses(404, 413, 422, 503),
    summary="Score bags (.h5/.hdf5/.pt/.npy/.safetensors): risk, survival curve, hazards, STEPH sources",
    description="`model_id` may be a model id, `name@alias` (e.g. brca@champion), `name/<version>` or "
    "`name/latest`; the response names the model id it resolved to. Each file is one patient unless "
    "patient ids group several slides into one bag. The survival curve starts at day 0 with S(0) = 1.",
)
async def predict(
    ctx: Ctx,
    _key: PredictKey,
    model_id: Annotated[
        str, Form(max_length=200, description="the model: an id, name@alias, name/version or name/latest")
    ],
    files: Annotated[list[UploadFile], File(description="one or more feature bags [N, D]")],
    patient_id: Annotated[list[str] | None, Form(description="one per file, or one for all files")] = None,
    patient_ids: Annotated[str | None, Form(description="alternative: a JSON list of patient ids")] = None,
    top_patches: Annotated[int, Form(ge=0, le=1000, description="return the k highest-attention patches")] = 0,
    curve_image: Annotated[
        Literal["png", "svg"] | None, Form(description="also return each survival curve as a base64 png/svg image")
    ] = None,
) -> PredictResponse:
    ids = _patient_ids(patient_id, patient_ids)
    async with get_admission(ctx).slot():  # issue 7: bounded forwards; 503 + Retry-After past the wait queue
        result = await run_in_threadpool(_run, ctx, model_id, files, ids, top_patches, curve_image)
    return PredictResponse.model_validate(result)
