"""learned_weights: one global merge θ₀ + Σ w_i (λ_i τ_t + (1 − λ_i) τ_{s_i}) with trainable w and λ."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from app.domain.merging.base import MergeInputs
from app.domain.merging.learned import LearnedWeightsMethod, LearnedWeightsModel
from app.domain.survival import nll_loss

from .tiny import encoder_tv

METHOD = LearnedWeightsMethod()


def build(inputs: MergeInputs, **params) -> LearnedWeightsModel:
    model = METHOD.build(inputs, METHOD.parse_params(params), seed=3)
    assert isinstance(model, LearnedWeightsModel)
    return model


def test_initial_merge_is_weighted_mixup(inputs):
    merged = build(inputs, init_weight=0.3, lam_value=0.25).merged_encoder_state()
    tau_t = encoder_tv(inputs.target, inputs.base)
    taus = [encoder_tv(s, inputs.base) for s in inputs.sources]
    expected = {k: inputs.base[k] + 3 * 0.3 * 0.25 * tau_t[k] + 0.3 * 0.75 * sum(t[k] for t in taus) for k in tau_t}
    assert_close(merged, expected)


def test_topk_keeps_the_largest_weights(inputs):
    model = build(inputs, topk=1, lam_mode="fixed", lam_value=0.0)
    with torch.no_grad():
        model.weights.copy_(torch.tensor([0.2, -0.5, 0.9]))
    tau = encoder_tv(inputs.sources[2], inputs.base)
    assert_close(model.merged_encoder_state(), {k: inputs.base[k] + 0.9 * tau[k] for k in tau})
    assert [r["index"] for r in model.eval()(torch.randn(3, 16)).info["sources"]] == [2]


def test_merge_is_the_same_for_every_bag_and_gradients_reach_w_lam_head(inputs, bags):
    model = build(inputs).train()
    outs = [model(bag) for bag in bags[:2]]
    assert outs[0].info == outs[1].info
    assert float(outs[0].aux_loss) == 0.0
    loss = sum(nll_loss(o.logits.unsqueeze(0), torch.tensor([2]), torch.tensor([1])) for o in outs)
    loss.backward()
    for name in ("weights", "lam_logit", "head.weight"):
        assert float(model.get_parameter(name).grad.abs().sum()) > 0, name
    assert {n for n, _ in model.named_parameters()} == {"weights", "lam_logit", "head.weight", "head.bias"}
    assert all(b.grad is None for b in model.buffers())


def test_fixed_lam_has_no_lam_parameter(inputs):
    model = build(inputs, lam_mode="fixed", lam_value=1.0)
    assert model.lam_logit is None
    tau_t = encoder_tv(inputs.target, inputs.base)
    assert_close(model.merged_encoder_state(), {k: inputs.base[k] + 0.9 * tau_t[k] for k in tau_t})
