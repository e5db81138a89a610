"""Tiny objects for the merge-method tests: D = 16, hidden 8, attention 4, 4 bins; 3 sources."""

from __future__ import annotations

import torch

from app.domain.merging.base import MergeInputs
from app.domain.mil import FamilyDims, encoder_part, new_abmil
from app.domain.survival import default_bin_edges
from app.domain.task_vectors import StateDict

DIMS = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)
EDGES = default_bin_edges(4, 365)


def perturbed(state: StateDict, seed: int, scale: float = 0.2) -> StateDict:
    """state + scale · N(0, 1) noise (a stand-in for a fine-tuned model)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in state.items()}


def make_inputs(n_sources: int = 3, seed: int = 0) -> MergeInputs:
    """θ₀ = new_abmil(DIMS, seed); target and sources = θ₀ + distinct noise."""
    base = new_abmil(DIMS, seed).state_dict()
    return MergeInputs(
        base=base,
        target=perturbed(base, 1000 + seed),
        sources=[perturbed(base, 2000 + seed + i) for i in range(n_sources)],
        source_names=[f"cancer{i}" for i in range(n_sources)],
        target_name="target",
        dims=DIMS,
        bin_edges=EDGES,
    )


def encoder_tv(state: StateDict, base: StateDict) -> StateDict:
    """Encoder task vector τ = state − base (encoder keys only)."""
    return {k: state[k] - base[k] for k in encoder_part(base)}
