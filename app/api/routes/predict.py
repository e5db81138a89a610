"""POST /predict: score uploaded bags with a merged model. Predict or admin scope.

Three ways to send bags:
- POST /predict (multipart/form-data): one or more files, grouped into patients by the form fields;
- POST /predict/bag: ONE bag file as the raw request body, the parameters in the query string. It skips the
  multipart parser and its spool file: the body is streamed straight to the store's tmp/ and read from there;
- POST /predict/paths (JSON): bags the server reads in place under STEPH_DATA_ROOT, when STEPH_PREDICT_PATHS is on.
(Issue 7, measured in BENCHMARKS.md "Predict under load": for a 29 MiB bag on a 2-core machine multipart costs
1.6–1.9× the model forward, the raw body 1.3–1.5×, in place about 1.15×.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.deps import Ctx, PredictKey
from app.schemas.common import error_responses
from app.schemas.predict import PredictPathsRequest, PredictResponse
from app.services import predict as svc
from app.services.admission import get_admission
from app.services.errors import Forbidden, UnprocessableInput, UnsupportedMediaType
from app.services.registry import resolve_model_id
from app.services.reports import attach_curve_images
from app.services.uploads import too_large

router = APIRouter(tags=["prediction"])

MODEL_HELP = "the model: an id, name@alias, name/version or name/latest"
TOP_HELP = "return the k highest-attention patches"
CURVE_HELP = "also return each survival curve as a base64 png/svg image"


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


def _score(
    ctx: Ctx, model_id: str, files: list[svc.BagFile], ids: list[str] | None, top: int, image: str | None
) -> dict:
    """Score saved bags; with `image`, each patient's survival curve also as an image (issue 10)."""
    result = svc.predict(ctx=ctx, model_id=model_id, files=files, patient_ids=ids, top_patches=top)
    return attach_curve_images(result, image)


async def _admitted(ctx: Ctx, work: Any, *args: Any) -> PredictResponse:
    """Run `work(ctx, *args)` in the thread pool inside a forward slot (issue 7: bounded forwards; 503 +
    Retry-After past the wait queue)."""
    async with get_admission(ctx).slot():
        result = await run_in_threadpool(work, ctx, *args)
    return PredictResponse.model_validate(result)


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
        return _score(ctx, model_id, saved, ids, top, image)
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
    "patient ids group several slides into one bag. The survival curve starts at day 0 with S(0) = 1. Faster for "
    "a single bag: POST /predict/bag (raw body); for bags the server can read: POST /predict/paths.",
)
async def predict(
    ctx: Ctx,
    _key: PredictKey,
    model_id: Annotated[str, Form(max_length=200, description=MODEL_HELP)],
    files: Annotated[list[UploadFile], File(description="one or more feature bags [N, D]")],
    patient_id: Annotated[list[str] | None, Form(description="one per file, or one for all files")] = None,
    patient_ids: Annotated[str | None, Form(description="alternative: a JSON list of patient ids")] = None,
    top_patches: Annotated[int, Form(ge=0, le=1000, description=TOP_HELP)] = 0,
    curve_image: Annotated[Literal["png", "svg"] | None, Form(description=CURVE_HELP)] = None,
) -> PredictResponse:
    ids = _patient_ids(patient_id, patient_ids)
    return await _admitted(ctx, _run, model_id, files, ids, top_patches, curve_image)


RAW_WRITE_BUFFER = 1 << 20  # the body arrives in ~64 KiB messages; write it in 1 MiB blocks


async def receive_raw_body(request: Request, dest: Path, *, limit_bytes: int, name: str) -> int:
    """Stream the request body to `dest`; 413 past `limit_bytes` (also when Content-Length declares more,
    before anything is read), 422 when it is empty. `dest` is removed on failure. Returns the byte count."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit_bytes:
        raise too_large(limit_bytes, what=f"upload {name!r}")
    written = 0
    try:
        with open(dest, "wb", buffering=RAW_WRITE_BUFFER) as out:
            async for chunk in request.stream():
                written += len(chunk)
                if written > limit_bytes:
                    raise too_large(limit_bytes, what=f"upload {name!r}")
                out.write(chunk)
        if written == 0:
            raise UnprocessableInput(
                "the request body is empty: send the bag file's bytes as the body of POST /predict/bag "
                "(e.g. curl --data-binary @slide.h5)"
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written


@router.post(
    "/predict/bag",
    response_model=PredictResponse,
    responses=error_responses(404, 413, 415, 422, 503),
    summary="Score ONE bag sent as the raw request body (the fast path: no multipart parsing)",
    description="The body is the bag file's bytes (.h5/.hdf5/.pt/.npy/.safetensors; any Content-Type except "
    "multipart/form-data, e.g. application/octet-stream); `filename` names it (its suffix tells the format, its "
    "stem is the default patient id). Same response as POST /predict. Example: `curl -H 'Authorization: Bearer "
    "$KEY' --data-binary @slide.h5 'http://host:8000/predict/bag?model_id=brca@champion&filename=slide.h5'`. "
    "Several slides of one patient: use POST /predict.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the bag file's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def predict_bag(
    ctx: Ctx,
    _key: PredictKey,
    request: Request,
    model_id: Annotated[str, Query(max_length=200, description=MODEL_HELP)],
    filename: Annotated[
        str, Query(max_length=255, description="the bag's file name: its suffix gives the format")
    ] = "bag.h5",
    patient_id: Annotated[str | None, Query(max_length=200, description="default: the file name's stem")] = None,
    top_patches: Annotated[int, Query(ge=0, le=1000, description=TOP_HELP)] = 0,
    curve_image: Annotated[Literal["png", "svg"] | None, Query(description=CURVE_HELP)] = None,
) -> PredictResponse:
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        raise UnsupportedMediaType(
            "POST /predict/bag takes the bag file's raw bytes as the body, not multipart/form-data; send "
            "multipart uploads to POST /predict"
        )
    model_id = await run_in_threadpool(resolve_model_id, ctx=ctx, ref=model_id)  # 404 before the upload
    name = svc.upload_name(filename, 0)
    dest = ctx.store.new_tmp_path()
    await receive_raw_body(request, dest, limit_bytes=ctx.settings.max_upload_bytes, name=name)
    ids = [patient_id] if patient_id else None
    try:
        return await _admitted(
            ctx, _score, model_id, [svc.BagFile(name=name, path=dest)], ids, top_patches, curve_image
        )
    finally:
        dest.unlink(missing_ok=True)


def _run_paths(ctx: Ctx, body: PredictPathsRequest) -> dict:
    svc.check_file_count(ctx.settings, len(body.paths))
    model_id = resolve_model_id(ctx=ctx, ref=body.model_id)
    files = [svc.BagFile(name=Path(p).name, path=svc.resolve_bag_path(ctx.settings, p)) for p in body.paths]
    ids = body.patient_ids or ([body.patient_id] if body.patient_id else None)
    return _score(ctx, model_id, files, ids, body.top_patches, body.curve_image)


@router.post(
    "/predict/paths",
    response_model=PredictResponse,
    responses=error_responses(403, 404, 413, 422, 503),
    summary="Score bag files already on the server (under STEPH_DATA_ROOT): no upload at all",
    description="For features on storage the server mounts (a NAS, the cohort directory): the bags are read "
    "in place, confined to STEPH_DATA_ROOT. Off unless the operator sets STEPH_PREDICT_PATHS=true (403 "
    "otherwise). Grouping into patients as in POST /predict.",
)
async def predict_paths(ctx: Ctx, _key: PredictKey, body: PredictPathsRequest) -> PredictResponse:
    if not getattr(ctx.settings, "predict_paths", False):  # before taking a forward slot
        raise Forbidden(
            "scoring by server path is off on this server; an operator enables it with STEPH_PREDICT_PATHS=true "
            "(and STEPH_DATA_ROOT), or upload the bags to POST /predict/bag or POST /predict"
        )
    return await _admitted(ctx, _run_paths, body)
