"""Tiny fixtures for the domain tests: D = 16, hidden 8, attention 4, 4 bins of 365 days, bags of 1–64."""

from __future__ import annotations

import pytest
import torch

from app.domain.data import Sample
from app.domain.merging.base import MergeInputs
from app.domain.mil import FamilyDims, new_abmil
from app.domain.survival import default_bin_edges
from app.domain.task_vectors import StateDict

DIMS = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)
EDGES = default_bin_edges(4, 365)


def perturbed(state: StateDict, seed: int, scale: float = 0.2) -> StateDict:
    """state + scale · N(0, 1) (seeded): a stand-in for a fine-tuned checkpoint."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in state.items()}


def learnable_samples(n: int = 32, seed: int = 0, dims: FamilyDims = DIMS) -> list[Sample]:
    """A learnable survival problem: even-numbered patients are high-risk (patches shifted by +d, |d| = 3) and
    die within 100–300 days; the others (shift −d) within 800–1500 days; every 4th patient is censored.
    Bags of 1–64 patches.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(dims.in_dim, generator=gen)
    direction = direction / direction.norm() * 3.0
    out = []
    for i in range(n):
        high = i % 2 == 0
        n_patches = int(torch.randint(1, 65, (1,), generator=gen))
        bag = torch.randn(n_patches, dims.in_dim, generator=gen) + (direction if high else -direction)
        base_days = 100.0 if high else 800.0
        time = base_days + float(torch.rand(1, generator=gen)) * (200.0 if high else 700.0)
        out.append(Sample(f"p{i:03d}", bag, time, int(i % 4 != 3)))
    return out


@pytest.fixture
def dims() -> FamilyDims:
    return DIMS


@pytest.fixture
def edges() -> list[float]:
    return list(EDGES)


@pytest.fixture
def base_state() -> StateDict:
    return {k: v.detach().clone() for k, v in new_abmil(DIMS, seed=0).state_dict().items()}


@pytest.fixture
def samples() -> list[Sample]:
    return learnable_samples()


@pytest.fixture
def merge_inputs(base_state: StateDict) -> MergeInputs:
    return MergeInputs(
        base=base_state,
        target=perturbed(base_state, 1),
        sources=[perturbed(base_state, 2), perturbed(base_state, 3)],
        source_names=["src_a", "src_b"],
        target_name="tgt",
        dims=DIMS,
        bin_edges=list(EDGES),
    )
