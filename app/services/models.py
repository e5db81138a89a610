"""Merged models: list, read, and the verified artifact file for download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.db.models import Model
from app.db.repositories import get_model
from app.services.errors import ServiceUnavailable, not_found


def model_to_dict(row: Model) -> dict[str, Any]:
    keys = (
        "id",
        "job_id",
        "method",
        "base_id",
        "target_checkpoint_id",
        "params",
        "sources",
        "metrics",
        "provenance",
        "artifact_sha256",
        "created_at",
        "promotion_status",  # issue 12
        "promotion",
    )
    return {k: getattr(row, k) for k in keys}


def list_models(
    *, ctx: Any, method: str | None = None, base_id: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Newest first, optionally filtered by method and base."""
    stmt = select(Model)
    if method is not None:
        stmt = stmt.where(Model.method == method)
    if base_id is not None:
        stmt = stmt.where(Model.base_id == base_id)
    with ctx.session() as s:
        total = int(s.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        rows = s.scalars(stmt.order_by(Model.created_at.desc(), Model.id).limit(limit).offset(offset))
        return [model_to_dict(r) for r in rows], total


def get_model_dict(*, ctx: Any, model_id: str) -> dict[str, Any]:
    with ctx.session() as s:
        row = get_model(s, model_id=model_id)
        if row is None:
            raise not_found("model", model_id, hint="list them with GET /models")
        return model_to_dict(row)


def model_artifact(*, ctx: Any, model_id: str) -> tuple[Path, str]:
    """(path, sha256) of the model's artifact after re-hashing it (a corrupt or missing file → 503)."""
    from app.storage.store import StoreError

    sha = get_model_dict(ctx=ctx, model_id=model_id)["artifact_sha256"]
    try:
        return Path(ctx.store.verify(sha)), sha
    except StoreError as exc:
        raise ServiceUnavailable(f"the artifact of model {model_id!r} cannot be served: {exc}") from None
