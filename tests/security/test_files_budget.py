"""app.services.bag_reading.read_patient: the service face of the readers' limits (413 / 422 / 503) and of the
issue-7 reading rules (fp16 kept, coords a tensor, one file not copied)."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import app.io.limits as limits
from app.io.errors import BagFormatError
from app.services.bag_reading import read_patient
from app.services.errors import PayloadTooLarge, ServiceUnavailable
from app.settings import Settings

D = 16


@dataclass
class F:
    path: Path
    name: str


def _h5(path: Path, n: int, dtype: str = "f4", coords: bool = True, seed: int = 0) -> F:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.standard_normal((n, D)).astype(dtype))
        if coords:
            f.create_dataset("coords", data=np.arange(2 * n, dtype=np.int32).reshape(n, 2))
    return F(path, f"client_{path.name}")


def test_reading_rules_and_shapes(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h", max_patches=100)
    a, b = _h5(tmp_path / "a.h5", 7, "f2", seed=1), _h5(tmp_path / "b.h5", 5, "f2", seed=2)
    one = read_patient(s, [a], D)
    assert one.features.dtype == torch.float16 and one.sizes == [7]
    assert one.coords is not None and one.coords.dtype == torch.int64 and one.coords[3].tolist() == [6, 7]
    two = read_patient(s, [a, b], D)
    assert two.features.shape == (12, D) and two.sizes == [7, 5] and two.coords is not None
    assert torch.equal(two.features[7:], read_patient(s, [b], D).features)
    c = _h5(tmp_path / "c.h5", 3, "f4", coords=False)
    mixed = read_patient(s, [a, c], D)
    assert mixed.features.dtype == torch.float32 and mixed.coords is None and mixed.sizes == [7, 3]


def test_limits_map_to_413_422_and_503(tmp_path: Path, monkeypatch) -> None:
    a = _h5(tmp_path / "a.h5", 60)
    b = F(a.path, "again.h5")
    with pytest.raises(PayloadTooLarge, match="hold 120 patches together, more than the limit of 100"):
        read_patient(Settings(home=tmp_path / "h", max_patches=100), [a, b], D)
    with pytest.raises(BagFormatError, match="client_a.h5: the bag holds 60 patches, more than the limit of 50"):
        read_patient(Settings(home=tmp_path / "h", max_patches=50), [a], D)
    small = Settings(home=tmp_path / "h", max_patches=100, request_memory_mb=1)
    big = _h5(tmp_path / "big.h5", 20_000, coords=False)  # 1.2 MiB of float32
    with pytest.raises(BagFormatError, match="per-request limit of 1.0 MiB"):
        read_patient(Settings(home=tmp_path / "h", max_patches=10**6, request_memory_mb=1), [big], D)
    assert read_patient(small, [a], D).features.shape == (60, D)
    busy = limits.MemoryBudget(10_000)
    busy.reserve(9_000, what="another request")
    monkeypatch.setattr("app.services.bag_reading.process_budget", lambda settings: busy)
    monkeypatch.setattr(limits.MemoryBudget, "reserve", _no_wait(limits.MemoryBudget.reserve))
    with pytest.raises(ServiceUnavailable, match="retry in a few seconds"):
        read_patient(small, [a], D)
    busy.release(9_000)
    bag = read_patient(small, [a], D)
    assert busy.used == 60 * D * 4  # held while the bag lives ...
    del bag
    gc.collect()
    assert busy.used == 0  # ... and released with it


def _no_wait(reserve):
    def wrapped(self, n_bytes, *, what, wait_s=10.0):
        return reserve(self, n_bytes, what=what, wait_s=0.05)

    return wrapped
