"""STEPH's beta_rule 'relevance' (the default): β applies only when the sources pass the relevance pre-check;
otherwise STEPH trains with β = 0 — exactly the model a plain β = 0 merge gives — and says so in the notes."""

from __future__ import annotations

import pytest
import torch

from app.domain.merging.base import MergeParamsError
from app.domain.merging.registry import get_method
from app.domain.pipeline import fit_parsed
from app.domain.training import TrainConfig

from ..conftest import learnable_samples
from .tiny import make_inputs

CONFIG = TrainConfig(epochs=1, accum=4, lr=1e-2, seed=3)
STEPH = get_method("steph")


def _fit(**params):
    return fit_parsed(STEPH, STEPH.parse_params({"hyper_hidden": 8, **params}), make_inputs(3), CONFIG,
                      learnable_samples(16))  # fmt: skip


def _same(a, b) -> bool:
    ta, tb = a.artifact_tensors(), b.artifact_tensors()
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_sources_below_the_threshold_train_with_beta_zero():
    model, _, notes = _fit(relevance_z=10.0)  # no source reaches z 10
    rel = notes["relevance"]
    assert (
        rel["passed"] is False and rel["beta_used"] == 0.0 and "β = 0" in rel["reason"] and len(rel["per_source"]) == 3
    )
    plain, _, plain_notes = _fit(beta=0.0)  # β = 0 asked for: nothing to decide, no measurement
    assert "relevance" not in plain_notes and _same(model, plain)


def test_sources_above_the_threshold_keep_beta_and_fixed_or_paper_skip_the_check():
    model, _, notes = _fit(relevance_z=-10.0)
    assert notes["relevance"]["passed"] is True and notes["relevance"]["beta_used"] == 0.05
    fixed, _, fixed_notes = _fit(beta_rule="fixed")
    assert fixed_notes == {} and _same(model, fixed)  # β 0.05 either way: the same training
    assert STEPH.parse_params({"preset": "paper"}).beta_rule == "fixed"  # the paper's formulation exactly
    assert STEPH.parse_params({}).beta_rule == "relevance"
    assert _fit(lam_mode="fixed", lam_value=0.0)[2] == {}  # no λ to penalise: no check
    for bad in ({"beta_rule": "sometimes"}, {"relevance_z": 50}):
        with pytest.raises(MergeParamsError):
            STEPH.parse_params(bad)


def test_the_pre_check_is_reported_as_a_stage_before_training():
    seen = []
    fit_parsed(STEPH, STEPH.parse_params({"hyper_hidden": 8}), make_inputs(3), CONFIG, learnable_samples(16),
               progress=seen.append)  # fmt: skip
    assert seen[0].stage.startswith("relevance pre-check") and seen[0].total_steps == 0
    assert seen[-1].stage == "training" and seen[-1].step == seen[-1].total_steps > 0
    fixed = []
    fit_parsed(STEPH, STEPH.parse_params({"hyper_hidden": 8, "beta_rule": "fixed"}), make_inputs(3), CONFIG,
               learnable_samples(16), progress=fixed.append)  # fmt: skip
    assert all(p.stage == "training" for p in fixed)  # nothing measured: no such stage
