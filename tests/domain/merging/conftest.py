"""Fixtures for the merge-method tests (tiny: D = 16, hidden 8, attention 4, 4 bins, bags of 1–64 patches)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from app.domain.merging.base import MergeInputs

from .tiny import DIMS, make_inputs


@pytest.fixture
def inputs() -> MergeInputs:
    return make_inputs(3)


@pytest.fixture
def inputs_factory() -> Callable[..., MergeInputs]:
    return make_inputs


@pytest.fixture
def bags() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(n, DIMS.in_dim, generator=gen) for n in (1, 5, 23, 64)]
