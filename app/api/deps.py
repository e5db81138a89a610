"""FastAPI dependencies: the service context, API-key auth with scopes, pagination, uploads.

Ctx         Annotated[ServiceContext, Depends(get_ctx)]   the app's context (app.state.ctx)
AdminKey    Annotated[ApiKey, Depends(require_admin)]     401 without a valid key, 403 for a predict key
PredictKey  Annotated[ApiKey, Depends(require_predict)]   any valid key (admin ⊃ predict)
Page        Annotated[Pagination, Depends(pagination)]    ?limit=1..500 (default 100) &offset=0..MAX_OFFSET
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile

from app.db.models import ApiKey
from app.services import auth
from app.services.context import ServiceContext
from app.services.errors import ServiceUnavailable
from app.services.uploads import SavedUpload, allowed_suffix, save_upload

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def get_ctx(request: Request) -> ServiceContext:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise ServiceUnavailable("the service is starting or stopping; retry in a moment")
    return ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _authenticate(ctx: ServiceContext, credentials: HTTPAuthorizationCredentials | None, scope: str) -> ApiKey:
    key = credentials.credentials if credentials is not None else None
    with ctx.session() as s:
        return auth.authenticate(s, key=key, required_scope=scope)


def require_admin(ctx: Ctx, credentials: Credentials) -> ApiKey:
    """The caller's key, which must have the admin scope."""
    return _authenticate(ctx, credentials, "admin")


def require_predict(ctx: Ctx, credentials: Credentials) -> ApiKey:
    """The caller's key: predict or admin scope."""
    return _authenticate(ctx, credentials, "predict")


AdminKey = Annotated[ApiKey, Depends(require_admin)]
PredictKey = Annotated[ApiKey, Depends(require_predict)]
AUTH_DEPENDENCIES = {require_admin: "admin", require_predict: "predict"}


MAX_OFFSET = 1_000_000_000  # past it a 422 (an offset ≥ 2^63 overflowed the database driver: a 500)


@dataclass
class Pagination:
    limit: int = 100
    offset: int = 0


def pagination(
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0,
) -> Pagination:
    return Pagination(limit=limit, offset=offset)


Page = Annotated[Pagination, Depends(pagination)]


async def receive_upload(ctx: ServiceContext, file: UploadFile, allowed: tuple[str, ...], *, what: str) -> SavedUpload:
    """Stream `file` into a generated temp path in the store (suffix from the allow-list, capped at
    settings.max_upload_mb). The caller deletes `result.path` when done."""
    suffix = allowed_suffix(file.filename, allowed, what=what)
    dest = ctx.store.new_tmp_path(suffix)
    return await save_upload(file, dest, limit_bytes=ctx.settings.max_upload_bytes, filename=file.filename)
