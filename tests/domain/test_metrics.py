"""C-indices: identical to scikit-survival on random data with ties (hypothesis), plus hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw

from app.domain import metrics
from app.domain.metrics import censoring_survival, harrell_c_index, uno_c_index

# small integer ranges force ties in time and in risk
cohort = st.integers(min_value=2, max_value=14).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 6), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
    )
)


def sksurv_harrell(time, event, risk):
    """(c, concordant, discordant, tied_risk, tied_time), or None where sksurv raises or gives NaN."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = concordance_index_censored(np.array(event, bool), np.array(time, float), np.array(risk, float))
    except ValueError:
        return None
    return None if math.isnan(res[0]) else res


def assert_same(got, ref):
    assert got.c_index == pytest.approx(float(ref[0]), abs=1e-12)
    assert (got.concordant, got.discordant, got.tied_risk, got.tied_time) == tuple(int(x) for x in ref[1:])
    assert got.pairs == got.concordant + got.discordant + got.tied_risk


@settings(max_examples=300, deadline=None)
@given(cohort, st.sampled_from([0.0, 0.3]))
def test_harrell_matches_sksurv_with_ties(data, noise):
    time, event, risk = data
    risk = [r + noise * (i % 3) for i, r in enumerate(risk)]  # sometimes all-distinct, sometimes tied
    ref = sksurv_harrell(time, event, risk)
    if ref is None:
        with pytest.raises(ValueError):
            harrell_c_index(torch.tensor(time, dtype=torch.float64), torch.tensor(event), torch.tensor(risk))
        return
    assert_same(harrell_c_index(torch.tensor(time, dtype=torch.float64), torch.tensor(event), torch.tensor(risk)), ref)


@settings(max_examples=200, deadline=None)
@given(
    cohort,
    st.lists(st.tuples(st.integers(1, 8), st.booleans()), min_size=1, max_size=14),
    st.sampled_from([None, 3.0, 5.0]),
)
def test_uno_matches_sksurv_ipcw(test, train, tau):
    time, event, risk = test
    tr_t = [float(t) for t, _ in train]
    tr_e = [e for _, e in train]
    y_train = np.array(list(zip(tr_e, tr_t, strict=True)), dtype=[("e", bool), ("t", float)])
    y_test = np.array(list(zip(event, map(float, time), strict=True)), dtype=[("e", bool), ("t", float)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = concordance_index_ipcw(y_train, y_test, np.array(risk, float), tau=tau)
        ref = None if math.isnan(ref[0]) else ref
    except ValueError:
        ref = None
    if ref is None:
        with pytest.raises(ValueError):
            uno_c_index(tr_t, tr_e, time, event, risk, tau=tau)
        return
    assert_same(uno_c_index(tr_t, tr_e, time, event, risk, tau=tau), ref)


def test_harrell_hand_computed():
    # times 1(e) 2(c) 3(e) 3(c) 4(e); comparable pairs (i → j): 1→{2,3,3,4}, 3e→{3c,4} = 6 pairs
    time = [1.0, 2.0, 3.0, 3.0, 4.0]
    event = [1, 0, 1, 0, 1]
    risk = [5.0, 1.0, 2.0, 2.0, 0.0]
    # 1→2 (5>1) C, 1→3e (5>2) C, 1→3c C, 1→4 C, 3e→3c tie (2 = 2), 3e→4 (2 > 0) C
    res = harrell_c_index(time, event, risk)
    assert (res.concordant, res.discordant, res.tied_risk, res.tied_time, res.pairs) == (5, 0, 1, 1, 6)
    assert res.c_index == pytest.approx(5.5 / 6)
    flipped = harrell_c_index(time, event, [-r for r in risk])
    assert (flipped.concordant, flipped.discordant, flipped.tied_risk) == (0, 5, 1)
    assert flipped.c_index == pytest.approx(0.5 / 6)


def test_tied_tol_decides_ties():
    time, event = [1.0, 2.0], [1, 1]
    assert harrell_c_index(time, event, [1.0 + 5e-9, 1.0]).tied_risk == 1
    assert harrell_c_index(time, event, [1.0 + 5e-9, 1.0], tied_tol=1e-9).concordant == 1


def test_chunked_equals_unchunked(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    n = 300
    time = torch.randint(1, 50, (n,), generator=gen).double()
    event = torch.rand(n, generator=gen) < 0.6
    risk = torch.randint(0, 20, (n,), generator=gen).double()
    whole = harrell_c_index(time, event, risk)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7 * n)
    chunked = harrell_c_index(time, event, risk)
    assert chunked == whole
    ref = sksurv_harrell(time.tolist(), event.tolist(), risk.tolist())
    assert_same(chunked, ref)


@pytest.mark.parametrize(
    ("time", "event", "risk", "pattern"),
    [
        ([1.0, 2.0], [0, 0], [1.0, 2.0], "all patients are censored"),
        ([1.0], [1], [1.0], "at least two patients"),
        ([1.0, 2.0], [1, 1], [1.0], "same length"),
        ([1.0, 2.0], [1, 2], [1.0, 2.0], "0/1"),
        ([1.0, 2.0], [1, 1], [float("nan"), 2.0], "risk holds NaN"),
        ([2.0, 2.0], [1, 1], [1.0, 2.0], "no comparable pairs"),
        ([1.0, 2.0], [0, 1], [1.0, 2.0], "no comparable pairs"),
    ],
)
def test_harrell_errors(time, event, risk, pattern):
    with pytest.raises(ValueError, match=pattern):
        harrell_c_index(time, event, risk)


def test_censoring_km_hand_computed():
    # times 1(e) 2(c) 3(c) 4(e): G jumps at 2 by (1 − 1/3) and at 3 by (1 − 1/2)
    times, surv = censoring_survival(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64),
                                     torch.tensor([True, False, False, True]))  # fmt: skip
    assert times[0] == -math.inf and times[1:].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert surv.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3, 1 / 3])


def test_uno_errors_name_the_problem():
    with pytest.raises(ValueError, match="largest training time"):
        uno_c_index([1.0, 2.0], [0, 1], [1.0, 3.0, 5.0], [1, 1, 0], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="censoring survival function is zero"):
        uno_c_index([1.0, 2.0], [1, 0], [1.0, 3.0, 5.0], [1, 1, 0], [3.0, 2.0, 1.0])
    res = uno_c_index([1.0, 2.0], [1, 0], [1.0, 3.0, 5.0], [1, 1, 0], [3.0, 2.0, 1.0], tau=1.5)
    assert res.c_index == 1.0 and res.pairs == 3  # only the event at t = 1 carries weight
    with pytest.raises(ValueError, match="training patients are censored"):
        uno_c_index([1.0, 2.0], [0, 0], [1.0, 2.0], [1, 0], [2.0, 1.0])


def test_bootstrap_pair_sums_resample_patients_with_replacement():
    from app.domain.metrics import bootstrap_pair_sums

    n = 7
    ones, eye = torch.ones(n, n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)
    all_pairs, diag = bootstrap_pair_sums([ones, eye], n, n_boot=50, seed=3)
    assert torch.equal(all_pairs, torch.full((50,), float(n * n), dtype=torch.float64))  # (Σ c_i)² = n²
    assert bool((diag >= n).all()) and bool((diag > n).any())  # Σ c_i² ≥ n, > n once a patient repeats
    again = bootstrap_pair_sums([eye], n, n_boot=50, seed=3)[0]
    assert torch.equal(again, diag) and not torch.equal(bootstrap_pair_sums([eye], n, n_boot=50, seed=4)[0], diag)
