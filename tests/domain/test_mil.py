"""ABMIL: the reference state-dict layout, dimension inference, encoder/head split, forward shapes."""

from __future__ import annotations

import pytest
import torch

from app.domain.mil import (
    ABMIL,
    abmil_from_state,
    encoder_part,
    head_part,
    infer_dims,
    is_encoder_key,
    new_abmil,
    reference_shapes,
)

from .conftest import DIMS


def test_state_dict_keys_and_shapes_are_the_reference_layout():
    state = ABMIL(DIMS).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == reference_shapes(DIMS)
    assert reference_shapes(DIMS)["feat_proj.0.weight"] == (8, 16)
    assert reference_shapes(DIMS)["attention_net.attention_c.weight"] == (1, 4)
    assert reference_shapes(DIMS)["pred_head.weight"] == (4, 8)


def test_infer_dims_reads_every_dimension_and_names_a_missing_key():
    state = ABMIL(DIMS).state_dict()
    assert infer_dims(state) == DIMS
    other = infer_dims(new_abmil(type(DIMS)(in_dim=5, hidden_dim=7, attn_dim=3, n_bins=2)).state_dict())
    assert (other.in_dim, other.hidden_dim, other.attn_dim, other.n_bins) == (5, 7, 3, 2)
    del state["attention_net.attention_b.0.bias"]
    with pytest.raises(KeyError, match="attention_net.attention_b.0.bias"):
        infer_dims(state)


def test_encoder_and_head_parts_partition_the_state():
    state = ABMIL(DIMS).state_dict()
    enc, head = encoder_part(state), head_part(state)
    assert set(head) == {"pred_head.weight", "pred_head.bias"}
    assert set(enc) | set(head) == set(state) and not set(enc) & set(head)
    assert all(is_encoder_key(k) for k in enc) and not any(is_encoder_key(k) for k in head)


def test_forward_shapes_attention_and_bag_checks():
    model = new_abmil(DIMS, seed=3).eval()
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 64):
        bag = torch.randn(n, 16, generator=gen)
        enc = model.encode(bag)
        assert enc.attention.shape == (n,) and enc.slide_feature.shape == (8,)
        assert torch.allclose(enc.attention.sum(), torch.tensor(1.0), atol=1e-6)
        logits = model(bag)
        assert logits.shape == (4,)
        assert torch.allclose(model(bag.unsqueeze(0)), logits)
    with pytest.raises(ValueError, match="D = 15"):
        model(torch.randn(3, 15))
    with pytest.raises(ValueError, match="N = 0"):
        model(torch.randn(0, 16))


def test_single_patch_bag_attends_fully_and_slide_feature_is_its_projection():
    model = new_abmil(DIMS, seed=1).eval()
    bag = torch.randn(1, 16)
    enc = model.encode(bag)
    assert torch.allclose(enc.attention, torch.ones(1))
    assert torch.allclose(enc.slide_feature, torch.relu(model.feat_proj[0](bag))[0])


def test_new_abmil_is_seeded_and_leaves_the_global_rng_alone():
    rng = torch.random.get_rng_state()
    a, b, c = new_abmil(DIMS, 5), new_abmil(DIMS, 5), new_abmil(DIMS, 6)
    assert torch.equal(torch.random.get_rng_state(), rng)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["feat_proj.0.weight"], sc["feat_proj.0.weight"])
    rebuilt = abmil_from_state(sa)
    assert rebuilt.dims == DIMS and all(torch.equal(rebuilt.state_dict()[k], sa[k]) for k in sa)
