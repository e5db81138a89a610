"""Cohorts: POST /cohorts (multipart zip/tar + name, base_id; or JSON {name, base_id, path} under the data
root), GET /cohorts, GET /cohorts/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminKey, Ctx, Page, receive_upload
from app.schemas.common import error_responses
from app.schemas.resources import CohortList, CohortOut, CohortPathIn
from app.services import cohorts as svc
from app.services.archives import ARCHIVE_SUFFIXES
from app.services.checkpoints import clean_label
from app.services.errors import InvalidInput

router = APIRouter(prefix="/cohorts", tags=["cohorts"])

_BODY_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name", "base_id"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "zip / tar / tar.gz of a cohort dir",
                        },
                        "name": {"type": "string", "description": "display name of the cohort"},
                        "base_id": {"type": "string", "description": "the base whose D the bags must match"},
                    },
                }
            },
            "application/json": {"schema": CohortPathIn.model_json_schema()},
        },
        "required": True,
    }
}


async def _from_form(ctx, request: Request) -> CohortOut:
    form = await request.form(max_files=1, max_fields=10)
    try:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise InvalidInput("multipart field 'file' (a zip or tar of the cohort directory) is required")
        raw_name, raw_base_id = form.get("name"), form.get("base_id")
        name = clean_label(raw_name if isinstance(raw_name, str) else None, "name", max_len=200)
        base_id = clean_label(raw_base_id if isinstance(raw_base_id, str) else None, "base_id")
        upload = await receive_upload(ctx, file, ARCHIVE_SUFFIXES, what="cohort archive")
        suffix = next(s for s in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True) if upload.path.name.endswith(s))
        try:
            row = await run_in_threadpool(
                svc.register_cohort_upload, ctx, upload=upload, suffix=suffix, name=name, base_id=base_id
            )
        finally:
            upload.path.unlink(missing_ok=True)
    finally:
        await form.close()
    return CohortOut.model_validate(row)


async def _from_json(ctx, request: Request) -> CohortOut:
    try:
        body = CohortPathIn.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(
            f'invalid JSON body: {where}: {first.get("msg")}; send {{"name": …, "base_id": …, "path": …}}'
        ) from None
    row = await run_in_threadpool(svc.register_cohort_path, ctx, path=body.path, name=body.name, base_id=body.base_id)
    return CohortOut.model_validate(row)


@router.post(
    "",
    status_code=201,
    response_model=CohortOut,
    openapi_extra=_BODY_DOC,
    responses=error_responses(400, 403, 404, 413, 415, 422),
    summary="Register a cohort: upload an archive, or (admin) name a directory under the data root",
)
async def create_cohort(ctx: Ctx, _key: AdminKey, request: Request, response: Response) -> CohortOut:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        out = await _from_form(ctx, request)
    elif content_type == "application/json":
        out = await _from_json(ctx, request)
    else:
        raise InvalidInput("send multipart/form-data (file, name, base_id) or application/json ({name, base_id, path})")
    response.headers["Location"] = f"/cohorts/{out.id}"
    return out


@router.get("", response_model=CohortList, summary="List cohorts")
def list_cohorts(
    ctx: Ctx,
    _key: AdminKey,
    page: Page,
    base_id: Annotated[str | None, Query(max_length=64, description="only cohorts of this base")] = None,
) -> CohortList:
    rows, total = svc.list_cohorts(ctx, base_id=base_id, limit=page.limit, offset=page.offset)
    return CohortList(
        items=[CohortOut.model_validate(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get(
    "/{cohort_id}",
    response_model=CohortOut,
    responses=error_responses(404),
    summary="One cohort with its summary (patients, events, slides, patches per bag)",
)
def get_cohort(ctx: Ctx, _key: AdminKey, cohort_id: str) -> CohortOut:
    return CohortOut.model_validate(svc.get_cohort(ctx, cohort_id=cohort_id))
