"""Concordance indices for right-censored survival data (SPEC §3), vectorised with torch.

Both match scikit-survival exactly (same comparable pairs, same tie rules, same counts):

- Harrell's C (`concordance_index_censored`): a pair (i, j) is comparable when i had an event and
  t_i < t_j, or t_i = t_j and j is censored. It is concordant when r_i > r_j, tied in risk when
  |r_i − r_j| ≤ tied_tol (counts ½), discordant otherwise.  C = (concordant + ½·tied_risk) / pairs.
- Uno's C (`concordance_index_ipcw`): the same pairs, each weighted by w_i = G(t_i)⁻² where G is the
  Kaplan–Meier estimate of the censoring survival function on the training data; events with t_i ≥ τ get
  weight 0.  C = Σ w_i (conc_ij + ½ tie_ij) / Σ w_i comparable_ij.

Time-dependent metrics (below; same IPCW censoring distribution, see the section comment there):

- cumulative_dynamic_auc = sksurv.metrics.cumulative_dynamic_auc (AUC(t) per time and its KM-weighted mean),
- brier_scores / integrated_brier_score = sksurv.metrics.brier_score / integrated_brier_score.

Times are compared exactly (as scikit-survival does); everything is computed in float64.
Memory is O(chunk · n): rows are processed in chunks of about `_CHUNK_ELEMENTS / n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 4_000_000

ArrayLike = Tensor | Sequence[float] | Sequence[int] | Sequence[bool]


@dataclass(frozen=True)
class CIndexResult:
    """C-index and its pair counts (counts are unweighted, as in scikit-survival).

    pairs = concordant + discordant + tied_risk = number of comparable pairs;
    tied_time = comparable pairs whose times are equal (an event and a censoring at the same time).
    """

    c_index: float
    concordant: int
    discordant: int
    tied_risk: int
    tied_time: int
    pairs: int

    def to_dict(self) -> dict:
        return asdict(self)


class NoComparablePairs(ValueError):
    """The patients allow no comparison: fewer than two, no observed event, or no comparable pair."""


def _as_1d(values: ArrayLike, name: str) -> Tensor:
    if isinstance(values, Tensor):
        t = values.detach().cpu()
    else:  # python floats → float64 (float32 would merge risks closer than tied_tol can see)
        t = torch.as_tensor(values, dtype=torch.float64)
    if t.dim() > 1 and sum(s > 1 for s in t.shape) <= 1:
        t = t.reshape(-1)  # [n, 1] or [1, n]
    if t.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {tuple(t.shape)}")
    return t


def check_survival_inputs(time: ArrayLike, event: ArrayLike, risk: ArrayLike) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and convert to (time float64 [n], event bool [n], risk float64 [n]).

    Raises ValueError for unequal lengths, fewer than 2 patients, no events, non-finite values or event
    flags other than 0/1.
    """
    t, e, r = _as_1d(time, "time"), _as_1d(event, "event"), _as_1d(risk, "risk")
    if not (len(t) == len(e) == len(r)):
        raise ValueError(f"time, event and risk must have the same length; got {len(t)}, {len(e)}, {len(r)}")
    if len(t) < 2:
        raise NoComparablePairs(f"a C-index needs at least two patients; got {len(t)}")
    if not bool(((e == 0) | (e == 1)).all()):
        raise ValueError("event must hold only 0/1 (or False/True): 1 = event observed, 0 = censored")
    t, r = t.to(torch.float64), r.to(torch.float64)
    for name, v in (("time", t), ("risk", r)):
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} holds NaN or Inf values; every patient needs a finite {name}")
    e = e.to(torch.bool)
    if not bool(e.any()):
        raise NoComparablePairs("all patients are censored: a C-index needs at least one observed event")
    return t, e, r


def comparable_block(time: Tensor, event: Tensor, rows: slice) -> Tensor:
    """comparable[i, j] (i in `rows`, any j) = event_i ∧ (t_i < t_j ∨ (t_i = t_j ∧ ¬event_j)); [k, n] bool."""
    ti = time[rows].unsqueeze(1)
    later = time.unsqueeze(0) > ti
    tied_censored = (time.unsqueeze(0) == ti) & ~event.unsqueeze(0)
    return event[rows].unsqueeze(1) & (later | tied_censored)


def score_block(risk: Tensor, rows: slice, tied_tol: float) -> Tensor:
    """score[i, j] = 1 if r_i > r_j (beyond tied_tol), ½ if |r_i − r_j| ≤ tied_tol, else 0. [k, n] float64."""
    ri = risk[rows].unsqueeze(1)
    rj = risk.unsqueeze(0)
    tie = (rj - ri).abs() <= tied_tol
    return torch.where(tie, 0.5, (rj < ri).to(torch.float64))


def _weighted_concordance(
    time: Tensor, event: Tensor, risk: Tensor, weights: Tensor, tied_tol: float
) -> tuple[float, float, dict[str, int]]:
    """Σ w_i·(conc + ½ tie), Σ w_i·comparable, and the unweighted counts, over all comparable pairs."""
    n = len(time)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    num = den = 0.0
    counts = dict(concordant=0, discordant=0, tied_risk=0, tied_time=0)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        comp = comparable_block(time, event, rows)
        if not bool(comp.any()):
            continue
        ri, rj = risk[rows].unsqueeze(1), risk.unsqueeze(0)
        tie = comp & ((rj - ri).abs() <= tied_tol)
        con = comp & ~tie & (rj < ri)
        w = weights[rows]
        num += float((w * (con.sum(1) + 0.5 * tie.sum(1))).sum())
        den += float((w * comp.sum(1)).sum())
        counts["concordant"] += int(con.sum())
        counts["tied_risk"] += int(tie.sum())
        counts["discordant"] += int(comp.sum()) - int(con.sum()) - int(tie.sum())
        counts["tied_time"] += int((comp & (time.unsqueeze(0) == time[rows].unsqueeze(1))).sum())
    return num, den, counts


def _result(num: float, den: float, counts: dict[str, int], what: str) -> CIndexResult:
    pairs = counts["concordant"] + counts["discordant"] + counts["tied_risk"]
    if pairs == 0 or den <= 0.0:
        raise NoComparablePairs(
            f"no comparable pairs for {what}: a pair needs a patient with an event whose time is "
            "shorter than another patient's time; the cohort needs more patients or more observed events"
        )
    return CIndexResult(num / den, pairs=pairs, **counts)


def bootstrap_pair_sums(matrices: list[Tensor], n: int, *, n_boot: int, seed: int) -> list[Tensor]:
    """Patient bootstrap of pair statistics: for each [n, n] pair matrix M (comparable pairs, their concordance
    scores, …) the sum Σ_ij c_i c_j M_ij of every resample, c = the patients' multiplicities in that resample
    (n draws with replacement: a patient drawn twice counts each of its pairs twice). One [n_boot] float64 tensor
    per matrix, all from the same resamples (deterministic for `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return [((counts @ m) * counts).sum(1) for m in matrices]


def harrell_c_index(time: ArrayLike, event: ArrayLike, risk: ArrayLike, tied_tol: float = 1e-8) -> CIndexResult:
    """Harrell's C-index, identical to sksurv.metrics.concordance_index_censored.

    time [n] (days, continuous), event [n] (1 = event, 0 = censored), risk [n] (higher = worse prognosis).
    Raises ValueError when the inputs are invalid or there is no comparable pair.
    """
    t, e, r = check_survival_inputs(time, event, risk)
    num, den, counts = _weighted_concordance(t, e, r, torch.ones_like(t), tied_tol)
    return _result(num, den, counts, "Harrell's C-index")


def censoring_survival(train_time: Tensor, train_event: Tensor) -> tuple[Tensor, Tensor]:
    """Kaplan–Meier censoring survival G(t) = P(C > t), as sksurv's CensoringDistributionEstimator.

    Returns (times [K], G [K]): G(t) = G[k] for the largest times[k] ≤ t; times[0] = −inf with G = 1.
    At a unique time u with d events, c censorings and n at risk: factor 1 − c / (n − d).
    """
    uniq, inverse = torch.unique(train_time, sorted=True, return_inverse=True)
    total = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(train_time))
    deaths = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, train_event.double())
    censored = total - deaths
    at_risk = len(train_time) - torch.cumsum(total, 0) + total
    ratio = torch.where(censored > 0, censored / (at_risk - deaths).clamp(min=1), torch.zeros_like(censored))
    surv = torch.cumprod(1.0 - ratio, 0)
    times = torch.cat([torch.tensor([-torch.inf], dtype=torch.float64), uniq])
    return times, torch.cat([surv.new_ones(1), surv])


def _ipcw_weights(
    train_time: Tensor, train_event: Tensor, test_time: Tensor, test_event: Tensor, tau: float | None
) -> Tensor:
    """w_i = 1 / G(t_i)² for test events with t_i < τ (0 otherwise), as sksurv's concordance_index_ipcw."""
    use = test_event & ((test_time < tau) if tau is not None else torch.ones_like(test_event))
    if bool(train_event.all()):
        times, surv = torch.unique(train_time), torch.ones(len(torch.unique(train_time)), dtype=torch.float64)
    else:
        times, surv = censoring_survival(train_time, train_event)
    t = test_time[use]
    if bool((t > times[-1]).any()):
        if float(surv[-1]) > 0:
            raise ValueError(
                f"test event times must not exceed the largest training time ({float(times[-1]):g}); set tau below it"
            )
        raise ValueError("the censoring survival function is zero at a test event time; set a smaller tau")
    g = surv[(torch.searchsorted(times, t, right=True) - 1).clamp(min=0)]
    if bool((g == 0).any()):
        raise ValueError("the censoring survival function is zero at a test event time; set a smaller tau")
    weights = torch.zeros_like(test_time)
    weights[use] = 1.0 / g.square()
    return weights


def uno_c_index(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    risk: ArrayLike,
    tau: float | None = None,
    tied_tol: float = 1e-8,
) -> CIndexResult:
    """Uno's IPCW C-index, identical to sksurv.metrics.concordance_index_ipcw(train, test, risk, tau).

    The censoring distribution is estimated (Kaplan–Meier) on train_time/train_event; risk [n] belongs to the
    test patients. Only events before `tau` carry weight. Counts in the result are unweighted.
    """
    tr_t, tr_e = _as_1d(train_time, "train_time").double(), _as_1d(train_event, "train_event").bool()
    if len(tr_t) != len(tr_e) or len(tr_t) == 0:
        raise ValueError("train_time and train_event must be non-empty and of the same length")
    if not bool(tr_e.any()):
        raise ValueError("all training patients are censored: Uno's C-index needs training events")
    t, e, r = check_survival_inputs(test_time, test_event, risk)
    weights = _ipcw_weights(tr_t, tr_e, t, e, tau)
    num, den, counts = _weighted_concordance(t, e, r, weights, tied_tol)
    return _result(num, den, counts, "Uno's C-index")


# ---------------------------------------------------------------------------------------------------------------
# Time-dependent metrics: cumulative/dynamic AUC and the (integrated) Brier score, as scikit-survival computes them.
#
# Both weight patients by the inverse of G, the Kaplan–Meier estimate of the censoring survival P(C > t) on the
# *training* data (censoring_survival; G = 1 when every training patient had an event). G is known up to the
# largest training time T; beyond T it is 0 when the last training patients were censored, unknown otherwise.
#
# One deliberate difference: scikit-survival looks G up at every test time (Brier) or every test event (AUC) and
# raises when one lies beyond T (or, for the AUC, where G = 0), even when that patient is a control at every time
# of the grid and its weight is never used. Here G is looked up only where a weight is used (the cases, events at
# or before the last time, and the grid times), so such cohorts get the value scikit-survival gives for the same
# patients with those late follow-ups cut back (they stay controls). Wherever scikit-survival returns a value,
# the results are equal (float64, up to summation order).
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeDependentAUC:
    """Cumulative/dynamic AUC at each time (cases: event at or before t; controls: follow-up beyond t) and its
    mean over the times, weighted by the test cohort's Kaplan–Meier survival (scikit-survival's mean_auc)."""

    times: tuple[float, ...]
    auc: tuple[float, ...]
    mean_auc: float

    def to_dict(self) -> dict:
        return {"times": list(self.times), "auc": list(self.auc), "mean_auc": self.mean_auc}


@dataclass(frozen=True)
class BrierScores:
    """IPCW Brier score BS(t) at each time (lower = better; 0.25 = an uninformative S(t) = ½)."""

    times: tuple[float, ...]
    scores: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"times": list(self.times), "scores": list(self.scores)}


def _labels(time: ArrayLike, event: ArrayLike, who: str) -> tuple[Tensor, Tensor]:
    """Validated (time float64 [n], event bool [n]) of the `who` patients ('test' or 'training')."""
    t, e = _as_1d(time, f"{who} time"), _as_1d(event, f"{who} event")
    if len(t) != len(e):
        raise ValueError(f"{who} time and event must have the same length; got {len(t)} and {len(e)}")
    if len(t) == 0:
        raise ValueError(f"no {who} patients: pass at least one")
    if not bool(((e == 0) | (e == 1)).all()):
        raise ValueError(f"{who} event must hold only 0/1 (or False/True): 1 = event observed, 0 = censored")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{who} time holds NaN or Inf values; every patient needs a finite follow-up time")
    if bool((t < 0).any()):
        raise ValueError(f"{who} time holds negative values; follow-up times are days ≥ 0")
    e = e.to(torch.bool)
    if not bool(e.any()):
        raise NoComparablePairs(f"all {who} patients are censored: the metric needs at least one observed {who} event")
    return t, e


def _time_grid(times: ArrayLike, test_time: Tensor) -> Tensor:
    """times [m] float64, strictly increasing, inside [min, max) of the test follow-up (as scikit-survival)."""
    grid = _as_1d(times, "times").to(torch.float64)
    if len(grid) == 0:
        raise ValueError("times is empty: pass at least one time (days) at which to evaluate")
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("times holds NaN or Inf values; pass finite times in days")
    if len(grid) > 1 and not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("times must be strictly increasing (sorted, without duplicates)")
    lo, hi = float(test_time.min()), float(test_time.max())
    if float(grid[0]) < lo or float(grid[-1]) >= hi:
        raise NoComparablePairs(
            f"times must lie within the test follow-up [{lo:g}, {hi:g}) days (some patient must still be "
            f"followed after the last time); got {float(grid[0]):g} … {float(grid[-1]):g}: drop or move the times "
            "outside"
        )
    return grid


def _censoring_fit(train_time: ArrayLike, train_event: ArrayLike) -> tuple[Tensor, Tensor]:
    """(times [K], G [K]) of the training censoring distribution (sksurv's CensoringDistributionEstimator)."""
    t, e = _labels(train_time, train_event, "training")
    if bool(e.all()):
        uniq = torch.unique(t)
        return uniq, torch.ones(len(uniq), dtype=torch.float64)
    return censoring_survival(t, e)


def _censoring_at(times: Tensor, surv: Tensor, at: Tensor, what: str) -> Tensor:
    """G at `at` (largest times[k] ≤ t; 0 beyond the last time when G ends at 0). NoComparablePairs when a time
    lies beyond the training follow-up while G is still positive there (G unknown)."""
    last = float(times[-1])
    beyond = at > last
    if bool(beyond.any()) and float(surv[-1]) > 0:
        raise NoComparablePairs(
            f"{what} {float(at[beyond].max()):g} lies beyond the training follow-up (largest training time "
            f"{last:g} days), where the censoring distribution is unknown: use times up to {last:g} or a "
            "training set followed up for longer"
        )
    g = surv[(torch.searchsorted(times, at, right=True) - 1).clamp(min=0)]
    return torch.where(beyond, torch.zeros_like(g), g)


def kaplan_meier(time: Tensor, event: Tensor) -> tuple[Tensor, Tensor]:
    """Kaplan–Meier survival of the patients themselves: (times [K], S [K]), S(t) = S[k] for the largest
    times[k] ≤ t; times[0] = −inf with S = 1. At a unique time with d events and n at risk: factor 1 − d / n."""
    time, event = time.to(torch.float64), event.to(torch.bool)
    uniq, inverse = torch.unique(time, sorted=True, return_inverse=True)
    total = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(time))
    deaths = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, event.double())
    at_risk = len(time) - torch.cumsum(total, 0) + total
    surv = torch.cumprod(1.0 - deaths / at_risk, 0)
    return torch.cat([time.new_full((1,), -torch.inf), uniq]), torch.cat([surv.new_ones(1), surv])


def _estimate_2d(estimate: ArrayLike, n: int, m: int, name: str) -> Tensor:
    """estimate as float64 [n, m]; a [n] vector is used at every time."""
    est = estimate.detach().cpu() if isinstance(estimate, Tensor) else torch.as_tensor(estimate, dtype=torch.float64)
    est = est.to(torch.float64)
    if est.dim() == 1 or (est.dim() == 2 and est.shape[1] == 1 and m == 1):
        est = est.reshape(-1, 1).expand(-1, m) if est.dim() == 1 else est
    if est.dim() != 2 or est.shape != (n, m):
        raise ValueError(
            f"{name} must be [patients, times] = [{n}, {m}] (or [{n}] for one value per patient); "
            f"got shape {tuple(est.shape)}"
        )
    if not bool(torch.isfinite(est).all()):
        raise ValueError(f"{name} holds NaN or Inf values; every patient needs a finite {name}")
    return est


def cumulative_dynamic_auc(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    risk: ArrayLike,
    times: ArrayLike,
    tied_tol: float = 1e-8,
) -> TimeDependentAUC:
    """Cumulative/dynamic AUC(t), equal to sksurv.metrics.cumulative_dynamic_auc(train, test, risk, times).

    AUC(t) = Σ_{cases i, controls j} w_i·[r_i > r_j] / (Σ_cases w_i · #controls), with cases = test events with
    t_i ≤ t, weighted w_i = 1 / G(t_i), and controls = test patients with t_i > t (unweighted). Risks within
    tied_tol of their neighbour in sorted order form one threshold (a tie counts ½, as in scikit-survival).
    The mean is Σ_k AUC(t_k)·(Ŝ(t_{k-1}) − Ŝ(t_k)) / (1 − Ŝ(t_m)) with Ŝ the test Kaplan–Meier and Ŝ(t_0) = 1.

    risk [n] (higher = worse prognosis) or [n, m] (one column per time); times [m] strictly increasing days in
    [min, max) of the test follow-up. Raises ValueError for invalid inputs and NoComparablePairs when the data
    leave the AUC undefined (no training or test events, times outside the follow-up, no case at a time, a
    case beyond the training follow-up or where G = 0).
    """
    cens_t, cens_g = _censoring_fit(train_time, train_event)
    t, e = _labels(test_time, test_event, "test")
    grid = _time_grid(times, t)
    est = _estimate_2d(risk, len(t), len(grid), "risk")
    used = e & (t <= grid[-1])  # events that are a case at some time of the grid
    g = _censoring_at(cens_t, cens_g, t[used], "test event time")
    if bool((g == 0).any()):
        raise NoComparablePairs(
            f"the censoring survival G is zero at test event time {float(t[used][g == 0].min()):g}: every training "
            "patient is censored by then; use times before it or a training set followed up for longer"
        )
    weight = torch.zeros_like(t)
    weight[used] = 1.0 / g
    scores = []
    for k, tk in enumerate(grid.tolist()):
        order = torch.argsort(est[:, k], descending=True, stable=True)
        r, tt, ee, ww = est[order, k], t[order], e[order], weight[order]
        case, control = (tt <= tk) & ee, tt > tk
        tp, fp = torch.cumsum(ww * case, 0), torch.cumsum(control.double(), 0)
        if float(tp[-1]) <= 0:
            raise NoComparablePairs(
                f"no test event at or before t = {tk:g} days: AUC(t) has no cases; start the times at or after "
                f"the first test event ({float(t[e].min()):g} days)"
            )
        tp, fp = tp / tp[-1], fp / fp[-1]  # a control exists: t_max > every time of the grid
        tied_with_next = (r[1:] - r[:-1]).abs() <= tied_tol
        keep = torch.cat([~tied_with_next, torch.tensor([True])])  # the last point of each run of tied risks
        tp = torch.cat([tp.new_zeros(1), tp[keep]])
        fp = torch.cat([fp.new_zeros(1), fp[keep]])
        scores.append(float(torch.trapezoid(tp, fp)))
    if len(scores) == 1:
        mean = scores[0]
    else:
        km_t, km_s = kaplan_meier(t, e)
        s = km_s[torch.searchsorted(km_t, grid, right=True) - 1]
        drop = -torch.diff(torch.cat([s.new_ones(1), s]))
        mean = float((torch.tensor(scores, dtype=torch.float64) * drop).sum() / (1.0 - s[-1]))
    return TimeDependentAUC(tuple(grid.tolist()), tuple(scores), mean)


def brier_scores(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    survival_at_times: ArrayLike,
    times: ArrayLike,
) -> BrierScores:
    """IPCW Brier score BS(t), equal to sksurv.metrics.brier_score(train, test, survival_at_times, times).

    BS(t) = (1/n) Σ_i [ S_i(t)²·1(t_i ≤ t, event_i) / G(t_i) + (1 − S_i(t))²·1(t_i > t) / G(t) ]
    (a weight whose G is 0 counts 0, as in scikit-survival). survival_at_times [n, m]: predicted S_i(t_k) in
    [0, 1] (e.g. survival.survival_at_times of the model's curve; [n] when m = 1); times [m] strictly increasing
    days in [min, max) of the test follow-up. Raises ValueError for invalid inputs and NoComparablePairs when
    the data leave the score undefined (no training or test events, times outside the follow-up, a time or a
    case beyond the training follow-up).
    """
    cens_t, cens_g = _censoring_fit(train_time, train_event)
    t, e = _labels(test_time, test_event, "test")
    grid = _time_grid(times, t)
    est = _estimate_2d(survival_at_times, len(t), len(grid), "survival_at_times")
    if bool(((est < 0) | (est > 1)).any()):
        raise ValueError("survival_at_times must hold survival probabilities in [0, 1] (S(t), not risk scores)")
    g_grid = _censoring_at(cens_t, cens_g, grid, "time")
    used = e & (t <= grid[-1])
    g_case = torch.zeros_like(t)
    g_case[used] = _censoring_at(cens_t, cens_g, t[used], "test event time")
    w_case = torch.where(g_case > 0, 1.0 / g_case, torch.zeros_like(g_case))
    w_grid = torch.where(g_grid > 0, 1.0 / g_grid, torch.zeros_like(g_grid))
    case = (t.unsqueeze(1) <= grid.unsqueeze(0)) & e.unsqueeze(1)  # [n, m]
    control = t.unsqueeze(1) > grid.unsqueeze(0)
    terms = est.square() * case * w_case.unsqueeze(1) + (1.0 - est).square() * control * w_grid.unsqueeze(0)
    return BrierScores(tuple(grid.tolist()), tuple(terms.mean(0).tolist()))


def integrated_brier_score(
    train_time: ArrayLike,
    train_event: ArrayLike,
    test_time: ArrayLike,
    test_event: ArrayLike,
    survival_at_times: ArrayLike,
    times: ArrayLike,
) -> float:
    """Integrated Brier score, equal to sksurv.metrics.integrated_brier_score: the trapezoidal integral of
    brier_scores over `times` divided by (times[-1] − times[0]). Needs at least two times."""
    grid = _as_1d(times, "times")
    if len(grid) < 2:
        raise ValueError(
            f"the integrated Brier score needs at least two times; got {len(grid)}: pass e.g. yearly times"
        )
    bs = brier_scores(train_time, train_event, test_time, test_event, survival_at_times, times)
    x = torch.tensor(bs.times, dtype=torch.float64)
    return float(torch.trapezoid(torch.tensor(bs.scores, dtype=torch.float64), x) / (x[-1] - x[0]))
