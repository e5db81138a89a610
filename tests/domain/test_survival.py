"""Discrete-time survival: bins, the NLL on a hand-computed case, survival curve and risk."""

from __future__ import annotations

import math

import torch

from app.domain.survival import (
    default_bin_edges,
    nll_loss,
    risk_score,
    survival_at,
    survival_curve,
    time_to_bin,
)

from .conftest import EDGES


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_default_edges_and_time_to_bin_at_the_edges():
    edges = default_bin_edges()
    assert len(edges) == 33 and edges[0] == 0 and edges[1] == 365 and edges[-1] == 11680
    times = torch.tensor([0.0, 364.9, 365.0, 11680.0, 1e9])
    assert time_to_bin(times, edges).tolist() == [0, 0, 1, 31, 31]
    assert time_to_bin(times, EDGES).tolist() == [0, 0, 1, 3, 3]
    assert time_to_bin(torch.tensor([729.99, 730.0, 1095.0]), EDGES).tolist() == [1, 2, 3]
    # min(floor(t / 365), 31) on a range of times
    ts = torch.linspace(0, 13000, 501, dtype=torch.float64)
    expected = torch.clamp(torch.floor(ts / 365), max=31).long()
    assert torch.equal(time_to_bin(ts, edges), expected)


def test_nll_matches_a_hand_computation_for_an_event_and_a_censoring():
    logits = torch.tensor([[0.2, -0.5, 1.0, 0.3], [-1.0, 0.4, 0.0, -0.2]])
    bins = torch.tensor([2, 1])
    events = torch.tensor([1, 0])
    h1 = [sig(v) for v in logits[0].tolist()]
    h2 = [sig(v) for v in logits[1].tolist()]
    # patient 1, event in bin 2: −log S(before bin 2) − log h_2
    uncensored = -(math.log((1 - h1[0]) * (1 - h1[1])) + math.log(h1[2]))
    # patient 2, censored in bin 1: −log S(end of bin 1)
    censored = -math.log((1 - h2[0]) * (1 - h2[1]))
    alpha = 0.5
    loss1 = (1 - alpha) * uncensored + alpha * uncensored
    loss2 = (1 - alpha) * censored
    expected = (loss1 + loss2) / 2
    got = nll_loss(logits, bins, events, alpha=alpha)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    # α = 0 weighs both terms equally
    got0 = nll_loss(logits, bins, events, alpha=0.0)
    assert math.isclose(float(got0), (uncensored + censored) / 2, rel_tol=1e-6)


def test_nll_event_in_first_bin_and_1d_logits():
    logits = torch.tensor([0.7, 0.0, 0.0, 0.0])
    got = nll_loss(logits, torch.tensor([0]), torch.tensor([1]))
    assert math.isclose(float(got), -math.log(sig(0.7)), rel_tol=1e-6)


def test_nll_clamps_instead_of_returning_inf():
    logits = torch.tensor([[-100.0, 100.0, 100.0, 100.0]])
    got = nll_loss(logits, torch.tensor([0]), torch.tensor([1]))
    assert torch.isfinite(got) and float(got) > 10


def test_survival_curve_risk_and_survival_at():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    surv = survival_curve(logits)
    assert torch.allclose(surv[0], torch.tensor([0.5, 0.25, 0.125, 0.0625]))
    assert bool((surv[:, 1:] <= surv[:, :-1]).all())
    assert torch.allclose(risk_score(logits), -surv.sum(dim=1))
    assert math.isclose(float(risk_score(logits)[0]), -0.9375, rel_tol=1e-6)
    assert float(risk_score(logits)[1]) > float(risk_score(logits)[0])  # higher hazards = higher risk
    at = survival_at([0.0, 364.0, 365.0, 800.0, 5000.0], logits[0], EDGES)
    assert torch.allclose(at, torch.tensor([1.0, 1.0, 0.5, 0.25, 0.125]))
