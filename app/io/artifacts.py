"""Model artifacts: a SurvivalModel as one safetensors file with its config and provenance.

    tensors  = model.artifact_tensors()
    metadata = {"format": "steph-model/1", "config": json(model.artifact_config()),
                "provenance": json(provenance), "content_sha256": sha256(config, provenance, tensors)}

`content_sha256` makes any edit of the tensors, config or provenance detectable without knowing the file's
sha256; `expected_sha256` (the store's key) additionally pins the whole file. Loading dispatches on
config["method"] through app.domain.merging.registry.load_model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from app.domain.merging.base import StaticModel, SurvivalModel
from app.io.checkpoints import checkpoint_kind, read_checkpoint, write_checkpoint
from app.io.errors import ArtifactError, CheckpointFormatError, display_name_of, scrub_paths

ARTIFACT_FORMAT = "steph-model/1"


@dataclass
class LoadedModel:
    """A loaded model (in eval mode), its config and provenance, and the sha256 of the file it came from."""

    model: SurvivalModel
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(config_json: str, provenance_json: str, tensors: dict[str, Tensor]) -> str:
    """sha256 over the config and provenance JSON and every tensor (sorted: name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for text in (config_json, provenance_json):
        digest.update(text.encode())
        digest.update(b"\0")
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(path: str | os.PathLike[str], model: SurvivalModel, provenance: dict[str, Any]) -> str:
    """Write `model` (tensors + config + provenance) atomically as safetensors; return the file's sha256."""
    tensors = model.artifact_tensors()
    config_json = json.dumps(model.artifact_config(), sort_keys=True)
    provenance_json = json.dumps(provenance, sort_keys=True)
    metadata = {
        "format": ARTIFACT_FORMAT,
        "config": config_json,
        "provenance": provenance_json,
        "content_sha256": content_sha256(config_json, provenance_json, tensors),
    }
    write_checkpoint(path, tensors, metadata)
    return file_sha256(path)


def _metadata(path: Path, name: str) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise ArtifactError(
            f"{name}: not a readable model artifact "
            f"({scrub_paths(f'{type(exc).__name__}: {exc}', path, name)}); "
            "it is truncated or corrupt — restore it or re-run the merge",
            file_name=name,
        ) from None


def load_model_file(path: str | os.PathLike[str], *, expected_sha256: str | None = None,
                    display_name: str | None = None) -> LoadedModel:  # fmt: skip
    """Load a model artifact written by save_model -> LoadedModel (model in eval mode).

    Raises ArtifactError: sha256 mismatch, not an artifact, content digest mismatch (tampered), bad config.
    """
    path = Path(path)
    name = display_name_of(path, display_name)
    if not path.is_file():
        raise ArtifactError(f"{name}: model artifact not found", file_name=name)
    sha = file_sha256(path)
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise ArtifactError(
            f"{name}: sha256 is {sha[:16]}…, expected {expected_sha256[:16]}…: the file was modified or "
            "corrupted; restore it from a backup or re-run the merge",
            file_name=name,
        )
    meta = _metadata(path, name)
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{name}: not a model artifact (metadata format {meta.get('format')!r}, expected "
            f"{ARTIFACT_FORMAT!r}); upload a model file made by a merge job (GET /models/{{id}}/artifact or "
            "`steph merge --out`), and register a cancer's own checkpoint with POST /checkpoints instead",
            file_name=name,
        )
    from safetensors.torch import load_file

    tensors = load_file(str(path), device="cpu")
    config_json, provenance_json = meta.get("config", ""), meta.get("provenance", "{}")
    if meta.get("content_sha256") != content_sha256(config_json, provenance_json, tensors):
        raise ArtifactError(
            f"{name}: the artifact's content does not match its recorded digest: tensors, config or "
            "provenance "
            "were modified; restore it from a backup or re-run the merge",
            file_name=name,
        )
    bad = next((k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:  # a diverged merge saved by other software, or a crafted file: never scored
        raise ArtifactError(
            f"{name}: tensor {bad!r} holds NaN or Inf values; the model diverged or the file was damaged; re-run "
            "the merge",
            file_name=name,
        )
    try:
        config, provenance = json.loads(config_json), json.loads(provenance_json)
        model = _build(tensors, config)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ArtifactError(f"{name}: cannot rebuild the model ({exc})", file_name=name) from None
    model.eval()
    return LoadedModel(model, config, provenance, sha)


def _build(tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
    from app.domain.merging.registry import load_model

    return load_model(tensors, config)


def load_any_model(path: str | os.PathLike[str], *, bin_edges: list[float] | None = None,
                   display_name: str | None = None, timeout_s: float = 60,
                   memory_mb: int = 4096) -> LoadedModel:  # fmt: skip
    """A model artifact, or a plain ABMIL checkpoint (.safetensors / reference .pth) as a cancer-specific
    StaticModel with `bin_edges` (default: default_bin_edges(n_bins)). Returns a LoadedModel (eval mode)."""
    from app.domain.mil import infer_dims
    from app.domain.survival import default_bin_edges

    path = Path(path)
    name = display_name_of(path, display_name)
    if path.is_file() and checkpoint_kind(path) == "safetensors" and _metadata(path, name).get("format"):
        return load_model_file(path, display_name=name)
    state = read_checkpoint(path, display_name=name, timeout_s=timeout_s, memory_mb=memory_mb)
    from app.domain.task_vectors import check_finite

    check_finite(state, name=name)  # NaN/Inf or absurd weights: refused here, as at registration
    try:
        dims = infer_dims(state)
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: {exc.args[0]}", file_name=name) from None
    edges = list(bin_edges) if bin_edges is not None else default_bin_edges(dims.n_bins)
    if len(edges) != dims.n_bins + 1:
        raise CheckpointFormatError(
            f"{name}: the model has {dims.n_bins} time bins but {len(edges)} bin edges were given "
            f"(need {dims.n_bins + 1})",
            file_name=name,
        )
    try:
        model = StaticModel(state, dims, edges, method="cancer_specific")
    except RuntimeError as exc:
        raise CheckpointFormatError(f"{name}: not a plain ABMIL state dict ({exc})", file_name=name) from None
    model.eval()
    return LoadedModel(model, model.artifact_config(), {"source": name}, file_sha256(path))
