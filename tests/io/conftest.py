"""Fixtures for the I/O tests: tiny bags (D = 16) written in every supported format."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

D = 16


def make_features(n: int = 8, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def write_bag(path: Path, features: np.ndarray, coords: np.ndarray | None = None) -> Path:
    """Write `features` (and coords) in the format given by path's suffix."""
    suffix = path.suffix
    if suffix in (".h5", ".hdf5"):
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=features)
            if coords is not None:
                f.create_dataset("coords", data=coords)
    elif suffix == ".pt":
        obj = {"features": torch.from_numpy(features)}
        if coords is not None:
            obj["coords"] = torch.from_numpy(coords)
        torch.save(obj, path)
    elif suffix == ".npy":
        np.save(path, features)
    elif suffix == ".safetensors":
        tensors = {"features": features}
        if coords is not None:
            tensors["coords"] = coords
        save_file(tensors, str(path))
    else:
        raise ValueError(suffix)
    return path


def truncate_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def features() -> np.ndarray:
    return make_features()
