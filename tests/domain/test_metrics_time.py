"""Time-dependent AUC and (integrated) Brier score: equal to scikit-survival on random data with ties
(hypothesis), hand-computed cases, every error, the S(t) step-function helper and evaluate_metrics()."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sksurv.metrics import brier_score, concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score

from app.domain.data import Sample
from app.domain.evaluation import default_times, evaluate, evaluate_metrics, risks
from app.domain.merging.base import StaticModel
from app.domain.metrics import NoComparablePairs, brier_scores, kaplan_meier
from app.domain.metrics import cumulative_dynamic_auc as auc_fn
from app.domain.metrics import integrated_brier_score as ibs_fn
from app.domain.mil import new_abmil
from app.domain.survival import survival_at, survival_at_times, survival_curve

from .conftest import DIMS, EDGES, learnable_samples
from .test_metrics import cohort

# the training cohort that provides the censoring distribution
train_cohort = st.lists(st.tuples(st.integers(1, 8), st.booleans()), min_size=1, max_size=14)


def draw_grid(data, time) -> list[float]:
    """Mostly a grid of whole and half days inside [min, max) of the test follow-up (where the metrics can be
    defined; whole days tie with the follow-up times), sometimes any days in 1..6 (mostly errors)."""
    inside = [k / 2 for k in range(2 * min(time), 2 * max(time))]
    pool = inside if inside and data.draw(st.integers(0, 3)) > 0 else [float(k) for k in range(1, 7)]
    return sorted(data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True)))


# survival probabilities on a coarse lattice, so that predictions tie too
prob = st.integers(0, 4).map(lambda k: k / 4)


def structured(time, event):
    return np.array(list(zip(map(bool, event), map(float, time), strict=True)), dtype=[("e", bool), ("t", float)])


def sk(fn, *args):
    """scikit-survival's result, or the ValueError message where it raises (None for a NaN AUC)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*args)
    except ValueError as exc:
        return str(exc)
    if fn is cumulative_dynamic_auc and (np.isnan(out[0]).any() or np.isnan(out[1])):
        return None
    return out


def ours(fn, *args):
    try:
        return fn(*args)
    except ValueError as exc:
        return exc


def late_cut(time, event, train_time, times, *, brier):
    """The same patients with follow-ups that carry no weight cut back (see the metrics module): scikit-survival
    raises on them; we give its value for this cohort. None when no such cut keeps every patient a control."""
    time, event = list(time), list(event)
    if not brier:  # AUC: events after the last time are controls only; as censorings they need no weight
        return time, [bool(e) and t <= times[-1] for t, e in zip(time, event, strict=True)]
    t_max = max(train_time)
    if t_max <= times[-1]:
        return None
    return [min(t, t_max) if t > times[-1] else t for t in time], event


@settings(max_examples=150, deadline=None)
@given(cohort, train_cohort, st.booleans(), st.data())
def test_auc_matches_sksurv(test, train, per_time, data):
    time, event, risk = test
    times = draw_grid(data, time)
    tr_t, tr_e = [float(t) for t, _ in train], [e for _, e in train]
    est = np.array(risk, float)
    if per_time:  # a risk per time (scikit-survival's 2-D estimate)
        est = np.stack([est + (k % 2) * 0.5 * (np.arange(len(est)) % 3) for k in range(len(times))], axis=1)
    ref = sk(cumulative_dynamic_auc, structured(tr_t, tr_e), structured(time, event), est, times)
    got = ours(auc_fn, tr_t, tr_e, time, event, torch.tensor(est), times)
    if isinstance(ref, str) and not isinstance(got, Exception) and ("largest" in ref or "is zero" in ref):
        time, event = late_cut(time, event, tr_t, times, brier=False)
        ref = sk(cumulative_dynamic_auc, structured(tr_t, tr_e), structured(time, event), est, times)
    if ref is None or isinstance(ref, str):
        assert isinstance(got, ValueError), (ref, got)
        return
    assert not isinstance(got, Exception), (ref, got)
    assert got.times == tuple(times)
    assert got.auc == pytest.approx(list(ref[0]), abs=1e-12)
    assert got.mean_auc == pytest.approx(float(ref[1]), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    cohort.flatmap(lambda c: st.tuples(st.just(c), st.lists(st.lists(prob, min_size=4, max_size=4),
                                                            min_size=len(c[0]), max_size=len(c[0])))),
    train_cohort,
    st.data(),
)  # fmt: skip
def test_brier_and_ibs_match_sksurv(test_and_surv, train, data):
    (time, event, _), surv = test_and_surv
    times = draw_grid(data, time)
    surv = np.array(surv, float)[:, : len(times)]
    tr_t, tr_e = [float(t) for t, _ in train], [e for _, e in train]
    args = (structured(tr_t, tr_e), structured(time, event), surv, times)
    ref = sk(brier_score, *args)
    got = ours(brier_scores, tr_t, tr_e, time, event, surv.tolist(), times)
    if isinstance(ref, str) and not isinstance(got, Exception) and "largest" in ref:
        cut = late_cut(time, event, tr_t, times, brier=True)
        if cut is None:  # no cohort of scikit-survival's shows this case; the score must still be a score
            assert all(0.0 <= s for s in got.scores)
            return
        time, event = cut
        args = (structured(tr_t, tr_e), structured(time, event), surv, times)
        ref = sk(brier_score, *args)
    if isinstance(ref, str):
        assert isinstance(got, ValueError), (ref, got)
        return
    assert not isinstance(got, Exception), (ref, got)
    assert got.times == tuple(ref[0]) and got.scores == pytest.approx(list(ref[1]), abs=1e-12)
    if len(times) >= 2:
        ibs = ibs_fn(tr_t, tr_e, time, event, surv.tolist(), times)
        assert ibs == pytest.approx(float(integrated_brier_score(*args)), abs=1e-12)


def test_continuous_times_larger_cohort_equal_sksurv():
    gen = torch.Generator().manual_seed(7)
    n_train, n = 300, 120
    tr_t = torch.rand(n_train, generator=gen).double() * 3000 + 1
    tr_e = torch.rand(n_train, generator=gen) < 0.6
    t = torch.rand(n, generator=gen).double() * 2500 + 1
    e = torch.rand(n, generator=gen) < 0.6
    risk = torch.randn(n, generator=gen).double()
    times = [365.0, 730.0, 1095.0, 1460.0, 1825.0]
    surv = torch.rand(n, 5, generator=gen).double().sort(dim=1, descending=True).values
    y_tr, y_te = structured(tr_t.tolist(), tr_e.tolist()), structured(t.tolist(), e.tolist())
    ref_auc, ref_mean = cumulative_dynamic_auc(y_tr, y_te, risk.numpy(), times)
    got = auc_fn(tr_t, tr_e, t, e, risk, times)
    assert got.auc == pytest.approx(ref_auc.tolist(), abs=1e-12) and got.mean_auc == pytest.approx(ref_mean)
    assert brier_scores(tr_t, tr_e, t, e, surv, times).scores == pytest.approx(
        brier_score(y_tr, y_te, surv.numpy(), times)[1].tolist(), abs=1e-12
    )
    assert ibs_fn(tr_t, tr_e, t, e, surv, times) == pytest.approx(
        integrated_brier_score(y_tr, y_te, surv.numpy(), times), abs=1e-12
    )


# ---- hand-computed cases --------------------------------------------------------------------------------------

# test patients: 1(e) 2(e) 3(c) 4(e) 5(c); a training cohort of events only, so G = 1 and weights are 1
TIME, EVENT = [1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 0, 1, 0]
ALL_EVENTS = ([1.0, 2.0, 6.0], [1, 1, 1])


def test_auc_hand_computed_with_a_tie():
    # t = 2.5: cases {1, 2}, controls {3, 4, 5}. Risks 9, 5 | 5, 1, 0: case 1 beats all three controls,
    # case 2 ties control 3 (½) and beats 4 and 5 → (3 + 2.5) / 6
    res = auc_fn(*ALL_EVENTS, TIME, EVENT, [9.0, 5.0, 5.0, 1.0, 0.0], [2.5])
    assert res.times == (2.5,) and res.auc == pytest.approx((5.5 / 6,)) and res.mean_auc == res.auc[0]
    # t = 4: cases {1, 2, 4}, controls {5}; the risks put control 5 above case 4 → 2 / 3
    res = auc_fn(*ALL_EVENTS, TIME, EVENT, [9.0, 5.0, 5.0, 1.0, 2.0], [2.5, 4.0])
    assert res.auc == pytest.approx((5.5 / 6, 2 / 3))
    # mean: test Kaplan–Meier S(2.5) = 3/5, S(4) = 3/5 · 1/2 → weights 2/5 and 3/10 over 1 − 3/10
    assert res.mean_auc == pytest.approx((5.5 / 6 * 0.4 + 2 / 3 * 0.3) / 0.7)


def test_auc_weights_cases_by_inverse_censoring():
    # training 1(c) 2(e) 3(e): G = 1 before 1, 2/3 from 1 on (1 − 1/(3 − 0)). Test cases at t = 0.5 (weight 1) and
    # t = 1.5 (weight 3/2); the first is ranked below the control, the second above → (3/2) / (1 + 3/2)
    train = ([1.0, 2.0, 3.0], [0, 1, 1])
    res = auc_fn(*train, [0.5, 1.5, 2.5], [1, 1, 0], [0.0, 2.0, 1.0], [2.0])
    assert res.auc == pytest.approx((0.6,))
    ref = cumulative_dynamic_auc(structured(*train), structured([0.5, 1.5, 2.5], [1, 1, 0]), [0.0, 2.0, 1.0], [2.0])
    assert res.auc[0] == pytest.approx(ref[0][0])


def test_brier_hand_computed():
    # t = 2.5 with G = 1: cases 1, 2 contribute S²; controls 3, 4, 5 contribute (1 − S)²; mean over all 5
    surv = [[0.2], [0.4], [0.7], [0.9], [1.0]]
    res = brier_scores(*ALL_EVENTS, TIME, EVENT, surv, [2.5])
    assert res.scores == pytest.approx(((0.04 + 0.16 + 0.09 + 0.01 + 0.0) / 5,))
    # a perfect prediction scores 0, the uninformative S = ½ scores ¼ where nobody is censored before t
    assert brier_scores(*ALL_EVENTS, TIME, EVENT, [[0.0], [0.0], [1.0], [1.0], [1.0]], [2.5]).scores == (0.0,)
    assert brier_scores(*ALL_EVENTS, TIME, EVENT, [[0.5]] * 5, [2.5]).scores == pytest.approx((0.25,))


def test_ibs_is_the_trapezoid_over_the_time_span():
    surv = [[0.2, 0.1, 0.0], [0.4, 0.2, 0.1], [0.7, 0.6, 0.5], [0.9, 0.8, 0.2], [1.0, 0.9, 0.8]]
    times = [1.5, 2.5, 4.5]
    bs = brier_scores(*ALL_EVENTS, TIME, EVENT, surv, times).scores
    expected = ((bs[0] + bs[1]) / 2 * 1.0 + (bs[1] + bs[2]) / 2 * 2.0) / 3.0
    assert ibs_fn(*ALL_EVENTS, TIME, EVENT, surv, times) == pytest.approx(expected)


def test_kaplan_meier_hand_computed():
    times, surv = kaplan_meier(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([True, True, False, True]))
    assert times[0] == -math.inf and times[1:].tolist() == [1.0, 2.0, 3.0]
    assert surv.tolist() == pytest.approx([1.0, 3 / 4, 3 / 4 * 2 / 3, 0.0])


def test_late_follow_up_that_carries_no_weight_is_allowed():
    # a test event at 9 lies beyond the training follow-up (8): scikit-survival raises although that patient is
    # a control at every time ≤ 4; we give its value for the patient cut back to 8
    train = ([2.0, 5.0, 8.0], [1, 0, 1])
    time, event, risk = [1.0, 3.0, 4.0, 9.0], [1, 1, 0, 1], [3.0, 2.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="largest observed time"):
        cumulative_dynamic_auc(structured(*train), structured(time, event), risk, [3.5])
    got = auc_fn(*train, time, event, risk, [3.5])
    ref = cumulative_dynamic_auc(structured(*train), structured([1.0, 3.0, 4.0, 8.0], event), risk, [3.5])
    assert got.auc == pytest.approx(tuple(ref[0]))
    surv = [[0.1], [0.4], [0.8], [0.9]]
    got_bs = brier_scores(*train, time, event, surv, [3.5])
    ref_bs = brier_score(structured(*train), structured([1.0, 3.0, 4.0, 8.0], event), surv, [3.5])
    assert got_bs.scores == pytest.approx(tuple(ref_bs[1]))


# ---- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "time", "event", "times", "exc", "pattern"),
    [
        (([1.0, 2.0], [0, 0]), TIME, EVENT, [2.5], NoComparablePairs, "all training patients are censored"),
        (ALL_EVENTS, TIME, [0] * 5, [2.5], NoComparablePairs, "all test patients are censored"),
        (ALL_EVENTS, TIME, EVENT, [0.5], NoComparablePairs, r"within the test follow-up \[1, 5\)"),
        (ALL_EVENTS, TIME, EVENT, [5.0], NoComparablePairs, "drop or move the times outside"),
        (([1.0, 2.0], [1, 1]), TIME, EVENT, [2.5, 4.0], NoComparablePairs, "beyond the training follow-up"),
        (ALL_EVENTS, TIME, EVENT, [3.0, 2.0], ValueError, "strictly increasing"),
        (ALL_EVENTS, TIME, EVENT, [], ValueError, "times is empty"),
        (ALL_EVENTS, TIME, EVENT, [float("nan")], ValueError, "times holds NaN"),
        (ALL_EVENTS, TIME, EVENT[:4], [2.5], ValueError, "same length"),
        (ALL_EVENTS, [-1.0, *TIME[1:]], EVENT, [2.5], ValueError, "negative"),
        (ALL_EVENTS, TIME, [2, 1, 0, 1, 0], [2.5], ValueError, "0/1"),
        (([], []), TIME, EVENT, [2.5], ValueError, "no training patients"),
    ],
)
def test_time_metric_errors(train, time, event, times, exc, pattern):
    risk = [float(i) for i in range(len(TIME))]
    surv = [[0.5] * len(times) for _ in TIME]
    with pytest.raises(exc, match=pattern):
        auc_fn(*train, time, event, risk, times)
    with pytest.raises(exc, match=pattern):
        brier_scores(*train, time, event, surv, times)


def test_auc_specific_errors():
    # no case at t = 1.5: the only event before it is... none (the first patient is censored)
    with pytest.raises(NoComparablePairs, match="no test event at or before t = 1.5"):
        auc_fn(*ALL_EVENTS, TIME, [0, 0, 1, 1, 0], [0.0] * 5, [1.5])
    # G = 0 from the last training time on (it is a censoring): a case there has an infinite weight
    with pytest.raises(NoComparablePairs, match="censoring survival G is zero"):
        auc_fn([1.0, 2.0], [1, 0], [1.0, 3.0, 5.0], [1, 1, 0], [0.0, 1.0, 2.0], [4.0])
    with pytest.raises(ValueError, match=r"risk must be \[patients, times\]"):
        auc_fn(*ALL_EVENTS, TIME, EVENT, [[0.0, 1.0]] * 5, [2.5])
    with pytest.raises(ValueError, match="risk holds NaN"):
        auc_fn(*ALL_EVENTS, TIME, EVENT, [0.0, math.inf, 0.0, 0.0, 0.0], [2.5])


def test_brier_specific_errors():
    with pytest.raises(ValueError, match=r"in \[0, 1\] \(S\(t\), not risk scores\)"):
        brier_scores(*ALL_EVENTS, TIME, EVENT, [[-3.0]] * 5, [2.5])
    with pytest.raises(ValueError, match=r"survival_at_times must be \[patients, times\] = \[5, 2\]"):
        brier_scores(*ALL_EVENTS, TIME, EVENT, [[0.5]] * 5, [2.5, 3.5])
    with pytest.raises(ValueError, match="needs at least two times"):
        ibs_fn(*ALL_EVENTS, TIME, EVENT, [[0.5]] * 5, [2.5])


# ---- S(t) from the model's discrete curve ----------------------------------------------------------------------


def test_survival_at_times_is_the_step_function_over_the_edges():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.5, 3.0]])
    surv = survival_curve(logits)  # S_j = survival past bin j; edges 0, 365, 730, 1095, 1460
    at = survival_at_times(surv, EDGES, [-5.0, 0.0, 364.9, 365.0, 729.0, 730.0, 1100.0, 1460.0, 9000.0])
    pad = torch.cat([torch.ones(2, 1), surv], dim=1)
    assert torch.equal(at, pad[:, [0, 0, 0, 1, 1, 2, 3, 3, 3]])  # 1 before edge_1; the last bin is open-ended
    assert torch.equal(at, survival_at([-5.0, 0.0, 364.9, 365.0, 729.0, 730.0, 1100.0, 1460.0, 9000.0], logits, EDGES))
    assert survival_at_times(surv, EDGES, []).shape == (2, 0)
    with pytest.raises(ValueError, match="n_bins \\+ 1 = 5 values"):
        survival_at_times(surv, EDGES[:-1], [1.0])
    with pytest.raises(ValueError, match="times_days holds NaN"):
        survival_at_times(surv, EDGES, [float("nan")])


# ---- wiring: evaluate_metrics ----------------------------------------------------------------------------------


def static(seed: int) -> StaticModel:
    return StaticModel(new_abmil(DIMS, seed).state_dict(), DIMS, EDGES)


def test_evaluate_metrics_equals_the_metrics_on_the_model_outputs():
    train, test = learnable_samples(40, seed=1), learnable_samples(24, seed=2)
    model = static(0)
    ref_t, ref_e = [s.time for s in train], [s.event for s in train]
    rep = evaluate_metrics(model, test, ref_t, ref_e, times=[365.0, 730.0, 1095.0])
    base = evaluate(model, test)
    assert (rep.c_index, rep.pairs, rep.patients) == (base.c_index, base.pairs, base.patients)
    t, e, r = [s.time for s in test], [s.event for s in test], risks(model, test)
    y_tr, y_te = structured(ref_t, ref_e), structured(t, e)
    assert rep.uno_c_index == pytest.approx(concordance_index_ipcw(y_tr, y_te, r.numpy())[0], abs=1e-12)
    ref_auc, ref_mean = cumulative_dynamic_auc(y_tr, y_te, r.numpy(), [365.0, 730.0, 1095.0])
    assert rep.auc_mean == pytest.approx(ref_mean) and rep.auc_per_time == pytest.approx(tuple(ref_auc))
    model.eval()
    with torch.no_grad():
        curves = torch.stack([survival_curve(model(s.bag).logits.reshape(-1)) for s in test]).double()
    surv = survival_at_times(curves, EDGES, [365.0, 730.0, 1095.0]).numpy()
    assert rep.ibs == pytest.approx(integrated_brier_score(y_tr, y_te, surv, [365.0, 730.0, 1095.0]), abs=1e-9)
    doc = rep.to_dict()
    assert list(doc)[:7] == ["c_index", "pairs", "patients", "uno_c_index", "auc", "ibs", "times_days"]
    assert doc["auc"]["per_time"] == list(rep.auc_per_time) and doc["skipped"] == {}


def test_evaluate_metrics_skips_undefined_metrics_with_a_reason():
    test = learnable_samples(16, seed=3)
    t = [s.time for s in test]
    # the reference has no event: every IPCW metric is undefined, Harrell's C is still reported
    rep = evaluate_metrics(static(0), test, t, [0] * len(t))
    assert rep.c_index == evaluate(static(0), test).c_index
    assert rep.uno_c_index is None and rep.auc_mean is None and rep.ibs is None
    assert set(rep.skipped) == {"uno_c_index", "auc", "ibs"} and "censored" in rep.skipped["auc"]
    # no reference at all
    rep = evaluate_metrics(static(0), test, [], [])
    assert "no reference" in rep.skipped["ibs"] and rep.reference_patients == 0
    # one time only: AUC defined, IBS needs two
    rep = evaluate_metrics(static(0), test, t, [s.event for s in test], times=[365.0])
    assert rep.auc_mean is not None and rep.ibs is None and "at least two times" in rep.skipped["ibs"]


def test_default_times_are_yearly_inside_the_follow_up_else_quantiles():
    # first test event 100, longest test follow-up 2000, longest training follow-up 1500 → 365, 730, 1095, 1460
    assert default_times([100.0, 800.0, 2000.0], [1, 0, 1], [50.0, 1500.0]) == [365.0, 730.0, 1095.0, 1460.0]
    assert default_times([400.0, 800.0, 2000.0], [0, 1, 1], [3000.0]) == [1095.0, 1460.0, 1825.0]
    # short follow-up: quartiles of the follow-up times inside the range (whole days)
    short = default_times([10.0, 40.0, 80.0, 120.0, 200.0], [1, 1, 0, 1, 0], [300.0])
    assert len(short) >= 2 and all(10.0 <= x < 200.0 for x in short) and short == sorted(short)
    assert default_times([10.0, 20.0], [0, 0], [300.0]) == []


def test_evaluate_metrics_uses_tau_when_a_test_event_outlives_the_reference():
    test = [Sample(f"p{i}", torch.randn(3, 16), t, e) for i, (t, e) in enumerate(
        [(100.0, 1), (500.0, 1), (900.0, 0), (1300.0, 1), (2500.0, 1)])]  # fmt: skip
    rep = evaluate_metrics(static(0), test, [200.0, 600.0, 1400.0], [1, 0, 1])
    assert rep.uno_tau_days == 1400.0 and rep.uno_c_index is not None
    assert rep.times_days == (365.0, 730.0, 1095.0) and rep.ibs is not None
