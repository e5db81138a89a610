"""app.domain.km against lifelines (the reference implementation): KM steps, CIs, at-risk counts, log-rank."""

from __future__ import annotations

import math
import random

import pytest

from app.domain import km

lifelines = pytest.importorskip("lifelines")
statistics = pytest.importorskip("lifelines.statistics")


def _cohort(n: int, seed: int, ties: bool = True) -> tuple[list[float], list[int]]:
    rng = random.Random(seed)
    time = [float(rng.randint(1, 40) * 30) if ties else rng.uniform(1, 3000) for _ in range(n)]
    event = [int(rng.random() < 0.6) for _ in range(n)]
    return time, event


@pytest.mark.parametrize("seed,ties", [(0, True), (1, False), (2, True)])
def test_kaplan_meier_matches_lifelines(seed: int, ties: bool) -> None:
    time, event = _cohort(60, seed, ties)
    curve = km.kaplan_meier(time, event)
    ref = lifelines.KaplanMeierFitter().fit(time, event)
    sf = ref.survival_function_["KM_estimate"]
    table = ref.event_table
    ci = ref.confidence_interval_survival_function_
    assert list(curve.times) == [float(x) for x in sf.index[1:]]  # lifelines adds t = 0
    for j, t in enumerate(curve.times):
        assert curve.survival[j] == pytest.approx(float(sf.loc[t]), abs=1e-12)
        assert curve.at_risk[j] == int(table.loc[t, "at_risk"])
        assert curve.events[j] == int(table.loc[t, "observed"])
        assert curve.censored[j] == int(table.loc[t, "censored"])
        lo, hi = sorted(float(x) for x in ci.loc[t])
        if 0.0 < curve.survival[j] < 1.0:
            assert curve.lower[j] == pytest.approx(lo, abs=1e-9)
            assert curve.upper[j] == pytest.approx(hi, abs=1e-9)
    probe = [0.0, 45.0, 300.0, 611.0, 5000.0]
    assert [curve.at(p) for p in probe] == pytest.approx([float(ref.predict(p)) for p in probe], abs=1e-12)


def test_at_risk_counts_are_patients_still_followed() -> None:
    time, _ = _cohort(50, 4)
    points = [0.0, 300.0, 600.0, 900.0, 1200.0]
    counts = km.at_risk_counts(time, points)
    assert counts == [sum(1 for t in time if t >= p) for p in points]
    assert counts[0] == 50 and counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("groups", [2, 3])
def test_logrank_matches_lifelines(groups: int) -> None:
    time, event = _cohort(90, 7)
    rng = random.Random(9)
    group = [rng.randrange(groups) for _ in time]
    time = [t * (1 + 0.4 * g) for t, g in zip(time, group, strict=True)]  # a real difference between groups
    ours = km.logrank_test(time, event, group)
    ref = statistics.multivariate_logrank_test(time, group, event)
    assert ours.df == groups - 1
    assert ours.statistic == pytest.approx(float(ref.test_statistic), rel=1e-9)
    assert ours.p_value == pytest.approx(float(ref.p_value), rel=1e-7)
    assert sum(ours.observed) == sum(event)
    assert sum(ours.expected) == pytest.approx(sum(event))


def test_chi2_sf_matches_scipy() -> None:
    chi2 = pytest.importorskip("scipy.stats").chi2
    assert km.chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    for x, df in [(40.0, 3), (0.3, 4), (12.5, 5), (2.0, 1), (7.0, 2)]:
        assert km.chi2_sf(x, df) == pytest.approx(float(chi2.sf(x, df)), rel=1e-9)
    assert km.chi2_sf(0.0, 2) == 1.0


def test_risk_groups_and_quantile() -> None:
    risk = [5.0, 1.0, 3.0, 2.0, 4.0, 6.0]
    group, cuts = km.risk_groups(risk, 2)
    assert cuts == [3.5]
    assert group == [1, 0, 0, 0, 1, 1]
    group3, cuts3 = km.risk_groups(risk, 3)
    assert cuts3 == pytest.approx([1 + 5 / 3, 1 + 10 / 3])
    assert sorted(group3) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="n_groups"):
        km.risk_groups(risk, 1)


def test_calibration_bins_use_km_per_bin() -> None:
    time, event = _cohort(40, 11)
    predicted = [1.0 - t / 1300 for t in time]
    bins = km.calibration_bins(predicted, time, event, 365.0, n_bins=4)
    assert [b.patients for b in bins] == [10, 10, 10, 10]
    order = sorted(range(40), key=lambda i: predicted[i])
    first = order[:10]
    ref = lifelines.KaplanMeierFitter().fit([time[i] for i in first], [event[i] for i in first])
    assert bins[0].observed == pytest.approx(float(ref.predict(365.0)), abs=1e-12)
    assert bins[0].predicted == pytest.approx(sum(predicted[i] for i in first) / 10)
    assert all(b.lower <= b.observed <= b.upper for b in bins)
    assert bins[0].predicted < bins[-1].predicted


def test_bad_inputs_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="event flags"):
        km.kaplan_meier([1.0], [2])
    with pytest.raises(ValueError, match="two groups"):
        km.logrank_test([1.0, 2.0], [1, 1], [0, 0])
    assert math.isclose(km.kaplan_meier([], []).at(10.0), 1.0)


def test_calibration_bins_are_not_estimable_past_their_follow_up_and_small_splits_get_fewer() -> None:
    # 12 patients: at most 12 // 5 = 2 bins, not 10 "deciles" of one patient
    time = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 150.0, 250.0, 350.0, 450.0, 550.0, 708.94]
    event = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    predicted = [0.1 * i for i in range(12)]
    bins = km.calibration_bins(predicted, time, event, 365.0)
    assert [b.patients for b in bins] == [6, 6]
    # at 5 years nobody is followed: both bins had every patient censored or dead before, and not all dead
    late = km.calibration_bins(predicted, time, event, 5 * 365.25)
    assert all(b.observed is None and b.lower is None and b.upper is None for b in late)
    # a bin whose patients all died before the horizon is estimable (S = 0), not "unknown"
    dead = km.calibration_bins([0.5] * 5, [10.0, 20.0, 30.0, 40.0, 50.0], [1] * 5, 365.0)
    assert dead[0].observed == 0.0
