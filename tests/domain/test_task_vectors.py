"""Task vectors: compute/apply round trip and compatibility errors that name the offending key."""

from __future__ import annotations

import math

import pytest
import torch

from app.domain.task_vectors import (
    IncompatibleCheckpointError,
    apply_task_vector,
    check_compatible,
    compute_task_vector,
    layer_norms,
)

from .conftest import perturbed


def test_round_trip(base_state):
    tuned = perturbed(base_state, 11)
    tv = compute_task_vector(tuned, base_state)
    assert set(tv) == set(base_state)
    assert torch.allclose(tv["feat_proj.0.weight"], tuned["feat_proj.0.weight"] - base_state["feat_proj.0.weight"])
    back = apply_task_vector(base_state, tv)
    assert all(torch.allclose(back[k], tuned[k], atol=1e-6) for k in tuned)
    half = apply_task_vector(base_state, tv, scale=0.5)
    k = "pred_head.bias"
    assert torch.allclose(half[k], (base_state[k] + tuned[k]) / 2, atol=1e-6)


def test_apply_partial_task_vector_copies_other_keys(base_state):
    tv = {"pred_head.bias": torch.ones(4)}
    out = apply_task_vector(base_state, tv, scale=2.0)
    assert torch.allclose(out["pred_head.bias"], base_state["pred_head.bias"] + 2)
    assert torch.equal(out["feat_proj.0.weight"], base_state["feat_proj.0.weight"])
    out["feat_proj.0.weight"].add_(1)  # a copy, not the base's tensor
    assert not torch.equal(out["feat_proj.0.weight"], base_state["feat_proj.0.weight"])
    with pytest.raises(IncompatibleCheckpointError, match="'nope'"):
        apply_task_vector(base_state, {"nope": torch.zeros(1)})


def test_layer_norms(base_state):
    tv = {k: torch.zeros_like(v) for k, v in base_state.items()}
    tv["pred_head.bias"] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    norms = layer_norms(tv)
    assert math.isclose(norms["pred_head.bias"], 5.0) and norms["feat_proj.0.weight"] == 0.0
    tv["pred_head.bias"] = torch.full((4,), 3e38)  # each value fits float32, the norm (6e38) does not
    assert math.isclose(layer_norms(tv)["pred_head.bias"], 6e38, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (
            lambda s: s.pop("attention_net.attention_a.0.bias"),
            "missing key 'attention_net.attention_a.0.bias'",
        ),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "unexpected key 'extra.weight'"),
        (
            lambda s: s.__setitem__("pred_head.weight", torch.zeros(5, 8)),
            r"'pred_head.weight' has shape \[5, 8\], expected \[4, 8\]",
        ),
        (
            lambda s: s.__setitem__("feat_proj.0.bias", s["feat_proj.0.bias"].double()),
            "'feat_proj.0.bias' has dtype float64, expected float32",
        ),
        (
            lambda s: s["attention_net.attention_c.weight"].__setitem__((0, 1), float("nan")),
            "'attention_net.attention_c.weight' holds 1 non-finite",
        ),
        (
            lambda s: s["feat_proj.0.bias"].__setitem__(0, -3e6),
            "'feat_proj.0.bias' holds a value of magnitude 3e\\+06, above the limit",
        ),
    ],
)
def test_check_compatible_names_the_key(base_state, mutate, pattern):
    cand = {k: v.clone() for k, v in base_state.items()}
    check_compatible(base_state, cand, name="brca.safetensors")
    mutate(cand)
    with pytest.raises(IncompatibleCheckpointError, match=pattern) as info:
        check_compatible(base_state, cand, name="brca.safetensors")
    assert "brca.safetensors" in str(info.value)
    with pytest.raises(IncompatibleCheckpointError):
        compute_task_vector(cand, base_state)
