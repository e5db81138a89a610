"""Checkpoints: register a cancer-specific θ_c against its base, store it and its task vector τ = θ_c − θ₀.

Identity: `sha256` is the sha256 of the uploaded bytes (what `sha256sum file` prints); registering the same
bytes for the same base again returns the existing checkpoint (`created=False`). `artifact_key` is the store
key of the stored safetensors (the upload itself for .safetensors, its conversion for .pth).
"""

from __future__ import annotations

from typing import Literal, overload

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import repositories as repo
from app.db.models import Checkpoint
from app.domain.task_vectors import (
    StateDict,
    check_compatible,
    check_descends_from,
    compute_task_vector,
    layer_norms,
)
from app.services.bases import (
    get_base,
    load_state,
    read_uploaded_state,
    store_state,
    store_upload_or_state,
)
from app.services.context import ServiceContext
from app.services.errors import Conflict, InvalidInput, not_found
from app.services.store_refs import delete_unreferenced, ensure_stored, lock_objects
from app.services.uploads import SavedUpload


@overload
def clean_label(value: str | None, field: str, *, max_len: int = ..., required: Literal[True] = ...) -> str: ...
@overload
def clean_label(value: str | None, field: str, *, max_len: int = ..., required: bool) -> str | None: ...
def clean_label(value: str | None, field: str, *, max_len: int = 100, required: bool = True) -> str | None:
    """Strip a free-text form field; refuse empty (when required), over-long or control characters."""
    text = (value or "").strip()
    if not text:
        if required:
            raise InvalidInput(f"{field} is required and must not be blank")
        return None
    if len(text) > max_len:
        raise InvalidInput(f"{field} is {len(text)} characters long; the limit is {max_len}")
    if any(ord(c) < 32 for c in text):
        raise InvalidInput(f"{field} must not contain control characters")
    return text


def register_checkpoint(
    ctx: ServiceContext,
    *,
    upload: SavedUpload,
    cancer: str,
    base_id: str,
    name: str | None = None,
    description: str | None = None,
) -> tuple[Checkpoint, bool]:
    """Check θ_c against the base (keys, shapes, dtypes, finite, trained from it); store θ_c and τ.

    Returns (row, created)."""
    base = get_base(ctx, base_id=base_id)
    with ctx.session() as s:
        existing = repo.find_checkpoint(s, base_id=base.id, sha256=upload.sha256)
    if existing is not None:
        return _same_cancer(existing, cancer, "bytes"), False
    state = read_uploaded_state(ctx, upload)
    base_state = load_state(ctx, base.artifact_key)
    check_compatible(base_state, state, name=upload.filename)
    check_descends_from(base_state, state, name=upload.filename, min_retention=ctx.settings.min_base_retention)
    task_vector = compute_task_vector(state, base_state)
    norms = layer_norms(task_vector)
    keys = _store_pair(ctx, upload, state, task_vector)
    try:
        with ctx.session() as s:
            # the objects' locks (both, in the one order every locker uses): a concurrent delete of rows sharing
            # them waits, or removed them and they are stored again
            lock_objects(s, keys)
            # the same weights in other bytes (a .pth of a registered .safetensors, another key prefix): τ is stored
            # canonically, so equal weights give the same task-vector key
            twin = s.scalar(
                select(Checkpoint)
                .where(Checkpoint.base_id == base.id, Checkpoint.task_vector_key == keys[1])
                .order_by(Checkpoint.created_at, Checkpoint.id)
            )
            if twin is not None:
                twin = _same_cancer(twin, cancer, "weights")
            else:
                ensure_stored(ctx, s, keys[0], lambda: store_upload_or_state(ctx, upload, state))
                ensure_stored(ctx, s, keys[1], lambda: store_state(ctx, task_vector))
                row = repo.add_checkpoint(
                    s, base_id=base.id, cancer=cancer, name=name or cancer, description=description,
                    sha256=upload.sha256, artifact_key=keys[0], task_vector_key=keys[1], tv_norms=norms,
                )  # fmt: skip
        if twin is not None:
            delete_unreferenced(ctx, *keys)  # keeps what the twin row references
            return twin, False
        return row, True
    except IntegrityError:  # the same bytes registered concurrently: hand back the winner
        with ctx.session() as s:
            existing = repo.find_checkpoint(s, base_id=base.id, sha256=upload.sha256)
        if existing is None:
            delete_unreferenced(ctx, *keys)
            raise
        return existing, False
    except BaseException:
        delete_unreferenced(ctx, *keys)
        raise


def _same_cancer(existing: Checkpoint, cancer: str, what: str) -> Checkpoint:
    """A registration of weights the base already has: the existing checkpoint when it is for the same cancer
    (an idempotent retry), else a Conflict (one checkpoint per weights: the same model under two cancers would be
    merged with itself, and a job could list it as the target and as a source)."""
    if existing.cancer != cancer:
        raise Conflict(
            f"these {what} are already registered as checkpoint {existing.id!r} for cancer {existing.cancer!r} of "
            f"this base; a checkpoint belongs to one cancer — use that checkpoint, or delete it first "
            f"(DELETE /checkpoints/{existing.id}) to register the weights under {cancer!r}",
            details={"existing": existing.id},
        )
    return existing


def _store_pair(ctx: ServiceContext, upload: SavedUpload, state: StateDict, tv: StateDict) -> tuple[str, str]:
    key = store_upload_or_state(ctx, upload, state)
    try:
        return key, store_state(ctx, tv)
    except BaseException:
        delete_unreferenced(ctx, key)
        raise


def get_checkpoint(ctx: ServiceContext, *, checkpoint_id: str) -> Checkpoint:
    with ctx.session() as s:
        row = repo.get_checkpoint(s, checkpoint_id=checkpoint_id)
    if row is None:
        raise not_found("checkpoint", checkpoint_id, hint="list them with GET /checkpoints")
    return row


def list_checkpoints(
    ctx: ServiceContext,
    *,
    base_id: str | None = None,
    cancer: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Checkpoint], int]:
    with ctx.session() as s:
        return repo.list_checkpoints(s, base_id=base_id, cancer=cancer, limit=limit, offset=offset)


def delete_checkpoint(ctx: ServiceContext, *, checkpoint_id: str) -> None:
    """Delete a checkpoint and its store objects; Conflict (409) while a model or a queued/running job uses
    it."""
    with ctx.session() as s:
        repo.lock_rows(s, Checkpoint, [checkpoint_id])  # a job submitted now naming it: one of the two waits
        row = repo.get_checkpoint(s, checkpoint_id=checkpoint_id)
        if row is None:
            raise not_found("checkpoint", checkpoint_id, hint="list them with GET /checkpoints")
        users = repo.checkpoint_dependents(s, checkpoint=row)
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            raise Conflict(
                f"checkpoint {checkpoint_id!r} is used by {shown}; cancel the jobs or delete the models first",
                details={"used_by": users},
            )
        keys = (row.artifact_key, row.task_vector_key)
        repo.delete_row(s, row=row)
    delete_unreferenced(ctx, *keys)


def load_task_vector(ctx: ServiceContext, checkpoint: Checkpoint) -> StateDict:
    """τ of a stored checkpoint (sha256 verified)."""
    return load_state(ctx, checkpoint.task_vector_key)


def load_checkpoint_state(ctx: ServiceContext, checkpoint: Checkpoint) -> StateDict:
    """θ_c of a stored checkpoint (sha256 verified)."""
    return load_state(ctx, checkpoint.artifact_key)
