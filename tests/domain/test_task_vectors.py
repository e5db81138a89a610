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


def test_base_retention_tells_a_fine_tuned_checkpoint_from_another_initialisation():
    from app.cli.engine import DEFAULT_MIN_BASE_RETENTION as CLI_DEFAULT
    from app.domain.mil import FamilyDims
    from app.domain.task_vectors import DEFAULT_MIN_BASE_RETENTION, base_retention, check_descends_from
    from app.settings import Settings
    from tests.fixtures import base_state, checkpoint_state

    base = base_state()
    tuned = checkpoint_state(base, seed=1)
    assert base_retention(base, base) == pytest.approx(1.0)
    assert 0.8 < base_retention(base, tuned) < 1.2
    grown = {k: 3.0 * v for k, v in tuned.items()}  # training that grows the weights keeps θ₀'s share (cosine drops)
    assert base_retention(base, grown) > 2.0
    other = checkpoint_state(base_state(seed=9), seed=2)
    assert abs(base_retention(base, other)) < DEFAULT_MIN_BASE_RETENTION  # ≈ 0 ± 0.1 on this 200-weight model
    big = FamilyDims(in_dim=256, hidden_dim=64, attn_dim=32, n_bins=4)  # ≈ 20 000 weights: the spread shrinks
    big_base, big_other = base_state(big, seed=0), checkpoint_state(base_state(big, seed=1), seed=2)
    assert abs(base_retention(big_base, big_other)) < 0.03
    assert 0.95 < base_retention(big_base, checkpoint_state(big_base, seed=3)) < 1.05
    assert check_descends_from(base, tuned, name="ok") == pytest.approx(base_retention(base, tuned))
    with pytest.raises(IncompatibleCheckpointError, match=r"other\.safetensors does not look trained from this base"):
        check_descends_from(base, other, name="other.safetensors")
    assert check_descends_from(base, other, min_retention=-1) == pytest.approx(base_retention(base, other))
    zero = {k: torch.zeros_like(v) for k, v in base.items()}
    assert base_retention(zero, other) is None and check_descends_from(zero, other) is None
    assert DEFAULT_MIN_BASE_RETENTION == CLI_DEFAULT == Settings().min_base_retention


def test_rescaled_and_untrained_checkpoints_are_refused():
    from app.domain.task_vectors import check_descends_from
    from tests.fixtures import base_state, checkpoint_state

    base = base_state()
    tuned = checkpoint_state(base, seed=1)
    scaled = {k: 1e5 * v for k, v in tuned.items()}  # retention ≈ 1e5 passes the lower limit: the size does not
    with pytest.raises(IncompatibleCheckpointError, match=r"scaled\.pt: its weights are 1\.1e\+05 times the size"):
        check_descends_from(base, scaled, name="scaled.pt")
    assert check_descends_from(base, {k: 3.0 * v for k, v in tuned.items()}) > 2.0  # grown weights: still fine
    with pytest.raises(IncompatibleCheckpointError, match=r"base\.pt is identical to its base .* learned nothing"):
        check_descends_from(base, {k: v.clone() for k, v in base.items()}, name="base.pt")
    nearly = {k: v + 1e-9 for k, v in base.items()}
    with pytest.raises(IncompatibleCheckpointError, match="identical to its base"):
        check_descends_from(base, nearly)
    assert check_descends_from(base, scaled, min_retention=-1) > 1e4  # the switch turns every check off
    assert check_descends_from(base, base, min_retention=-1) == pytest.approx(1.0)
