"""Static merges: task arithmetic, averaging and TIES against hand-computed values."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from app.domain.merging.base import MergeInputs, StaticModel, fresh_head_state
from app.domain.merging.static import (
    AverageMethod,
    TaskArithmeticMethod,
    TiesMethod,
    ties_merge,
    trim_top,
)
from app.domain.mil import encoder_part

from .tiny import DIMS, encoder_tv

EXACT = {"rtol": 0.0, "atol": 0.0}


def build(method, inputs: MergeInputs, seed: int = 3, **params) -> StaticModel:
    model = method.build(inputs, method.parse_params(params), seed=seed)
    assert isinstance(model, StaticModel) and model.method == method.name
    return model


def test_task_arithmetic_one_source_scale_one_gives_the_source_exactly(inputs_factory):
    inputs = inputs_factory(1)
    model = build(TaskArithmeticMethod(), inputs, scale=1.0, include_target=False, retrain_head=False)
    assert_close(model.artifact_tensors(), inputs.sources[0], **EXACT)
    assert model.extra_config["params"]["retrain_head"] is False
    assert not TaskArithmeticMethod().needs_training(TaskArithmeticMethod().parse_params({"retrain_head": False}))


def test_task_arithmetic_weighted_sum_and_fresh_head(inputs_factory):
    inputs = inputs_factory(2)
    model = build(TaskArithmeticMethod(), inputs, seed=9, scale=0.3, weights=[0.5, 2.0], target_weight=1.5)
    tau_t, tau_0, tau_1 = (encoder_tv(s, inputs.base) for s in (inputs.target, *inputs.sources))
    expected = {k: inputs.base[k] + 0.3 * (1.5 * tau_t[k] + 0.5 * tau_0[k] + 2.0 * tau_1[k]) for k in tau_t}
    state = model.artifact_tensors()
    assert_close(encoder_part(state), expected)
    assert_close({k: state[k] for k in ("pred_head.weight", "pred_head.bias")}, fresh_head_state(DIMS, 9))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "abmil.pred_head.weight",
        "abmil.pred_head.bias",
    }
    assert TaskArithmeticMethod().needs_training(TaskArithmeticMethod().parse_params({}))


def test_task_arithmetic_weights_must_match_the_sources(inputs):
    method = TaskArithmeticMethod()
    with pytest.raises(ValueError, match="weights has 2 entries but the job has 3 source checkpoint"):
        method.build(inputs, method.parse_params({"weights": [1.0, 2.0]}), seed=0)


def test_average_of_identical_models_is_that_model(inputs_factory):
    inputs = inputs_factory(2)
    same = inputs.sources[0]
    inputs = dataclasses.replace(inputs, target=same, sources=[same, same])
    model = build(AverageMethod(), inputs, retrain_head=False)
    assert_close(model.artifact_tensors(), same)
    assert not AverageMethod().needs_training(AverageMethod().parse_params({"retrain_head": False}))


def test_average_is_the_mean_encoder(inputs):
    model = build(AverageMethod(), inputs, include_target=False, seed=4)
    state = model.artifact_tensors()
    for key in ("feat_proj.0.weight", "attention_net.attention_c.bias"):
        assert_close(state[key], sum(s[key] for s in inputs.sources) / 3)
    assert_close(state["pred_head.bias"], fresh_head_state(DIMS, 4)["pred_head.bias"])


def test_trim_keeps_the_largest_entries_per_tensor_or_globally():
    tv = {"a": torch.tensor([0.1, 5.0]), "b": torch.tensor([-3.0, 0.2, 1.0])}
    (per_tensor,) = trim_top([tv], 0.4, "per_tensor")  # a keeps ceil(0.8) = 1, b keeps ceil(1.2) = 2
    assert_close(per_tensor, {"a": torch.tensor([0.0, 5.0]), "b": torch.tensor([-3.0, 0.0, 1.0])})
    (global_,) = trim_top([tv], 0.4, "global")  # 5 entries, keep ceil(2.0) = 2
    assert_close(global_, {"a": torch.tensor([0.0, 5.0]), "b": torch.tensor([-3.0, 0.0, 0.0])})


def test_ties_trim_elect_and_disjoint_mean_by_hand():
    tvs = [
        {"x": torch.tensor([3.0, -1.0, 0.5, 2.0, -4.0])},  # trimmed: [3, 0, 0, 2, -4]
        {"x": torch.tensor([-2.0, -3.0, 1.5, -0.1, 1.0])},  # trimmed: [-2, -3, 1.5, 0, 0]
        {"x": torch.tensor([1.0, 2.0, -5.0, 0.2, 0.3])},  # trimmed: [1, 2, -5, 0, 0]
    ]
    # sums [2, -1, -3.5, 2, -4] -> signs [+, -, -, +, -]; disjoint means of agreeing entries:
    assert_close(ties_merge(tvs, 0.6), {"x": torch.tensor([2.0, -3.0, -5.0, 2.0, -4.0])})


def test_ties_zero_elected_sign_gives_zero():
    tvs = [{"x": torch.tensor([1.0, 2.0])}, {"x": torch.tensor([-1.0, -1.0])}]
    assert_close(ties_merge(tvs, 1.0), {"x": torch.tensor([0.0, 2.0])})


def test_ties_single_source_full_density_gives_the_source(inputs_factory):
    inputs = inputs_factory(1)
    model = build(TiesMethod(), inputs, density=1.0, include_target=False, retrain_head=False)
    assert_close(model.artifact_tensors(), inputs.sources[0], **EXACT)


def test_ties_build_uses_scale_and_keeps_sparsity(inputs):
    dense = build(TiesMethod(), inputs, density=0.2, scale=1.0).artifact_tensors()
    half = build(TiesMethod(), inputs, density=0.2, scale=0.5).artifact_tensors()
    key = "feat_proj.0.weight"
    delta = dense[key] - inputs.base[key]
    assert_close(half[key] - inputs.base[key], 0.5 * delta, rtol=1e-5, atol=1e-6)
    kept = int((delta != 0).sum())  # union of 4 trimmed vectors, each keeping ceil(0.2 · 128) = 26 entries
    assert 26 <= kept <= 4 * 26


def test_static_config_records_params_and_names(inputs):
    config = build(TiesMethod(), inputs, trim="global").artifact_config()
    assert config["method"] == "ties" and config["params"]["trim"] == "global"
    assert config["source_names"] == inputs.source_names and config["target_name"] == "target"
