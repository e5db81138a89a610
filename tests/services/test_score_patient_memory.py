"""score_patient casts a float16 bag to bfloat16 in place (no second [N, D] buffer), keeps the bag's memory
reserved through the forward, and scores exactly as the out-of-place cast does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from app.domain.merging.base import StaticModel
from app.domain.mil import FamilyDims, new_abmil
from app.domain.survival import default_bin_edges
from app.io.limits import process_budget
from app.services import predict as svc

DIMS = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)
SETTINGS = SimpleNamespace(max_patches=100_000, request_memory_mb=64, process_memory_mb=256, inference_dtype="bfloat16")


def _bag(path: Path, n: int) -> svc.BagFile:
    with h5py.File(path, "w") as f:
        f["features"] = np.random.default_rng(3).standard_normal((n, DIMS.in_dim)).astype(np.float16)
    return svc.BagFile(name=path.name, path=path)


def test_in_place_cast_scores_the_same_and_holds_the_reservation(tmp_path, monkeypatch):
    model = StaticModel(new_abmil(DIMS, 0).state_dict(), DIMS, default_bin_edges(DIMS.n_bins)).eval()
    bag = _bag(tmp_path / "slide.h5", 3_000)
    n_bytes = 3_000 * DIMS.in_dim * 2
    seen: dict[str, object] = {}
    forward = model.forward

    def spy(x: torch.Tensor):  # what the model receives, and the budget while it runs
        seen["dtype"], seen["reserved"] = x.dtype, process_budget().used
        return forward(x)

    monkeypatch.setattr(model, "forward", spy)
    cast = svc.cast_bag
    copies: list[bool] = []

    def spy_cast(t: torch.Tensor, dtype: torch.dtype, *, reuse: bool = False) -> torch.Tensor:
        out = cast(t, dtype, reuse=reuse)
        copies.append(out.data_ptr() != t.data_ptr())
        return out

    monkeypatch.setattr(svc, "cast_bag", spy_cast)
    before = process_budget(SETTINGS).used
    in_place = svc.score_patient(model, "P1", [bag], SETTINGS, 3)
    assert copies == [False] and seen["dtype"] == torch.bfloat16  # converted where it was read
    assert seen["reserved"] >= before + n_bytes  # the bag's bytes stayed reserved during the forward
    assert process_budget().used == before  # and were released afterwards

    monkeypatch.setattr(svc, "cast_bag", lambda t, dtype, reuse=False: cast(t, dtype))  # the out-of-place cast
    copied = svc.score_patient(model, "P1", [bag], SETTINGS, 3)
    assert in_place == copied  # risk, survival curve, hazards, top patches: identical
