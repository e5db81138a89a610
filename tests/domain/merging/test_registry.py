"""Registry: names, params parsing, describe, and build → artifact → load_model round trips."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from app.domain.merging.base import MergeParamsError, StaticModel
from app.domain.merging.registry import METHODS, UnknownMethodError, get_method, list_methods, load_model
from app.domain.task_vectors import IncompatibleCheckpointError

from .tiny import DIMS, EDGES

ALL = ["steph", "average", "task_arithmetic", "ties", "learned_weights", "routing", "ensemble", "auto"]

ROUND_TRIPS = [
    ("steph", {}),
    ("steph", {"lam_mode": "global", "topk": None, "hyper_hidden": 6}),
    ("steph", {"lam_mode": "fixed", "lam_value": 0.0, "topk": 2}),
    ("average", {}),
    ("average", {"retrain_head": False, "include_target": False}),
    ("task_arithmetic", {"weights": [1.0, 0.5, 2.0], "scale": 0.4}),
    ("ties", {"trim": "global", "density": 0.5}),
    ("learned_weights", {}),
    ("learned_weights", {"lam_mode": "fixed", "topk": 2}),
    ("routing", {"topk": 2}),
    ("routing", {"include_target": False}),
    ("ensemble", {}),
    ("ensemble", {"main_method": "average", "source_weight": 0.5}),
]


def perturb_trainable(model: torch.nn.Module) -> None:
    """Move every trainable parameter away from its initial value (as training would)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize(("name", "params"), ROUND_TRIPS)
def test_round_trip_gives_identical_outputs(inputs, bags, name, params):
    method = get_method(name)
    model = method.build(inputs, method.parse_params(params), seed=3)
    perturb_trainable(model)
    model.eval()
    config = json.loads(json.dumps(model.artifact_config()))
    loaded = load_model({k: v.clone() for k, v in model.artifact_tensors().items()}, config)
    assert type(loaded) is type(model) and loaded.method == name and not loaded.training
    assert loaded.dims == DIMS and loaded.bin_edges == EDGES
    with torch.no_grad():
        for bag in bags:
            out, again = model(bag), loaded(bag)
            assert_close(again.logits, out.logits, rtol=0.0, atol=0.0)
            assert_close(again.aux_loss, out.aux_loss)
            assert again.info == out.info
    assert config["params"] == {**method.parse_params({}).__dict__, **params}


def test_cancer_specific_loads_as_a_static_model(inputs, bags):
    model = StaticModel(inputs.target, DIMS, EDGES).eval()
    loaded = load_model(model.artifact_tensors(), json.loads(json.dumps(model.artifact_config())))
    assert isinstance(loaded, StaticModel) and loaded.method == "cancer_specific"
    assert_close(loaded(bags[1]).logits, model(bags[1]).logits)


def test_load_rejects_unknown_or_missing_method_and_mismatched_tensors(inputs):
    model = get_method("steph").build(inputs, get_method("steph").parse_params({}), seed=0)
    config, tensors = model.artifact_config(), model.artifact_tensors()
    with pytest.raises(UnknownMethodError, match="'adamerging'.*steph.*cancer_specific"):
        load_model(tensors, {**config, "method": "adamerging"})
    with pytest.raises(ValueError, match="no 'method'"):
        load_model(tensors, {"dims": config["dims"]})
    del tensors["head.bias"]
    with pytest.raises(ValueError, match="do not match its config"):
        load_model(tensors, config)


def test_get_method_lists_known_names():
    assert [get_method(n).name for n in ALL] == ALL and list(METHODS) == ALL
    with pytest.raises(UnknownMethodError) as info:
        get_method("nope")
    assert isinstance(info.value, ValueError)
    for name in ALL:
        assert name in str(info.value)


def test_list_methods_describes_every_parameter():
    described = list_methods()
    assert [d["name"] for d in described] == ALL
    for d in described:
        assert d["paper"] and d["summary"] and isinstance(d["learned"], bool)
        assert d["params"] and all(p["help"] for p in d["params"]), d["name"]
    steph = {p["name"]: p for p in described[0]["params"]}
    assert steph["topk"]["default"] == 5 and steph["topk"]["type"] == "int | None"
    assert steph["lam_mode"]["type"] == "'hyper' | 'fixed' | 'global'"
    assert [d["learned"] for d in described] == [True, False, False, False, True, True, True, True]


@pytest.mark.parametrize("name", ALL)
def test_unknown_parameter_lists_known_ones(name):
    method = get_method(name)
    known = [p["name"] for p in method.params_schema()]
    with pytest.raises(MergeParamsError, match="unknown parameter 'bogus'") as info:
        method.parse_params({"bogus": 1})
    assert all(k in str(info.value) for k in known)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("steph", {"topk": "5"}, "expected an integer"),
        ("steph", {"topk": 0}, "topk must be in \\[1, 4096\\]"),
        ("steph", {"lam_mode": "sometimes"}, "not one of"),
        ("steph", {"lam_value": 1.5}, r"lam_value must be in \[0, 1\]"),
        ("steph", {"gamma": -1.0}, r"must be finite numbers in \[0, 100\]"),
        ("average", {"include_target": 1}, "expected true or false"),
        ("task_arithmetic", {"scale": "big"}, "expected a number"),
        ("task_arithmetic", {"weights": [1.0, "x"]}, "expected a number, got .x. \\(or null\\)"),
        ("ties", {"density": 0.0}, r"density must be in \(0, 1\]"),
        ("ties", {"trim": "row"}, "not one of"),
        ("learned_weights", {"lam_mode": "hyper"}, "not one of"),
        ("routing", {"z_coef": -0.1}, "must be finite and ≥ 0"),
    ],
)
def test_bad_parameter_values_are_rejected(name, raw, message):
    with pytest.raises(MergeParamsError, match=message):
        get_method(name).parse_params(raw)


def test_inputs_are_checked(inputs):
    method = get_method("steph")
    bad = dict(inputs.sources[1])
    bad["feat_proj.0.weight"] = torch.zeros(8, 15)
    inputs.sources[1] = bad
    with pytest.raises(IncompatibleCheckpointError, match="cancer1.*feat_proj.0.weight"):
        method.build(inputs, method.parse_params({}), seed=0)
    inputs.source_names.pop()
    with pytest.raises(ValueError, match="3 source models but 2 source names"):
        method.build(inputs, method.parse_params({}), seed=0)
