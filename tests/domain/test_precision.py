"""Reduced-precision inference and training (app.domain.precision, mil.project): float32 stays exact, a
bfloat16 / float16 bag runs the big matmuls in that dtype for every model type, autocast works in the merge,
and training in bf16 still reaches w and λ with dropout active."""

from __future__ import annotations

import pytest
import torch

from app.domain import precision
from app.domain.merging.base import StaticModel
from app.domain.merging.registry import get_method
from app.domain.precision import cast_bag, cpu_has_native_bf16, resolve_inference_dtype, resolve_train_dtype
from app.domain.training import TrainConfig
from tests.domain.merging.tiny import DIMS, EDGES, make_inputs

METHODS = [("steph", {}), ("learned_weights", {}), ("routing", {"topk": 2}), ("ties", {})]


def _bags() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(n, DIMS.in_dim, generator=gen) for n in (1, 9, 40)]


def test_resolve_inference_dtype():
    assert resolve_inference_dtype("float32") is torch.float32
    assert resolve_inference_dtype("bfloat16") is torch.bfloat16 and resolve_inference_dtype("float16") is torch.float16
    assert resolve_inference_dtype("auto", "cuda") is torch.float16
    assert resolve_inference_dtype("auto", "cpu") is (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    with pytest.raises(ValueError, match="not one of auto, float32"):
        resolve_inference_dtype("fp8")
    bag = torch.randn(3, 4)
    assert cast_bag(bag, torch.float32) is bag and cast_bag(bag, torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_training_auto_dtype_is_bf16_where_the_hardware_has_it_and_never_float16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)
    expected = torch.bfloat16 if native else torch.float32
    assert resolve_train_dtype("auto", "cpu") is expected
    assert resolve_train_dtype("auto", "cuda") is expected  # inference "auto" on CUDA is float16; training never
    assert resolve_train_dtype("float16", "cpu") is torch.float16  # what a job asks for explicitly stays
    resolved = TrainConfig(compute_dtype="auto", epochs=3).resolved()
    assert resolved.compute_dtype == ("bfloat16" if native else "float32") and resolved.epochs == 3
    assert TrainConfig(compute_dtype="float32").resolved().compute_dtype == "float32"


@pytest.mark.parametrize(("name", "params"), [*METHODS, ("cancer_specific", {})], ids=lambda x: str(x))
def test_reduced_precision_is_close_to_float32_for_every_model(name, params):
    inputs = make_inputs(3)
    if name == "cancer_specific":
        model = StaticModel(inputs.target, DIMS, EDGES).eval()
    else:
        model = get_method(name).build(inputs, get_method(name).parse_params(params), seed=1).eval()
    for bag in _bags():
        with torch.inference_mode():
            ref = model(bag)
            for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
                out = model(bag.to(dtype))
                assert out.logits.dtype == torch.float32 and out.attention is not None
                err = float((out.logits - ref.logits).abs().max())
                assert 0 < err < tol, (name, dtype, err)  # reduced, so not bit-equal, but close
            with torch.autocast("cpu", dtype=torch.bfloat16):  # used to fail in the merge: dtype mismatch
                auto = model(bag)
            assert float((auto.logits.float() - ref.logits).abs().max()) < 5e-2


def test_bf16_training_still_reaches_the_hypernetworks_with_dropout_active():
    method = get_method("steph")
    model = method.build(make_inputs(3), method.parse_params({}), seed=1).train()
    bag = _bags()[2].to(torch.bfloat16)
    torch.manual_seed(0)
    first = model(bag)
    second = model(bag)
    assert not torch.equal(first.logits, second.logits)  # dropout draws differ in train mode
    (first.logits.sum() + first.aux_loss).backward()
    for name in ("shared.weight", "mlp_w.0.weight", "mlp_r.3.weight", "head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.dtype == torch.float32 and float(grad.abs().sum()) > 0, name
    assert TrainConfig(compute_dtype="bfloat16").compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="compute_dtype"):
        TrainConfig(compute_dtype="int8")


def test_train_with_compute_dtype_bfloat16_runs_the_bags_in_bf16_and_learns():
    from app.domain.data import Sample
    from app.domain.training import train

    method = get_method("steph")
    model = method.build(make_inputs(3), method.parse_params({}), seed=1)
    samples = [Sample(f"p{i}", bag, 100.0 + 200 * i, i % 2) for i, bag in enumerate(_bags() * 3)]
    seen = []
    original = model.forward
    model.forward = lambda bag: seen.append(bag.dtype) or original(bag)  # type: ignore[method-assign]
    before = model.head.weight.detach().clone()
    result = train(model, samples, TrainConfig(epochs=2, accum=3, lr=1e-2, compute_dtype="bfloat16"))
    assert set(seen) == {torch.bfloat16} and len(seen) == 2 * len(samples)
    assert all(torch.isfinite(torch.tensor(result.history))) and not torch.equal(before, model.head.weight)


@pytest.mark.parametrize(("src", "dst"), [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)])
def test_cast_bag_in_place_equals_a_copy_and_allocates_no_second_bag(src, dst):
    bag = (torch.randn(2 * precision.CAST_ROWS + 37, 24) * 100).to(src)  # not a multiple of the block
    expected = bag.to(dst)
    ptr = bag.data_ptr()
    out = cast_bag(bag, dst, reuse=True)
    assert out.dtype == dst and torch.equal(out, expected)
    assert out.data_ptr() == ptr  # the same memory: no [N, D] copy


def test_cast_bag_copies_unless_reuse_and_same_width():
    bag = torch.randn(50, 8).half()
    kept = bag.clone()
    out = cast_bag(bag, torch.bfloat16)  # reuse not asked: the caller's tensor is left alone
    assert torch.equal(bag, kept) and out.data_ptr() != bag.data_ptr()
    f32 = torch.randn(50, 8)
    assert cast_bag(f32, torch.bfloat16, reuse=True).data_ptr() != f32.data_ptr()  # 4 -> 2 bytes: a copy
    strided = torch.randn(8, 50).half().t()  # not contiguous
    out = cast_bag(strided, torch.bfloat16, reuse=True)
    assert torch.equal(out, strided.to(torch.bfloat16)) and out.data_ptr() != strided.data_ptr()
