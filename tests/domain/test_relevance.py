"""Source relevance (app.domain.relevance): sources that know the target's prognostic direction rank its patients
well above chance with a large z; unrelated sources sit near C = ½; the ensemble, the bootstrap and the errors."""

from __future__ import annotations

import pytest
import torch

from app.domain.merging.base import ModelOutput
from app.domain.relevance import source_relevance

from .conftest import DIMS, learnable_samples

EDGES = [0.0, 200.0, 600.0, 1200.0, 2000.0]


class DirectionModel(torch.nn.Module):
    """A stand-in source model: hazard logits rise with the bag's mean projection on `direction`."""

    def __init__(self, direction: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("direction", direction)
        self.bin_edges = EDGES

    def forward(self, bag: torch.Tensor) -> ModelOutput:
        s = (bag.float() @ self.direction).mean() / self.direction.norm()
        return ModelOutput(torch.full((len(EDGES) - 1,), float(s)), torch.zeros(()))


def _true_direction(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)  # learnable_samples draws its direction first from this seed
    return torch.randn(DIMS.in_dim, generator=gen)


def _orthogonal_to(d: torch.Tensor, seed: int) -> torch.Tensor:
    v = torch.randn(d.shape[0], generator=torch.Generator().manual_seed(seed))
    return v - (v @ d) / (d @ d) * d


def test_sources_that_share_the_prognostic_direction_are_relevant():
    samples = learnable_samples(40)
    d = _true_direction()
    rel = source_relevance([DirectionModel(d), DirectionModel(d + 0.5 * _orthogonal_to(d, 1))], ["a", "b"], samples)
    # ≈ 0.8 is the ceiling here: within each risk group the times are random
    assert rel["c"] > 0.75 and rel["z"] > 5 and rel["ci_low"] > 0.65 and rel["patients"] == 40
    assert set(rel["per_source"]) == {"a", "b"} and all(c > 0.75 for c in rel["per_source"].values())
    flipped = source_relevance([DirectionModel(-d)], ["anti"], samples)  # knows the direction, wrong sign
    assert flipped["c"] < 0.25 and flipped["z"] < -5


def test_unrelated_sources_sit_near_chance_and_the_ensemble_averages_them():
    samples = learnable_samples(40)
    d = _true_direction()
    unrelated = [DirectionModel(_orthogonal_to(d, s)) for s in (1, 2, 3)]
    rel = source_relevance(unrelated, ["x", "y", "z"], samples, seed=3)
    assert abs(rel["c"] - 0.5) < 0.1 and abs(rel["z"]) < 1.645 and rel["se"] > 0.02
    assert rel["ci_low"] < 0.5 < rel["ci_high"]
    # one relevant source among three unrelated ones still lifts the ensemble above the unrelated ones alone
    mixed = source_relevance([*unrelated, DirectionModel(d)], ["x", "y", "z", "d"], samples, seed=3)
    assert mixed["c"] > rel["c"] + 0.1 and mixed["per_source"]["d"] > 0.75
    assert source_relevance(unrelated, ["x", "y", "z"], samples, seed=3) == rel  # deterministic for a seed


def test_bad_inputs_are_refused_with_the_reason():
    samples = learnable_samples(8)
    with pytest.raises(ValueError, match="at least one source model"):
        source_relevance([], [], samples)
    censored = [type(s)(s.patient_id, s.bag, s.time, 0) for s in samples]
    with pytest.raises(ValueError, match="no comparable pair"):
        source_relevance([DirectionModel(_true_direction())], ["a"], censored)


def test_large_bags_are_subsampled_deterministically_and_a_cancel_stops_it():
    from app.domain.training import TrainingCancelled

    samples = learnable_samples(30)
    d = _true_direction()
    full = source_relevance([DirectionModel(d)], ["a"], samples)
    few = source_relevance([DirectionModel(d)], ["a"], samples, max_patches=2, seed=5)
    assert few == source_relevance([DirectionModel(d)], ["a"], samples, max_patches=2, seed=5)
    assert few["c"] != full["c"] and few["c"] > 0.6  # two patches per bag still carry the direction
    half = source_relevance([DirectionModel(d)], ["a"], samples, dtype=torch.bfloat16)
    assert abs(half["c"] - full["c"]) < 0.02
    with pytest.raises(TrainingCancelled, match="cancelled"):
        source_relevance([DirectionModel(d)], ["a"], samples, should_cancel=lambda: True)
