"""Bases (model families): register the shared initial weights θ₀ and the family settings.

Also the state-dict helpers shared with checkpoints and jobs: `read_uploaded_state`, `store_state`,
`load_state`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from safetensors.torch import load_file, save_file
from sqlalchemy.exc import IntegrityError

from app.db import repositories as repo
from app.db.models import ModelBase
from app.domain.mil import FamilyDims, infer_dims, reference_shapes
from app.domain.survival import DEFAULT_BIN_WIDTH_DAYS, default_bin_edges
from app.domain.task_vectors import StateDict, check_finite
from app.services.context import ServiceContext
from app.services.errors import InvalidInput, ServiceUnavailable, not_found
from app.services.store_refs import delete_unreferenced, ensure_stored
from app.services.uploads import SavedUpload

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt")
MIN_BIN_WIDTH_DAYS, MAX_BIN_WIDTH_DAYS = 1.0, 36500.0  # one day … one century
PTH_RETRY_AFTER_S = 5
_PTH_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_PTH_SLOTS_LOCK = threading.Lock()


def pth_slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore bounding concurrent .pth conversions at `limit` (STEPH_PTH_CONCURRENCY)."""
    with _PTH_SLOTS_LOCK:
        return _PTH_SLOTS.setdefault(limit, threading.BoundedSemaphore(limit))


def read_uploaded_state(ctx: ServiceContext, upload: SavedUpload) -> StateDict:
    """Read an uploaded .safetensors / reference .pth. A .pth is converted in a child process with the
    configured time and memory limits, at most `pth_concurrency` at once per process: past that it waits
    `pth_wait_s` for a slot, then ServiceUnavailable (503, Retry-After). The child dies with this process and
    then deletes the upload. Raises app.io.errors.CheckpointFormatError naming the upload."""
    from app.io.checkpoints import checkpoint_kind, read_checkpoint

    s = ctx.settings

    def read(remove_if_orphaned: bool = False) -> StateDict:
        return read_checkpoint(upload.path, display_name=upload.filename, timeout_s=s.pth_timeout_s,
                               memory_mb=s.pth_memory_mb, remove_if_orphaned=remove_if_orphaned)  # fmt: skip

    if checkpoint_kind(upload.path) != "pickle":
        return read()
    slots = pth_slots(int(getattr(s, "pth_concurrency", 2)))
    if not slots.acquire(timeout=float(getattr(s, "pth_wait_s", 10.0))):
        busy = ServiceUnavailable(
            f"{s.pth_concurrency} .pth conversion(s) are already running (STEPH_PTH_CONCURRENCY); retry in a few "
            "seconds, or upload the weights as .safetensors, which need no conversion"
        )
        busy.retry_after_s = PTH_RETRY_AFTER_S  # type: ignore[attr-defined]  # app.api.errors: Retry-After
        raise busy
    try:
        return read(remove_if_orphaned=True)
    finally:
        slots.release()


def family_key(sha256: str, encoder: str, edges: list[float]) -> str:
    """A family's identity: sha256 hex of the JSON [file sha256, encoder, bin edges as floats] (unique in
    `bases.family_key`; migration 0002 computes the same for older rows)."""
    text = json.dumps([sha256, encoder, [float(x) for x in edges]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def store_state(ctx: ServiceContext, state: StateDict) -> str:
    """Serialize a state dict as safetensors into the store; returns its key (sha256)."""
    tmp = ctx.store.new_tmp_path(".safetensors")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
        return ctx.store.put_file(tmp, move=True)
    finally:
        tmp.unlink(missing_ok=True)


def store_upload_or_state(ctx: ServiceContext, upload: SavedUpload, state: StateDict) -> str:
    """A .safetensors upload is stored byte for byte; a .pth is converted to safetensors first."""
    if upload.path.suffix == ".safetensors":
        return ctx.store.put_file(upload.path)
    return store_state(ctx, state)


def load_state(ctx: ServiceContext, key: str) -> StateDict:
    """A stored state dict, its sha256 verified first (StoreError when missing or corrupt)."""
    return load_file(str(ctx.store.verify(key)))


def check_base_state(state: StateDict, name: str) -> FamilyDims:
    """The family dims of a θ₀ state dict in the exact reference layout, floating point and finite."""
    from app.io.errors import CheckpointFormatError

    try:
        dims = infer_dims(state)
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: {exc.args[0]}", file_name=name) from None
    expected = reference_shapes(dims)
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointFormatError(
            f"{name}: unexpected key {extra[0]!r}; a base holds exactly the ABMIL keys {', '.join(expected)}",
            file_name=name,
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointFormatError(
                f"{name}: key {key!r} has shape {list(state[key].shape)}, expected {list(shape)} for D = {dims.in_dim}",
                file_name=name,
            )
        if not state[key].is_floating_point():
            raise CheckpointFormatError(
                f"{name}: key {key!r} has dtype {state[key].dtype}; weights must be floating point",
                file_name=name,
            )
    check_finite(state, name=name)
    return dims


def bin_edges_for(dims: FamilyDims, *, n_bins: int | None, bin_width_days: float | None) -> list[float]:
    """Edges 0, w, …, n_bins·w; `n_bins`, when given, must equal the head's output size."""
    if n_bins is not None and n_bins != dims.n_bins:
        raise InvalidInput(
            f"n_bins = {n_bins} but the file's pred_head has {dims.n_bins} outputs; "
            "leave n_bins out or make it match the checkpoint"
        )
    width = DEFAULT_BIN_WIDTH_DAYS if bin_width_days is None else float(bin_width_days)
    if not MIN_BIN_WIDTH_DAYS <= width <= MAX_BIN_WIDTH_DAYS:  # also false for NaN
        raise InvalidInput(
            f"bin_width_days must be a number of days in [{MIN_BIN_WIDTH_DAYS:g}, {MAX_BIN_WIDTH_DAYS:g}], "
            f"got {bin_width_days}"
        )
    return default_bin_edges(dims.n_bins, width)


def register_base(
    ctx: ServiceContext,
    *,
    upload: SavedUpload,
    name: str,
    encoder: str,
    n_bins: int | None = None,
    bin_width_days: float | None = None,
) -> tuple[ModelBase, bool]:
    """Validate θ₀ (reference layout, finite), store it and record the family (dims read from the file).

    Returns (row, created): the same bytes with the same encoder and bin edges are the same family, so a
    repeated registration (a retried upload, a re-run script) returns the existing base with created False."""
    state = read_uploaded_state(ctx, upload)
    dims = check_base_state(state, upload.filename)
    edges = bin_edges_for(dims, n_bins=n_bins, bin_width_days=bin_width_days)
    existing = _find_base(ctx, sha256=upload.sha256, encoder=encoder, edges=edges)
    if existing is not None:
        return existing, False
    key = store_upload_or_state(ctx, upload, state)
    fields = {"name": name, "encoder": encoder, "dims": dims.to_dict(), "bin_edges": edges, "sha256": upload.sha256,
              "artifact_key": key, "family_key": family_key(upload.sha256, encoder, edges)}  # fmt: skip
    try:
        with ctx.session() as s:
            ensure_stored(ctx, s, key, lambda: store_upload_or_state(ctx, upload, state))  # see store_refs
            row = repo.add_base(s, **fields)
        return row, True
    except IntegrityError:  # the same family registered concurrently: the unique family_key picked one winner
        existing = _find_base(ctx, sha256=upload.sha256, encoder=encoder, edges=edges)
        if existing is None:
            delete_unreferenced(ctx, key)
            raise
        return existing, False
    except BaseException:
        delete_unreferenced(ctx, key)
        raise


def _find_base(ctx: ServiceContext, *, sha256: str, encoder: str, edges: list[float]) -> ModelBase | None:
    with ctx.session() as s:
        for row in repo.find_bases(s, sha256=sha256):
            if row.encoder == encoder and [float(x) for x in row.bin_edges] == [float(x) for x in edges]:
                return row
    return None


def get_base(ctx: ServiceContext, *, base_id: str) -> ModelBase:
    with ctx.session() as s:
        base = repo.get_base(s, base_id=base_id)
    if base is None:
        raise not_found("base", base_id, hint="list them with GET /bases")
    return base


def list_bases(ctx: ServiceContext, *, limit: int = 100, offset: int = 0) -> tuple[list[ModelBase], int]:
    with ctx.session() as s:
        return repo.list_bases(s, limit=limit, offset=offset)


def base_file_path(ctx: ServiceContext, base: ModelBase) -> Path:
    """The verified store path of a base's θ₀ safetensors."""
    return ctx.store.verify(base.artifact_key)
