"""STEPH lam_init: where the mixup ratio λ starts (default unchanged, λ ≈ lam_init, validation, artifacts)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from app.domain.merging.base import MergeInputs, MergeParamsError
from app.domain.merging.registry import load_model
from app.domain.merging.stacked import hyper_mlp, seeded
from app.domain.merging.steph import LAM_INIT_WEIGHT_SCALE, StephMethod, StephModel

from .tiny import DIMS

METHOD = StephMethod()


def build(inputs: MergeInputs, seed: int = 3, **params) -> StephModel:
    model = METHOD.build(inputs, METHOD.parse_params(params), seed=seed)
    assert isinstance(model, StephModel)
    return model


def random_bags(n: int = 40, seed: int = 11) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(int(torch.randint(1, 50, (1,), generator=gen)), DIMS.in_dim, generator=gen) for _ in range(n)]


def mean_lam(model: StephModel, bags: list[torch.Tensor], *, selected_only: bool = False) -> float:
    with torch.no_grad():
        mixes = [model.hyper(bag) for bag in bags]
    lams = [m.lam[m.selected] if selected_only else m.lam for m in mixes]
    return float(torch.cat(lams).mean())


@pytest.mark.parametrize("lam_init", [0.9, 0.5, 0.2, 0.05])
@pytest.mark.parametrize("seed", [0, 3])
def test_mean_lam_at_initialisation_is_close_to_lam_init(inputs, lam_init, seed):
    bags = random_bags()
    model = build(inputs, seed=seed, lam_init=lam_init).eval()
    assert mean_lam(model, bags) == pytest.approx(lam_init, abs=0.03)
    assert mean_lam(model, bags, selected_only=True) == pytest.approx(lam_init, abs=0.03)
    with torch.no_grad():
        for bag in bags[:5]:  # r sits in the ReLU's active region: every λ_i < 1 gets a gradient
            assert bool((model.mlp_r(model.shared(bag).relu().mean(0)) > 0).all())
    # in train mode (dropout active in the hypernetwork) λ is still near lam_init
    model.train()
    assert mean_lam(model, bags) == pytest.approx(lam_init, abs=0.05)


def test_lam_init_sets_only_the_last_layer_of_the_r_hypernetwork(inputs):
    default, moved = build(inputs, seed=4), build(inputs, seed=4, lam_init=0.25)
    a, b = default.state_dict(), moved.state_dict()
    assert set(a) == set(b)
    for key in a:
        if key == "mlp_r.3.bias":
            assert_close(b[key], torch.full_like(a[key], 3.0))
        elif key == "mlp_r.3.weight":
            assert_close(b[key], LAM_INIT_WEIGHT_SCALE * a[key])
        else:
            assert torch.equal(a[key], b[key]), key


def test_lam_init_one_starts_lam_close_to_one(inputs):
    model = build(inputs, lam_init=1.0).eval()
    assert mean_lam(model, random_bags()) == pytest.approx(1.0, abs=0.02)


def test_default_model_is_unchanged_for_a_seed(inputs):
    """lam_init None (the default) must give exactly the initialisation the model had before lam_init existed:
    the hypernetworks as hyper_mlp draws them under seeded(seed + 1), and the target checkpoint's head."""
    seed = 7
    model = build(inputs, seed=seed)
    assert model.params.lam_init is None
    assert_close(model.state_dict(), build(inputs, seed=seed, lam_init=None).state_dict(), rtol=0, atol=0)
    with seeded(seed + 1):
        shared = nn.Linear(DIMS.in_dim, DIMS.hidden_dim)
        mlp_w = hyper_mlp(DIMS.hidden_dim, 3, 0.25)
        mlp_r = hyper_mlp(DIMS.hidden_dim, 3, 0.25)
    expected = {
        **{f"shared.{k}": v for k, v in shared.state_dict().items()},
        **{f"mlp_w.{k}": v for k, v in mlp_w.state_dict().items()},
        **{f"mlp_r.{k}": v for k, v in mlp_r.state_dict().items()},
        # the default head starts as the target checkpoint's head (head_init "target"; "fresh": make_head)
        "head.weight": inputs.target["pred_head.weight"],
        "head.bias": inputs.target["pred_head.bias"],
    }
    got = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    # the default bias is the usual small uniform init, not a lam_init value
    bound = 1.0 / DIMS.hidden_dim**0.5
    assert float(got["mlp_r.3.bias"].abs().max()) <= bound
    # and the outputs match those of a model built with every parameter spelt out at its old default
    bag = random_bags(1)[0]
    spelt = build(inputs, seed=seed, topk=5, gamma=1e-3, beta=0.05, lam_mode="hyper", crossfit="off")
    with torch.no_grad():
        assert torch.equal(model.eval()(bag).logits, spelt.eval()(bag).logits)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_lam_init_outside_0_1_is_rejected(bad):
    with pytest.raises(MergeParamsError, match="lam_init must be in \\(0, 1\\]"):
        METHOD.parse_params({"lam_init": bad})
    with pytest.raises(ValueError, match="lam_init"):
        METHOD.params_type(lam_init=bad)


def test_lam_init_needs_lam_mode_hyper_and_a_number():
    for mode in ("fixed", "global"):
        with pytest.raises(MergeParamsError, match="only applies to lam_mode 'hyper'"):
            METHOD.parse_params({"lam_mode": mode, "lam_init": 0.5})
    with pytest.raises(MergeParamsError, match="lam_init"):
        METHOD.parse_params({"lam_init": "low"})
    assert METHOD.parse_params({"lam_init": 1}).lam_init == 1.0
    assert METHOD.parse_params({"lam_init": None}).lam_init is None


def test_lam_init_is_listed_in_the_schema():
    rows = {row["name"]: row for row in METHOD.params_schema()}
    assert rows["lam_init"]["default"] is None and "1/lam_init − 1" in rows["lam_init"]["help"]


@pytest.mark.parametrize("lam_init", [0.5, 0.2])
def test_artifact_round_trip_keeps_predictions_identical(inputs, lam_init):
    model = build(inputs, seed=5, lam_init=lam_init)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # move every trainable parameter, as training would
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.eval()
    config = json.loads(json.dumps(model.artifact_config()))
    assert config["params"]["lam_init"] == lam_init
    loaded = load_model({k: v.clone() for k, v in model.artifact_tensors().items()}, config)
    assert isinstance(loaded, StephModel) and loaded.params.lam_init == lam_init
    with torch.no_grad():
        for bag in random_bags(6):
            out, again = model(bag), loaded(bag)
            assert_close(again.logits, out.logits, rtol=0.0, atol=0.0)
            assert_close(again.aux_loss, out.aux_loss, rtol=0.0, atol=0.0)
            assert again.info == out.info


def test_artifact_without_lam_init_loads_with_the_default(inputs):
    """Artifacts written before lam_init existed have no such key: they load as lam_init None."""
    model = build(inputs, seed=2).eval()
    config = json.loads(json.dumps(model.artifact_config()))
    del config["params"]["lam_init"]
    loaded = load_model(model.artifact_tensors(), config)
    assert loaded.params.lam_init is None
    bag = random_bags(1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(bag).logits, model(bag).logits)
