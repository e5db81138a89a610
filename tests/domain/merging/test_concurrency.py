"""Predictions are a pure function of (model, bag): one shared model scored from many threads at once gives
exactly what scoring one bag at a time gives, for every model type (STEPH, learned_weights, routing, the
static merges and a cancer-specific ABMIL). Before the pure encoder, STEPH and routing swapped parameters into
one shared skeleton module (functional_call) and concurrent calls corrupted each other."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from app.domain.merging.base import StaticModel, SurvivalModel
from app.domain.merging.registry import get_method
from app.domain.mil import encode_with

from .tiny import DIMS, EDGES, make_inputs

THREADS, ROUNDS = 8, 3
SPECS = [
    ("steph", {}),
    ("steph", {"lam_mode": "global", "topk": 2}),
    ("learned_weights", {"topk": 2}),
    ("routing", {"topk": 2}),
    ("ensemble", {}),
    ("average", {}),
    ("task_arithmetic", {}),
    ("ties", {}),
    ("cancer_specific", {}),
]


def _model(name: str, params: dict) -> SurvivalModel:
    inputs = make_inputs(3)
    if name == "cancer_specific":
        model: SurvivalModel = StaticModel(inputs.target, DIMS, EDGES, method=name)
    else:
        method = get_method(name)
        model = method.build(inputs, method.parse_params(params), seed=5)
    with torch.no_grad():  # move every trainable tensor off its initial value, so the models differ per bag
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _bags(n: int = 48) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    sizes = torch.randint(1, 65, (n,), generator=gen).tolist()
    return [2 * torch.randn(s, DIMS.in_dim, generator=gen) for s in sizes]


def _score(model: SurvivalModel, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
    with torch.inference_mode():
        out = model(bag)
    assert out.attention is not None
    return out.logits.clone(), out.attention.clone(), out.info.get("sources", [])


@pytest.mark.parametrize(("name", "params"), SPECS, ids=[f"{n}{i}" for i, (n, _) in enumerate(SPECS)])
def test_many_threads_give_the_sequential_results(name, params):
    model, bags = _model(name, params), _bags()
    expected = [_score(model, b) for b in bags]
    assert len({round(float(e[0].sum()), 4) for e in expected}) > len(bags) // 2  # bags really score differently
    start = threading.Barrier(THREADS)

    def work(offset: int) -> list[tuple[int, tuple]]:
        start.wait()
        order = [(offset + i) % len(bags) for i in range(len(bags))]  # threads hit different bags at once
        return [(i, _score(model, bags[i])) for i in order for _ in range(ROUNDS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for chunk in pool.map(work, range(0, len(bags), len(bags) // THREADS)) for r in chunk]
    assert len(results) == THREADS * ROUNDS * len(bags)
    worst = 0.0
    for i, (logits, attention, sources) in results:
        worst = max(
            worst, float((logits - expected[i][0]).abs().max()), float((attention - expected[i][1]).abs().max())
        )
        assert [s["index"] for s in sources] == [s["index"] for s in expected[i][2]], i
    assert worst <= 1e-6, f"{name}: concurrent scoring differs from sequential by {worst}"


def test_encode_with_mutates_nothing_and_matches_the_module():
    model = _model("cancer_specific", {})
    assert isinstance(model, StaticModel)
    params = {k: v.clone() for k, v in model.abmil.state_dict().items() if not k.startswith("pred_head.")}
    before = {k: v.clone() for k, v in params.items()}
    bag = _bags(1)[0]
    via_function = encode_with(params, bag)
    h = model.abmil.feat_proj(bag)
    attention = torch.softmax(model.abmil.attention_net(h), dim=0)  # the nn.Module path, written out
    torch.testing.assert_close(via_function.attention, attention, rtol=0, atol=1e-7)
    torch.testing.assert_close(via_function.slide_feature, attention @ h, rtol=0, atol=1e-6)
    assert all(torch.equal(params[k], before[k]) for k in params)
    with pytest.raises(ValueError, match="expects D = 16"):
        encode_with(params, torch.randn(3, 5))


@pytest.mark.parametrize("name", ["steph", "cancer_specific"])
def test_big_bags_are_scored_in_row_blocks_with_the_same_result(name):
    from app.domain.mil import CHUNK_ROWS

    model = _model(name, {})
    bag = torch.randn(2 * CHUNK_ROWS + 123, DIMS.in_dim, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        blocks = model(bag)  # no autograd: the gates (and STEPH's e) are computed block by block
    with torch.enable_grad():
        whole = model(bag)  # autograd on: one pass over all rows
    assert blocks.attention is not None and whole.attention is not None
    torch.testing.assert_close(blocks.logits, whole.logits.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(blocks.attention, whole.attention.detach(), rtol=0, atol=1e-8)
