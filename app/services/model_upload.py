"""Uploaded model artifacts: a model file made elsewhere (`steph merge --out`, another service) becomes a models
row, so it can be registered under a name and used by POST /predict like a merge job's output.

The file must be a complete artifact (`steph-model/1`: config + provenance + a content digest that is checked);
its dims (in_dim, hidden_dim, attn_dim, n_bins) and bin edges must be the base's, and the target checkpoint must
belong to that base. The same bytes uploaded again for the same base and target return the existing row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.db import repositories as repo
from app.db.models import Model, utcnow
from app.services.bases import get_base
from app.services.errors import UnprocessableInput, not_found
from app.services.uploads import SavedUpload

DIM_KEYS = ("in_dim", "hidden_dim", "attn_dim", "n_bins")


def _check_family(name: str, config: dict[str, Any], base: Any) -> None:
    dims = config.get("dims") or {}
    wrong = [f"{k} {dims.get(k)} ≠ {base.dims.get(k)}" for k in DIM_KEYS if dims.get(k) != base.dims.get(k)]
    if wrong:
        raise UnprocessableInput(f"{name}: the model does not fit base {base.id!r}: {', '.join(wrong)}")
    edges = [float(e) for e in config.get("bin_edges") or []]
    if edges != [float(e) for e in base.bin_edges]:
        raise UnprocessableInput(f"{name}: its time-bin edges differ from base {base.id!r}'s; use the family's bins")


def register_model_upload(
    ctx: Any, *, upload: SavedUpload, base_id: str, target_checkpoint_id: str
) -> tuple[dict[str, Any], bool]:
    """Validate and store an uploaded artifact → (model dict, created)."""
    from app.io.artifacts import load_model_file
    from app.io.errors import ArtifactError
    from app.services.models import model_to_dict
    from app.services.store_refs import delete_unreferenced, ensure_stored

    base = get_base(ctx, base_id=base_id)
    with ctx.session() as s:
        target = repo.get_checkpoint(s, checkpoint_id=target_checkpoint_id)
        if target is None:
            raise not_found("target checkpoint", target_checkpoint_id, hint="list them with GET /checkpoints")
        if target.base_id != base.id:
            raise UnprocessableInput(f"target checkpoint {target.id!r} belongs to base {target.base_id!r}")
        existing = s.scalar(
            select(Model).where(
                Model.artifact_sha256 == upload.sha256,
                Model.job_id.is_(None),
                Model.base_id == base.id,
                Model.target_checkpoint_id == target.id,
            )
        )
        if existing is not None:
            return model_to_dict(existing), False
    try:
        loaded = load_model_file(upload.path, expected_sha256=upload.sha256, display_name=upload.filename)
    except ArtifactError as exc:
        raise UnprocessableInput(str(exc)) from None
    _check_family(upload.filename, loaded.config, base)
    key = ctx.store.put_file(upload.path)
    provenance = {"uploaded": {"file": upload.filename, "sha256": key, "at": utcnow().isoformat()},
                  "artifact": loaded.provenance}  # fmt: skip
    sources = (loaded.provenance.get("inputs") or {}).get("sources") or []
    params = {k: v for k, v in loaded.config.items() if k not in ("dims", "bin_edges")}
    try:
        with ctx.session() as s:
            ensure_stored(ctx, s, key, lambda: ctx.store.put_file(upload.path))  # a concurrent delete of a twin
            row = Model(id=repo.new_id("model"), job_id=None, method=str(loaded.config.get("method", "unknown")),
                        base_id=base.id, target_checkpoint_id=target.id, params=params, sources=list(sources),
                        metrics=None, provenance=provenance, artifact_sha256=key, artifact_key=key,
                        created_at=utcnow())  # fmt: skip
            s.add(row)
            s.flush()
            return model_to_dict(row), True
    except BaseException:
        delete_unreferenced(ctx, key)
        raise
