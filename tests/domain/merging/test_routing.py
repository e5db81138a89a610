"""routing (ROUPKT): shapes, top-k, expert features = frozen models' slide features, aux loss, gradients."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from app.domain.merging.base import MergeInputs
from app.domain.merging.routing import RoutingMethod, RoutingModel
from app.domain.mil import abmil_from_state, encoder_part
from app.domain.survival import nll_loss

METHOD = RoutingMethod()


def build(inputs: MergeInputs, seed: int = 3, **params) -> RoutingModel:
    model = METHOD.build(inputs, METHOD.parse_params(params), seed=seed)
    assert isinstance(model, RoutingModel)
    return model


@torch.no_grad()
def test_forward_shapes_topk_and_info(inputs, bags):
    model = build(inputs, topk=2).eval()
    for bag in bags:
        out = model(bag)
        assert out.logits.shape == (4,) and out.attention.shape == (bag.shape[0],)
        assert_close(out.attention.sum(), torch.tensor(1.0))
        _, p = model.route(bag)
        rows = out.info["sources"]
        assert len(rows) == 2 and all(r["lam"] is None for r in rows)
        assert [r["index"] for r in rows] == torch.topk(p, 2).indices.tolist()
        assert rows[0]["weight"] == pytest.approx(float(p.max()))
    assert model.expert_names == [*inputs.source_names, "target"]


def test_default_topk_is_clipped_and_target_is_optional(inputs, bags):
    assert len(build(inputs).eval()(bags[1]).info["sources"]) == 4  # 3 sources + target, topk 5
    model = build(inputs, include_target=False).eval()
    assert model.expert_names == inputs.source_names
    assert {r["name"] for r in model(bags[1]).info["sources"]} == set(inputs.source_names)


def test_expert_features_are_the_frozen_models_slide_features(inputs, bags):
    model = build(inputs).eval()
    members = [*inputs.sources, inputs.target]
    features, attention = model.expert_features(bags[2], torch.tensor([3, 0, 2]))
    for row, j in enumerate([3, 0, 2]):
        encoded = abmil_from_state(members[j]).eval().encode(bags[2])
        assert_close(features[row], encoded.slide_feature)
        assert_close(attention[row], encoded.attention)


def test_router_starts_from_the_target_encoder(inputs):
    router_state = build(inputs).router.state_dict()
    assert_close(router_state, encoder_part(inputs.target))


def test_output_and_aux_loss_formulas(inputs, bags):
    model = build(inputs, topk=2, balance_coef=0.1, z_coef=0.2).eval()
    bag = bags[2]
    logits, p = model.route(bag)
    selected = torch.topk(p, 2).indices
    features, _ = model.expert_features(bag, selected)
    z = sum(
        p[j] * torch.relu(model.expert_weight[j] @ features[row] + model.expert_bias[j])
        for row, j in enumerate(selected.tolist())
    )
    out = model(bag)
    assert_close(out.logits, model.head(z))
    expected_aux = 0.1 * 4 * p[selected].sum() + 0.2 * torch.logsumexp(logits, 0) ** 2
    assert_close(out.aux_loss, expected_aux)


def test_gradients_reach_router_experts_head_only(inputs, bags):
    model = build(inputs, topk=2).train()
    out = model(bags[3])
    loss = nll_loss(out.logits.unsqueeze(0), torch.tensor([1]), torch.tensor([1])) + out.aux_loss
    loss.backward()
    for name in ("router.feat_proj.0.weight", "router.attention_net.attention_c.weight", "router_fc.weight"):
        assert float(model.get_parameter(name).grad.abs().sum()) > 0, name
    assert float(model.head.weight.grad.abs().sum()) > 0
    selected = {r["index"] for r in out.info["sources"]}
    for j in range(4):
        grad_norm = float(model.expert_weight.grad[j].abs().sum())
        assert (grad_norm > 0) == (j in selected), j
    for name, buf in model.named_buffers():
        assert not buf.requires_grad and buf.grad is None, name


def test_needs_at_least_one_expert(inputs_factory):
    inputs = inputs_factory(0)
    with pytest.raises(ValueError, match="at least 1 source"):
        METHOD.build(inputs, METHOD.parse_params({"include_target": False}), seed=0)
    assert build(inputs).expert_names == ["target"]
