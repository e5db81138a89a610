"""Concordance indices for right-censored survival data (SPEC §3), vectorised with torch.

Both match scikit-survival exactly (same comparable pairs, same tie rules, same counts):

- Harrell's C (`concordance_index_censored`): a pair (i, j) is comparable when i had an event and
  t_i < t_j, or t_i = t_j and j is censored. It is concordant when r_i > r_j, tied in risk when
  |r_i − r_j| ≤ tied_tol (counts ½), discordant otherwise.  C = (concordant + ½·tied_risk) / pairs.
- Uno's C (`concordance_index_ipcw`): the same pairs, each weighted by w_i = G(t_i)⁻² where G is the
  Kaplan–Meier estimate of the censoring survival function on the training data; events with t_i ≥ τ get
  weight 0.  C = Σ w_i (conc_ij + ½ tie_ij) / Σ w_i comparable_ij.

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


def check_survival_inputs(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike
) -> tuple[Tensor, Tensor, Tensor]:
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


def harrell_c_index(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike, tied_tol: float = 1e-8
) -> CIndexResult:
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
                f"test event times must not exceed the largest training time ({float(times[-1]):g}); "
                "set tau below it"
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
