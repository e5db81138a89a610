"""Prediction: score uploaded feature bags with a merged model (loaded once through the LRU model cache).

Grouping: each file is its own patient named by its file stem (its name up to the first dot; two files with one
stem are refused rather than pooled), unless `patient_ids` is given — one id for all
files (a patient's several slides) or one id per file; files sharing an id are concatenated row-wise into that
patient's bag [N, D] (SPEC §1). Each patient gets risk, survival curve, hazards, STEPH sources (w, λ) and
optionally the top-attention patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import torch

from app.domain.evaluation import model_device
from app.domain.precision import cast_bag, resolve_inference_dtype
from app.domain.survival import risk_score, survival_curve
from app.io.bags import non_finite_output
from app.services.bag_reading import read_patient
from app.services.errors import Forbidden, NotFound, PayloadTooLarge, UnprocessableInput
from app.services.model_cache import get_model_cache
from app.services.uploads import CHUNK, display_name, too_large
from app.storage.errors import StoreError


@dataclass
class BagFile:
    name: str  # display name (client's file name, last component)
    path: Path  # temp file in the store's tmp/ (generated name)


def save_bag_upload(src: BinaryIO, dest: Path, *, limit_bytes: int, name: str) -> None:
    """Stream an uploaded file to `dest` (1 MiB chunks); 413 past `limit_bytes`; dest removed on failure."""
    written = 0
    try:
        with open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > limit_bytes:
                    raise too_large(limit_bytes, what=f"upload {name!r}")
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def check_file_count(settings: Any, n_files: int) -> None:
    limit = int(getattr(settings, "max_bags_per_request", 64))
    if n_files == 0:
        raise UnprocessableInput("no bag files: attach one or more files in the multipart field 'files'")
    if n_files > limit:
        raise PayloadTooLarge(
            f"{n_files} files in one request; at most {limit} are accepted (STEPH_MAX_BAGS_PER_REQUEST): "
            "split the request"
        )


def group_patients(names: list[str], patient_ids: list[str] | None) -> dict[str, list[int]]:
    """patient id → indices of its files, in upload order (see the module docstring for the rules)."""
    if not patient_ids:
        ids = [PurePath(n).name.split(".")[0] or f"bag{i}" for i, n in enumerate(names)]
        seen: dict[str, int] = {}
        for i, pid in enumerate(ids):  # one result per file: two files naming one patient would be pooled silently
            if pid in seen:
                raise UnprocessableInput(
                    f"files {names[seen[pid]]!r} and {names[i]!r} both name patient {pid!r} (a file's patient is "
                    "its name up to the first dot); rename them, or send patient_id fields (one per file, or one "
                    "for all) to say which files are one patient's slides"
                )
            seen[pid] = i
    elif len(patient_ids) == 1:
        ids = list(patient_ids) * len(names)
    elif len(patient_ids) == len(names):
        ids = list(patient_ids)
    else:
        raise UnprocessableInput(
            f"{len(patient_ids)} patient ids for {len(names)} files: give one patient_id per file, "
            "or a single one to score all files as one patient"
        )
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(ids):
        if not isinstance(pid, str) or not pid.strip() or len(pid) > 200:
            raise UnprocessableInput(f"patient id {pid!r} (file {names[i]!r}) must be a non-empty string")
        groups.setdefault(pid.strip(), []).append(i)
    return groups


def _top_patches(
    attention: torch.Tensor | None, k: int, files: list[BagFile], sizes: list[int], coords: torch.Tensor | None
) -> list[dict[str, Any]] | None:
    if k <= 0 or attention is None:
        return None
    owners = [(f.name, j) for f, n in zip(files, sizes, strict=True) for j in range(n)]
    values, idx = torch.topk(attention.detach().float().cpu(), min(k, attention.numel()))
    return [
        {
            "index": int(i),
            "file": owners[int(i)][0],
            "file_index": owners[int(i)][1],
            "attention": float(v),
            "coords": None if coords is None else coords[int(i)].tolist(),
        }
        for v, i in zip(values.tolist(), idx.tolist(), strict=True)
    ]


def _sources(info: dict[str, Any]) -> list[dict[str, Any]] | None:
    if "sources" not in info:
        return None
    return [
        {
            "cancer": s.get("name", str(s.get("index"))),
            "weight": float(s["weight"]),
            "lam": None if s.get("lam") is None else float(s["lam"]),
        }
        for s in info["sources"]
    ]


def score_patient(model: Any, pid: str, files: list[BagFile], settings: Any, top_k: int) -> dict[str, Any]:
    """One patient's result: risk = −Σ_j S_j, survival S at the bin edges (S(0) = 1), hazards σ(logits)."""
    patient = read_patient(settings, files, model.dims.in_dim)  # issue 8: peeked, checked, budgeted
    device = model_device(model)  # the prediction device (STEPH_PREDICT_DEVICE; the model cache put it there)
    dtype = resolve_inference_dtype(str(getattr(settings, "inference_dtype", "float32")), device)  # issue 7
    read = patient.features
    patient.features = cast_bag(read, dtype, reuse=True)  # in place for fp16 <-> bf16: no second [N, D] buffer
    if device.type != "cpu":  # cast first: a float32 file crosses to the GPU at half the size in fp16
        patient.features = patient.features.to(device)
    if patient.features.data_ptr() != read.data_ptr():
        del read  # a converted copy, or moved to the device: the host bag is dropped at once (memory)
    # else `read` shares the cast bag's memory and keeps its reservation (read_patient) until the end
    bag, coords, sizes = patient.features, patient.coords, patient.sizes
    with torch.inference_mode():
        out = model(bag)
    logits = out.logits.detach().float().cpu().reshape(-1)
    if not bool(torch.isfinite(logits).all()):
        raise non_finite_output(bag, [f.name for f in files])
    surv = survival_curve(logits)
    edges = [float(e) for e in model.bin_edges][: logits.numel() + 1]
    return {
        "patient_id": pid,
        "files": [f.name for f in files],
        "n_patches": int(bag.shape[0]),
        "risk": float(risk_score(logits)),
        "survival": {
            "times_days": edges,
            "probabilities": [1.0, *[float(x) for x in surv.tolist()]][: len(edges)],
        },
        "hazards": [float(x) for x in torch.sigmoid(logits).tolist()],
        "sources": _sources(out.info or {}),
        "ensemble": (out.info or {}).get("ensemble"),
        "top_patches": _top_patches(out.attention, top_k, files, sizes, coords),
    }


def model_record(*, ctx: Any, model_id: str) -> tuple[str, str, str]:
    """(artifact sha256, method, promotion status) of the model that `model_id` names (an id, name@alias or
    name/version: app.services.registry.resolve_model_ref); NotFound when absent."""
    from app.services.registry import resolve_model_ref

    with ctx.session() as s:
        row = resolve_model_ref(s, model_id)
        return row.artifact_sha256, row.method, row.promotion_status


def _load_model(ctx: Any, model_id: str, record: tuple[str, str, str]) -> tuple[tuple[str, str, str], Any]:
    """(record, loaded model) for `model_id`, whose model_record was `record`. A DELETE of the model (or of the
    version an alias named, then its model) can remove the artifact between the lookup and the load: the reference
    is resolved again, and the request answers 404 when the model is gone, or uses what the reference names now."""
    cache = get_model_cache(ctx)
    try:
        return record, cache.get(record[0]).model
    except (StoreError, FileNotFoundError):
        try:
            now = model_record(ctx=ctx, model_id=model_id)
        except NotFound:
            raise NotFound(
                f"model {model_id!r} was deleted while this request was being served; list the models with "
                "GET /models (or the registry with GET /registered-models)"
            ) from None
        if now[0] == record[0]:
            raise  # the row still names this artifact: it really is missing (StoreError: restore it)
        return now, cache.get(now[0]).model


def predict(
    *,
    ctx: Any,
    model_id: str,
    files: list[BagFile],
    patient_ids: list[str] | None = None,
    top_patches: int = 0,
) -> dict[str, Any]:
    """Score saved bag files with model `model_id` → {model_id, model_sha256, method, model_type, results}."""
    check_file_count(ctx.settings, len(files))
    if top_patches < 0 or top_patches > 1000:
        raise UnprocessableInput(f"top_patches must be between 0 and 1000, got {top_patches}")
    record = model_record(ctx=ctx, model_id=model_id)
    groups = group_patients([f.name for f in files], patient_ids)
    (sha, method, promotion), model = _load_model(ctx, model_id, record)
    results = [
        score_patient(model, pid, [files[i] for i in idx], ctx.settings, top_patches) for pid, idx in groups.items()
    ]
    return {"model_id": model_id, "model_sha256": sha, "method": method, "model_type": model.method,
            "promotion_status": promotion, "results": results}  # fmt: skip


def resolve_bag_path(settings: Any, path: str) -> Path:
    """A bag file named by path (POST /predict/paths): confined to STEPH_DATA_ROOT (links followed). 403 when the
    server has no data root (a setting: every request would fail); 422 for a path outside the root or not a file
    (that one file is wrong: a batch client records it and goes on)."""
    from app.services.cohorts import resolve_under_root

    root = getattr(settings, "data_root", None)
    try:
        resolved = resolve_under_root(root, path, what="bag")
    except Forbidden as exc:
        if root is None:
            raise
        raise UnprocessableInput(f"{PurePath(path).name or path!r}: {exc}") from None
    if not resolved.is_file():
        raise UnprocessableInput(f"{PurePath(path).name or path!r}: no bag file at that path under the data root")
    return resolved


def upload_name(filename: str | None, index: int) -> str:
    return display_name(filename, default=f"file{index}")
