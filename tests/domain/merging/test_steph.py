"""STEPH: merge identities, stacked merge vs a naive loop, gradients, top-k, λ ablations, info, aux loss."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from app.domain.merging.base import MergeInputs, fresh_head_state
from app.domain.merging.steph import StephMethod, StephModel
from app.domain.mil import ABMIL, encoder_part
from app.domain.survival import nll_loss

from .tiny import DIMS, encoder_tv

METHOD = StephMethod()


def build(inputs: MergeInputs, seed: int = 3, **params) -> StephModel:
    model = METHOD.build(inputs, METHOD.parse_params(params), seed=seed)
    assert isinstance(model, StephModel)
    return model


def naive_merge(inputs: MergeInputs, w: torch.Tensor, lam: torch.Tensor, selected: list[int]) -> dict:
    """θ₀ + Σ_{i∈S} w_i (λ_i τ_t + (1 − λ_i) τ_{s_i}), one source at a time."""
    tau_t = encoder_tv(inputs.target, inputs.base)
    out = {k: v.clone() for k, v in encoder_part(inputs.base).items()}
    for i in selected:
        tau_s = encoder_tv(inputs.sources[i], inputs.base)
        for k in out:
            out[k] = out[k] + w[i] * (lam[i] * tau_t[k] + (1 - lam[i]) * tau_s[k])
    return out


def test_zero_weights_give_the_base(inputs):
    merged = build(inputs).merged_encoder_from(torch.zeros(3), torch.rand(3))
    assert_close(merged, encoder_part(inputs.base))


def test_one_source_with_weight_one_and_lam_zero_gives_that_source(inputs):
    merged = build(inputs).merged_encoder_from(torch.tensor([0.0, 1.0, 0.0]), torch.zeros(3))
    assert_close(merged, encoder_part(inputs.sources[1]))


def test_lam_one_moves_along_the_target_task_vector(inputs):
    w = torch.tensor([0.7, 0.2, 0.4])
    merged = build(inputs, topk=None).merged_encoder_from(w, torch.ones(3))
    tau_t = encoder_tv(inputs.target, inputs.base)
    assert_close(merged, {k: inputs.base[k] + 1.3 * tau_t[k] for k in tau_t})
    single = build(inputs).merged_encoder_from(torch.tensor([0.7, 0.0, 0.0]), torch.ones(3))
    assert_close(single, {k: inputs.base[k] + 0.7 * tau_t[k] for k in tau_t})


@pytest.mark.parametrize("topk", [1, 2, None])
def test_stacked_merge_equals_a_loop_over_sources(inputs, topk):
    gen = torch.Generator().manual_seed(11)
    w, lam = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
    selected = torch.argsort(w, descending=True)[: topk or 3].tolist()
    merged = build(inputs, topk=topk).merged_encoder_from(w, lam)
    assert_close(merged, naive_merge(inputs, w, lam, selected))


def test_per_bag_merge_follows_the_hypernetworks_and_the_forward_uses_it(inputs, bags):
    model = build(inputs, topk=2).eval()
    for bag in bags[:3]:
        mix = model.hyper(bag)
        assert len(mix.selected) == 2 and mix.weights.min() >= 0 and mix.weights.max() > 0
        assert bool(((mix.lam > 0) & (mix.lam <= 1)).all())
        merged = model.merged_encoder_for(bag)
        assert_close(merged, naive_merge(inputs, mix.weights, mix.lam, mix.selected.tolist()))
        reference = ABMIL(DIMS).eval()
        reference.load_state_dict({**merged, "pred_head.weight": model.head.weight, "pred_head.bias": model.head.bias})
        out = model(bag)
        assert_close(out.logits, reference(bag))
        assert_close(out.attention, reference.encode(bag).attention)


def test_different_bags_get_different_merges(inputs, bags):
    model = build(inputs).eval()
    a, b = model.merged_encoder_for(bags[1]), model.merged_encoder_for(bags[3])
    assert not torch.allclose(a["feat_proj.0.weight"], b["feat_proj.0.weight"])


def test_gradients_reach_hypernetworks_and_head_not_frozen_tensors(inputs, bags):
    model = build(inputs).train()
    loss = sum(
        nll_loss(out.logits.unsqueeze(0), torch.tensor([i % 4]), torch.tensor([i % 2])) + out.aux_loss
        for i, out in enumerate(model(bag) for bag in bags)
    )
    loss.backward()
    for name in (
        "shared.weight",
        "mlp_w.0.weight",
        "mlp_w.3.weight",
        "mlp_r.0.weight",
        "mlp_r.3.weight",
        "head.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    for name, buf in model.named_buffers():
        assert not buf.requires_grad and buf.grad is None, name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()}
    assert {n.split(".")[0] for n in trainable} == {"shared", "mlp_w", "mlp_r", "head"}


def test_topk_none_selects_all_and_k_is_clipped(inputs, bags):
    for params, expected in (({"topk": None}, 3), ({"topk": 5}, 3), ({"topk": 1}, 1)):
        out = build(inputs, **params).eval()(bags[2])
        assert len(out.info["sources"]) == expected


def test_info_lists_selected_sources_by_weight(inputs, bags):
    model = build(inputs, topk=2).eval()
    with torch.no_grad():
        mix = model.hyper(bags[2])
    rows = model(bags[2]).info["sources"]
    weights = [r["weight"] for r in rows]
    assert weights == sorted(weights, reverse=True)
    for row in rows:
        assert row["name"] == inputs.source_names[row["index"]]
        assert row["weight"] == pytest.approx(float(mix.weights[row["index"]]))
        assert row["lam"] == pytest.approx(float(mix.lam[row["index"]]))
    assert {r["index"] for r in rows} == set(mix.selected.tolist())


def test_aux_loss_formula(inputs, bags):
    model = build(inputs, topk=2, gamma=0.1, beta=0.05).eval()
    mix = model.hyper(bags[1])
    w, sel = mix.weights, mix.selected
    expected = 0.1 * (torch.logsumexp(w, 0) ** 2 + w[sel].sum() / 2) + 0.05 * (mix.lam[sel] ** 2).mean()
    assert_close(model(bags[1]).aux_loss, expected)


@pytest.mark.parametrize("lam_value", [0.0, 1.0])
def test_fixed_lam(inputs, bags, lam_value):
    model = build(inputs, lam_mode="fixed", lam_value=lam_value, gamma=0.1).eval()
    assert model.mlp_r is None and model.lam_logit is None
    mix = model.hyper(bags[1])
    assert_close(mix.lam, torch.full((3,), lam_value))
    assert_close(model.merged_encoder_for(bags[1]), naive_merge(inputs, mix.weights, mix.lam, mix.selected.tolist()))
    w = mix.weights
    assert_close(model(bags[1]).aux_loss, 0.1 * (torch.logsumexp(w, 0) ** 2 + w.sum() / 3))


def test_global_lam_is_shared_across_bags_and_trainable(inputs, bags):
    model = build(inputs, lam_mode="global", lam_value=0.3).train()
    assert model.mlp_r is None
    assert_close(model.hyper(bags[0]).lam, torch.full((3,), 0.3))
    assert_close(model.hyper(bags[0]).lam, model.hyper(bags[3]).lam)
    model(bags[3]).aux_loss.backward()
    assert model.lam_logit.grad is not None and float(model.lam_logit.grad.abs().sum()) > 0


def test_artifact_holds_base_stack_hypernetworks_and_head(inputs):
    model = build(inputs, seed=5)
    tensors = model.artifact_tensors()
    stack = tensors["task_vectors.feat_proj__0__weight"]
    assert stack.shape == (4, DIMS.hidden_dim, DIMS.in_dim)
    assert_close(stack[0], inputs.target["feat_proj.0.weight"] - inputs.base["feat_proj.0.weight"])
    assert_close(stack[3], inputs.sources[2]["feat_proj.0.weight"] - inputs.base["feat_proj.0.weight"])
    assert_close(tensors["base.attention_net__attention_c__bias"], inputs.base["attention_net.attention_c.bias"])
    assert_close(tensors["head.weight"], inputs.target["pred_head.weight"])  # default head_init "target"
    fresh = build(inputs, seed=5, head_init="fresh").artifact_tensors()
    assert_close(fresh["head.weight"], fresh_head_state(DIMS, 5)["pred_head.weight"])
    assert {"shared.weight", "mlp_w.0.weight", "mlp_r.3.bias"} <= set(tensors)
    config = model.artifact_config()
    assert config["source_names"] == inputs.source_names and config["target_name"] == "target"
    assert config["params"]["topk"] == 5 and config["method"] == "steph"


def test_bag_with_wrong_dimension_is_rejected(inputs):
    with pytest.raises(ValueError, match="D = 16"):
        build(inputs)(torch.randn(4, 15))


# issue 12: presets, weights that cannot die, collapse detection and per-bag merge statistics


def _kill_w(model: StephModel) -> None:
    """MLP_w outputs −10 for every bag: ReLU weights are exactly 0, softplus ones ≈ 4.5e-5 (still a gradient)."""
    last = model.mlp_w[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)


def test_presets_resolve_the_weight_activation():
    assert METHOD.parse_params({}).w_act == "softplus"
    paper = METHOD.parse_params({"preset": "paper"})
    assert (paper.w_act, paper.topk, paper.beta, paper.lam_mode) == ("relu", 5, 0.05, "hyper")
    assert METHOD.parse_params({"preset": "paper", "w_act": "softplus"}).w_act == "softplus"
    with pytest.raises(ValueError, match="w_act"):
        METHOD.parse_params({"w_act": "tanh"})


def test_softplus_weights_cannot_die_but_relu_weights_collapse_to_the_base(inputs, bags):
    from app.domain.data import Sample
    from app.domain.merging.mix_stats import merge_statistics

    samples = [Sample(f"p{i}", b, 100.0 + i, 1) for i, b in enumerate(bags)]
    paper, default = build(inputs, preset="paper").eval(), build(inputs).eval()
    for model in (paper, default):
        _kill_w(model)
    for bag in bags:
        assert float(paper.hyper(bag).weights.detach().abs().max()) == 0.0
        assert_close(paper.merged_encoder_for(bag), encoder_part(inputs.base))
        assert float(default.hyper(bag).weights.detach().min()) > 0.0
    dead = merge_statistics(paper, samples)
    alive = merge_statistics(default, samples)
    assert dead["collapsed"] and dead["zero_w_bags"] == 1.0 and dead["sum_w"]["mean"] == 0.0
    assert not alive["collapsed"] and alive["zero_w_bags"] == 0.0 and alive["sum_w"]["q10"] > 0.0


def test_merge_statistics_match_the_hypernetworks(inputs, bags):
    from app.domain.data import Sample
    from app.domain.merging.mix_stats import merge_statistics

    model = build(inputs, topk=2).eval()
    samples = [Sample(f"p{i}", b, 100.0 + i, 1) for i, b in enumerate(bags)]
    stats = merge_statistics(model, samples)
    with torch.no_grad():
        mixes = [model.hyper(b) for b in bags]
    sum_w = torch.tensor([float(m.weights[m.selected].sum()) for m in mixes], dtype=torch.float64)
    lam = torch.tensor([float(m.lam[m.selected].mean()) for m in mixes], dtype=torch.float64)
    assert stats["bags"] == 4
    assert stats["sum_w"]["mean"] == pytest.approx(float(sum_w.mean()))
    assert stats["lam"]["q50"] == pytest.approx(
        float(lam.median()) if len(lam) % 2 else float(lam.sort()[0][1:3].mean())
    )
    assert sum(stats["topk_share"].values()) == pytest.approx(2.0)  # k sources per bag
    first = inputs.source_names[int(mixes[0].selected[0])]
    assert stats["topk_share"][first] >= 0.25
    with pytest.raises(ValueError, match="STEPH"):
        merge_statistics(object(), samples)


def test_an_artifact_from_before_w_act_loads_with_the_papers_relu_weights(inputs, bags):
    """Artifacts written before the `preset`/`w_act` parameters existed were trained with w = ReLU(·): their config
    has neither key, and they must predict exactly as they did (not silently switch to softplus)."""
    old = build(inputs, preset="paper").eval()
    config = old.artifact_config()
    for key in ("preset", "w_act"):
        config["params"].pop(key)
    loaded = METHOD.load(old.artifact_tensors(), config)
    assert loaded.params.w_act == "relu"
    for bag in bags:
        assert_close(loaded(bag).logits, old(bag).logits, rtol=0, atol=0)
    assert METHOD.load(build(inputs).artifact_tensors(), build(inputs).artifact_config()).params.w_act == "softplus"


def test_head_init_target_starts_from_the_target_checkpoints_head(inputs, bags):
    from app.domain.merging import steph

    assert METHOD.parse_params({"preset": "paper"}).head_init == "fresh"
    assert METHOD.parse_params({}).head_init == steph.DEFAULT_HEAD_INIT
    with pytest.raises(ValueError, match="head_init"):
        METHOD.parse_params({"head_init": "source"})
    fresh, target = build(inputs, head_init="fresh"), build(inputs, head_init="target")
    assert_close(target.head.weight, inputs.target["pred_head.weight"])
    assert_close(target.head.bias, inputs.target["pred_head.bias"])
    assert not torch.equal(fresh.head.weight, target.head.weight)
    # a copy: training the head must not write into the registered checkpoint's tensors
    assert target.head.weight.data_ptr() != inputs.target["pred_head.weight"].data_ptr()
    for name, p in fresh.named_parameters():  # everything but the head starts the same
        if not name.startswith("head."):
            assert torch.equal(p, dict(target.named_parameters())[name]), name
    bag = bags[0]
    assert not torch.equal(fresh(bag).logits, target(bag).logits)  # the head is what differs


def test_a_merge_with_lambda_one_everywhere_used_no_source_knowledge(inputs, bags):
    """λ = 1 on every bag: the encoder moves along τ_t only, however large the weights; merge_statistics says
    so (source share 0), while λ = ½ gives a share of ½."""
    from app.domain.data import Sample
    from app.domain.merging.mix_stats import merge_statistics

    samples = [Sample(f"p{i}", b, 100.0 + i, 1) for i, b in enumerate(bags)]
    model = build(inputs, topk=2).eval()
    last = model.mlp_r[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)  # ReLU(·) = 0 → λ = 1
    stats = merge_statistics(model, samples)
    assert stats["lam"]["mean"] == 1.0 and stats["source_share"]["mean"] == 0.0
    assert stats["no_source_knowledge"] and not stats["collapsed"] and stats["sum_w"]["mean"] > 0.0
    with torch.no_grad():
        last.bias.fill_(1.0)  # λ = 1/(1 + 1) = ½
    half = merge_statistics(model, samples)
    assert half["source_share"]["mean"] == pytest.approx(0.5) and not half["no_source_knowledge"]
