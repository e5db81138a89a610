"""Evaluation: outputs, risks, Harrell's C on a cohort, and the paired bootstrap comparison."""

from __future__ import annotations

import pytest
import torch

from app.domain.data import Sample
from app.domain.evaluation import bootstrap_difference, compare, evaluate, predict_outputs, risks
from app.domain.merging.base import StaticModel
from app.domain.metrics import harrell_c_index
from app.domain.mil import new_abmil
from app.domain.survival import risk_score

from .conftest import DIMS, EDGES, perturbed


def static(seed: int) -> StaticModel:
    return StaticModel(new_abmil(DIMS, seed).state_dict(), DIMS, EDGES)


def test_predict_outputs_and_risks(samples):
    model = static(0)
    model.train()
    outs = predict_outputs(model, samples)
    assert model.training  # mode restored
    assert len(outs) == len(samples)
    for out, s in zip(outs, samples, strict=True):
        assert out.logits.shape == (4,) and out.attention.shape == (s.bag.shape[0],)
        assert not out.logits.requires_grad and float(out.aux_loss) == 0.0
    r = risks(model, samples)
    assert r.dtype == torch.float64 and r.shape == (len(samples),)
    model.eval()
    with torch.no_grad():
        direct = torch.stack([risk_score(model(s.bag).logits) for s in samples]).double()
    assert torch.allclose(r, direct)
    assert bool((r < 0).all() and (r >= -4).all())  # −Σ of 4 survival probabilities


def test_evaluate_is_harrell_on_the_risks(samples):
    model = static(1)
    res = evaluate(model, samples)
    ref = harrell_c_index([s.time for s in samples], [s.event for s in samples], risks(model, samples))
    assert (res.c_index, res.pairs, res.patients) == (ref.c_index, ref.pairs, len(samples))
    assert res.to_dict() == {"c_index": ref.c_index, "pairs": ref.pairs, "patients": len(samples)}


def test_bootstrap_matrix_form_equals_harrell_on_explicit_resamples():
    gen = torch.Generator().manual_seed(3)
    n = 25
    time = torch.randint(1, 10, (n,), generator=gen).double()
    event = torch.rand(n, generator=gen) < 0.6
    ra, rb = torch.randint(0, 5, (n,), generator=gen).double(), torch.randn(n, generator=gen).double()
    diffs = bootstrap_difference(time, event, ra, rb, n_boot=20, seed=9)
    # replay the same resamples
    replay = torch.Generator().manual_seed(9)
    idx = torch.randint(0, n, (20, n), generator=replay)
    expected = []
    for row in idx:
        try:
            ca = harrell_c_index(time[row], event[row], ra[row]).c_index
            cb = harrell_c_index(time[row], event[row], rb[row]).c_index
        except ValueError:
            continue
        expected.append(ca - cb)
    assert len(expected) > 10
    assert torch.allclose(diffs, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_compare_ci_contains_the_difference(samples):
    model = static(0)
    other = StaticModel(perturbed(new_abmil(DIMS, 0).state_dict(), 5, scale=0.5), DIMS, EDGES)
    comp = compare(model, other, samples, n_boot=300, seed=1)
    assert comp.merged_c_index == evaluate(model, samples).c_index
    assert comp.reference_c_index == evaluate(other, samples).c_index
    assert comp.difference == pytest.approx(comp.merged_c_index - comp.reference_c_index)
    assert comp.difference != 0.0
    assert comp.ci_low <= comp.difference <= comp.ci_high and comp.ci_low < comp.ci_high
    assert comp.n_boot == 300 and comp.patients == len(samples) and comp.pairs > 0
    d = comp.to_dict()
    assert d["merged_c_index"] == comp.merged_c_index and d["ci_low"] == comp.ci_low and d["pairs"] == comp.pairs
    expected = "better" if comp.ci_low > 0 else "worse" if comp.ci_high < 0 else "inconclusive"
    assert d["verdict"] == comp.verdict == expected
    again = compare(model, other, samples, n_boot=300, seed=1)
    assert again == comp


def test_verdict_follows_the_interval():
    from app.domain.evaluation import Comparison

    def comp(low: float, high: float) -> Comparison:
        return Comparison(0.6, 0.55, (low + high) / 2, low, high, 100, 40, 300)

    assert comp(0.01, 0.09).verdict == "better" and comp(-0.09, -0.01).verdict == "worse"
    assert comp(-0.02, 0.08).verdict == "inconclusive" and comp(0.0, 0.05).verdict == "inconclusive"


def test_compare_with_itself_has_a_zero_interval(samples):
    model = static(2)
    comp = compare(model, model, samples, n_boot=50)
    assert comp.difference == 0.0 and comp.ci_low == 0.0 and comp.ci_high == 0.0


def test_compare_skips_resamples_without_comparable_pairs():
    # one event at t = 1 and one censoring at t = 2: many resamples hold only one of them
    bags = [torch.randn(3, 16), torch.randn(5, 16)]
    tiny = [Sample("a", bags[0], 1.0, 1), Sample("b", bags[1], 2.0, 0)]
    comp = compare(static(0), static(1), tiny, n_boot=200, seed=0)
    assert 50 < comp.n_boot < 200 and comp.pairs == 1
    with pytest.raises(ValueError, match="n_boot"):
        compare(static(0), static(1), tiny, n_boot=0)


def test_evaluate_without_comparable_pairs_says_why():
    tiny = [Sample("a", torch.randn(3, 16), 5.0, 0), Sample("b", torch.randn(2, 16), 1.0, 0)]
    with pytest.raises(ValueError, match="censored"):
        evaluate(static(0), tiny)


class CountingSamples(list):
    """A list of samples that counts item accesses (a lazy cohort loads a bag on each access)."""

    loads = 0

    def __getitem__(self, i):
        self.loads += 1
        return super().__getitem__(i)


def test_compare_loads_each_bag_once(samples):
    counting = CountingSamples(samples[:10])
    compare(static(0), static(1), counting, n_boot=10)
    assert counting.loads == 10


def test_compare_with_metrics_reads_each_bag_once_and_equals_the_separate_calls(samples):
    from app.domain.data import LazySamples
    from app.domain.evaluation import compare_with_metrics, evaluate_metrics

    class Counting(LazySamples):
        loads = 0

        def __init__(self, items):
            self.items = list(items)

        def _load(self, item):
            Counting.loads += 1
            return item

    model, other = static(1), static(2)
    ref_t, ref_e = [s.time for s in samples[:10]], [s.event for s in samples[:10]]
    lazy = Counting(samples)
    comp, reports = compare_with_metrics(model, other, lazy, ref_t, ref_e, n_boot=50, seed=1)
    assert Counting.loads == len(samples)  # one pass over the bags for both models and every metric
    assert comp == compare(model, other, samples, n_boot=50, seed=1)
    assert reports["merged"] == evaluate_metrics(model, samples, ref_t, ref_e).to_dict()
    assert reports["reference"] == evaluate_metrics(other, samples, ref_t, ref_e).to_dict()
    assert reports["merged"]["c_index"] == comp.merged_c_index != comp.reference_c_index


def test_a_model_that_gives_every_patient_the_same_risk_is_flagged(samples):
    """A merged model whose head ignores the bag (e.g. weights rescaled far from the base) ranks nobody: the
    metrics say constant_risk and the promotion reason warns (services.promotion)."""
    from types import SimpleNamespace

    from app.domain.evaluation import compare_with_metrics, is_constant
    from app.services.promotion import promotion_fields

    flat_state = {k: v.clone() for k, v in static(1).artifact_tensors().items()}
    flat_state["pred_head.weight"] = torch.zeros_like(flat_state["pred_head.weight"])  # logits = the bias alone
    flat = StaticModel(flat_state, DIMS, EDGES)
    ref_t, ref_e = [s.time for s in samples], [s.event for s in samples]
    _, reports = compare_with_metrics(flat, static(2), samples, ref_t, ref_e, n_boot=20, seed=0)
    assert reports["merged"]["constant_risk"] is True and "constant_risk" not in reports["reference"]
    _, fine = compare_with_metrics(static(1), static(2), samples, ref_t, ref_e, n_boot=20, seed=0)
    assert "constant_risk" not in fine["merged"]
    run = SimpleNamespace(promotion={"status": "not_promoted", "reason": "gain -0.000"}, merge_stats=None,
                          test_metrics=reports)  # fmt: skip
    fields = promotion_fields(run)
    assert fields["promotion"]["constant_risk"] is True and fields["job_promotion"]["constant_risk"] is True
    assert "gives every patient the same risk" in fields["promotion"]["reason"]
    # a promoted model that ranks nobody (it beat a worse-than-chance reference with C 0.5) is not promoted
    promoted = SimpleNamespace(promotion={"status": "promoted", "reason": "gain +0.114"}, merge_stats=None,
                               test_metrics=reports)  # fmt: skip
    fields = promotion_fields(promoted)
    assert fields["promotion_status"] == "not_promoted" and "whatever the gate estimated" in fields["promotion"][
        "reason"]  # fmt: skip
    ensemble = SimpleNamespace(promotion={"status": "promoted", "reason": "gain +0.1"}, merge_stats=None,
                               test_metrics=None, notes={"ensemble": {"degenerate": True}})  # fmt: skip
    assert promotion_fields(ensemble)["promotion_status"] == "not_promoted"  # no test split: the fit says it
    assert is_constant(torch.tensor([2.0, 2.0, 2.0])) and not is_constant(torch.tensor([2.0, 2.0 + 1e-6]))
    assert not is_constant(torch.tensor([]))
