"""Write a synthetic world (app.domain.synthetic) as the files users have.

Layout under `out_dir`:

    base.safetensors                         θ₀ = new_abmil(dims, base_seed) (reference state-dict keys)
    checkpoints/<cancer>.safetensors         θ_c, trained from θ₀ on the cancer's train split
    cohorts/<cancer>/labels.csv              patient_id, pathology_id, project, t, e (one row per slide)
    cohorts/<cancer>/splits.csv              columns train, test (patient ids, padded with empty cells)
    cohorts/<cancer>/bags/<pathology_id>.h5  TRIDENT layout: `features` [N, D] float32, `coords` [N, 2] int64
    world.json                               the WorldConfig, target, sources, dims and bin edges
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import save_file

from app.domain.mil import FamilyDims, new_abmil
from app.domain.survival import default_bin_edges
from app.domain.synthetic import CancerCohort, World
from app.domain.task_vectors import StateDict
from app.domain.training import Progress, TrainConfig, train_cancer_specific

ProgressHook = Callable[[str, Progress], None]  # (cancer, progress)


@dataclass
class WrittenWorld:
    """Paths of everything write_world wrote (to_dict() is JSON-able)."""

    out_dir: Path
    base: Path
    checkpoints: dict[str, Path] = field(default_factory=dict)
    cohorts: dict[str, Path] = field(default_factory=dict)
    target: str = ""
    dims: FamilyDims | None = None

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "base": str(self.base),
            "target": self.target,
            "sources": [c for c in self.cohorts if c != self.target],
            "checkpoints": {k: str(v) for k, v in self.checkpoints.items()},
            "cohorts": {k: str(v) for k, v in self.cohorts.items()},
            "dims": self.dims.to_dict() if self.dims else None,
        }


def write_state(path: Path, state: StateDict, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, through app.io.checkpoints.write_checkpoint when it exists."""
    try:
        from app.io.checkpoints import write_checkpoint
    except ImportError:  # the I/O helper's module is not there yet: write it ourselves, atomically
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        return
    write_checkpoint(path, state, metadata)


def write_world(
    world: World,
    out_dir: str | Path,
    *,
    hidden: int = 64,
    attn: int = 32,
    n_bins: int = 32,
    base_seed: int = 0,
    train_checkpoints: bool = True,
    epochs: int = 20,
    train_config: TrainConfig | None = None,
    progress: ProgressHook | None = None,
) -> WrittenWorld:
    """Write base, per-cancer checkpoints (trained unless train_checkpoints=False), cohorts (module doc).

    Bin edges are the default 365-day bins (n_bins of them, the last open-ended). `train_config` (default:
    TrainConfig(epochs=epochs)) drives every cancer-specific training run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = FamilyDims(in_dim=world.config.dim, hidden_dim=hidden, attn_dim=attn, n_bins=n_bins)
    bin_edges = default_bin_edges(n_bins)
    base_state = {k: v.detach().clone() for k, v in new_abmil(dims, base_seed).state_dict().items()}
    meta = {"dims": json.dumps(dims.to_dict()), "bin_edges": json.dumps(bin_edges)}
    written = WrittenWorld(out, out / "base.safetensors", target=world.target, dims=dims)
    write_state(written.base, base_state, meta)
    for name, cohort in world.cancers.items():
        written.cohorts[name] = write_cohort(cohort, out / "cohorts" / name)
    if train_checkpoints:
        config = train_config or TrainConfig(epochs=epochs)
        (out / "checkpoints").mkdir(exist_ok=True)
        for name, cohort in world.cancers.items():
            hook = (lambda p, _n=name: progress(_n, p)) if progress else None
            model = train_cancer_specific(
                base_state, cohort.samples("train"), config, dims=dims, bin_edges=bin_edges, progress=hook
            )
            path = out / "checkpoints" / f"{name}.safetensors"
            write_state(path, model.abmil.state_dict(), {**meta, "cancer": name})
            written.checkpoints[name] = path
    manifest = {**written.to_dict(), "bin_edges": bin_edges, "world": _config_dict(world)}
    (out / "world.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return written


def _config_dict(world: World) -> dict:
    cfg = world.config
    return asdict(replace(cfg, target=cfg.target_name))


def write_cohort(cohort: CancerCohort, cohort_dir: Path) -> Path:
    """labels.csv, splits.csv and bags/<pathology_id>.h5 for one cancer; returns cohort_dir."""
    bags_dir = cohort_dir / "bags"
    bags_dir.mkdir(parents=True, exist_ok=True)
    with open(cohort_dir / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "pathology_id", "project", "t", "e"])
        for patient in cohort.patients:
            for slide_id, bag in zip(patient.slide_ids, patient.bags, strict=True):
                writer.writerow([patient.patient_id, slide_id, cohort.name, f"{patient.time:.2f}", patient.event])
                write_h5_bag(bags_dir / f"{slide_id}.h5", bag)
    write_splits(cohort_dir / "splits.csv", cohort.splits)
    return cohort_dir


def write_splits(path: Path, splits: dict[str, list[str]]) -> None:
    """CSV whose columns are the split names, each a list of patient ids, padded with empty cells."""
    names = list(splits)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in itertools.zip_longest(*(splits[n] for n in names), fillvalue=""):
            writer.writerow(row)


def write_h5_bag(path: Path, features: torch.Tensor) -> None:
    """TRIDENT/CLAM layout: `features` [N, D] float32 and `coords` [N, 2] int64 (a synthetic 256-px grid)."""
    feats = features.detach().cpu().numpy().astype(np.float32)
    n = feats.shape[0]
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(np.int64) * 256
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=feats)
        fh.create_dataset("coords", data=grid)
