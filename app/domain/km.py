"""Kaplan–Meier estimator, numbers at risk, log-rank test, risk groups and KM calibration (pure stdlib).

No torch or numpy: the hospital client (`steph-client validate --report`) uses it on machines without them.
Checked against lifelines (tests/reports/test_km.py).

    at distinct observed times t_1 < … < t_m:  n_j = #{i : T_i ≥ t_j},  d_j = #{i : T_i = t_j, E_i = 1}
    Ŝ(t)      = Π_{t_j ≤ t} (1 − d_j / n_j)
    Greenwood  V(t) = Σ_{t_j ≤ t} d_j / (n_j (n_j − d_j))
    95% CI     exp(−exp(log(−log Ŝ) ± z √V / log Ŝ))            ("log-log", lifelines' default)
    log-rank   O_g − E_g over event times, E_gj = d_j n_gj / n_j,
               V_gh = Σ_j d_j (n_j − d_j)/(n_j − 1) · n_gj/n_j (δ_gh − n_hj/n_j);
               χ² = (O − E)ᵀ V⁻¹ (O − E) over groups 1..G−1, df = G − 1
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class KMCurve:
    """Ŝ as a right-continuous step function: `survival[j]` holds on [times[j], times[j+1]); Ŝ = 1 before times[0].

    times: distinct observed times (events and censorings), ascending; at_risk/events/censored per time;
    lower/upper: pointwise 95% log-log interval (NaN-free: 1 before the first event, Ŝ where Ŝ = 0)."""

    times: tuple[float, ...]
    survival: tuple[float, ...]
    at_risk: tuple[int, ...]
    events: tuple[int, ...]
    censored: tuple[int, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def at(self, t: float) -> float:
        """Ŝ(t) (1 before the first observed time)."""
        j = bisect_right(self.times, t) - 1
        return 1.0 if j < 0 else self.survival[j]

    def interval_at(self, t: float) -> tuple[float, float]:
        """The 95% interval of Ŝ(t)."""
        j = bisect_right(self.times, t) - 1
        return (1.0, 1.0) if j < 0 else (self.lower[j], self.upper[j])


def _check(time: Sequence[float], event: Sequence[int]) -> tuple[list[float], list[int]]:
    t, e = [float(x) for x in time], [int(x) for x in event]
    if len(t) != len(e):
        raise ValueError(f"time has {len(t)} entries but event has {len(e)}; give one of each per patient")
    if any(not math.isfinite(x) or x < 0 for x in t):
        raise ValueError("follow-up times must be finite and ≥ 0 (days)")
    if any(x not in (0, 1) for x in e):
        raise ValueError("event flags must be 0 (censored) or 1 (event observed)")
    return t, e


def _loglog_ci(s: float, var: float) -> tuple[float, float]:
    """(lower, upper) 95% log-log interval of Ŝ with Greenwood variance sum `var`."""
    if s <= 0.0:
        return 0.0, 0.0
    if s >= 1.0 or var <= 0.0:
        return 1.0, 1.0
    v, half = math.log(-math.log(s)), Z95 * math.sqrt(var) / abs(math.log(s))
    return math.exp(-math.exp(v + half)), math.exp(-math.exp(v - half))


def kaplan_meier(time: Sequence[float], event: Sequence[int]) -> KMCurve:
    """Kaplan–Meier curve of (time [n] days, event [n] ∈ {0, 1}) with Greenwood log-log 95% intervals."""
    t, e = _check(time, event)
    distinct = sorted(set(t))
    deaths = dict.fromkeys(distinct, 0)
    removed = dict.fromkeys(distinct, 0)
    for ti, ei in zip(t, e, strict=True):
        deaths[ti] += ei
        removed[ti] += 1
    n, s, var = len(t), 1.0, 0.0
    rows: list[tuple[float, float, int, int, int, float, float]] = []
    for tj in distinct:
        d = deaths[tj]
        if d:
            s *= 1.0 - d / n
            var = var + d / (n * (n - d)) if n > d else math.inf
        lo, hi = _loglog_ci(s, var) if math.isfinite(var) else (0.0, 0.0)
        rows.append((tj, s, n, d, removed[tj] - d, lo, hi))
        n -= removed[tj]
    cols = list(zip(*rows, strict=True)) if rows else [()] * 7
    return KMCurve(*(tuple(c) for c in cols))  # type: ignore[arg-type]


def at_risk_counts(time: Sequence[float], points: Sequence[float]) -> list[int]:
    """Numbers at risk #{i : T_i ≥ p} at each point p (the table under a KM plot)."""
    srt = sorted(float(x) for x in time)
    return [len(srt) - bisect_left(srt, float(p)) for p in points]


@dataclass(frozen=True)
class LogRank:
    """Log-rank test of equal survival across G groups: χ² statistic, df = G − 1, p-value, O and E per group."""

    statistic: float
    df: int
    p_value: float
    observed: tuple[int, ...]
    expected: tuple[float, ...]


def logrank_test(time: Sequence[float], event: Sequence[int], group: Sequence[int]) -> LogRank:
    """Log-rank (Mantel–Cox) test; `group` [n] holds labels 0..G−1 (every label present, G ≥ 2)."""
    t, e = _check(time, event)
    g = [int(x) for x in group]
    labels = sorted(set(g))
    if len(g) != len(t) or len(labels) < 2:
        raise ValueError("the log-rank test needs one group label per patient and at least two groups")
    idx = {lab: k for k, lab in enumerate(labels)}
    k = len(labels)
    obs, exp = [0.0] * k, [0.0] * k
    cov = [[0.0] * k for _ in range(k)]
    order = sorted(range(len(t)), key=lambda i: t[i])
    at_risk = [0] * k
    for i in order:
        at_risk[idx[g[i]]] += 1
    pos = 0
    while pos < len(order):
        tj, end = t[order[pos]], pos
        d_g, r_g = [0] * k, [0] * k
        while end < len(order) and t[order[end]] == tj:
            i = order[end]
            d_g[idx[g[i]]] += e[i]
            r_g[idx[g[i]]] += 1
            end += 1
        d, n = sum(d_g), sum(at_risk)
        if d:
            _accumulate(obs, exp, cov, d_g, at_risk, d, n)
        for a in range(k):
            at_risk[a] -= r_g[a]
        pos = end
    diff = [obs[a] - exp[a] for a in range(k - 1)]
    sub = [row[: k - 1] for row in cov[: k - 1]]
    stat = sum(x * y for x, y in zip(diff, _solve(sub, diff), strict=True))
    return LogRank(stat, k - 1, chi2_sf(stat, k - 1), tuple(int(o) for o in obs), tuple(exp))


def _accumulate(obs, exp, cov, d_g: list[int], at_risk: list[int], d: int, n: int) -> None:
    k = len(obs)
    factor = d * (n - d) / (n - 1) if n > 1 else 0.0
    for a in range(k):
        obs[a] += d_g[a]
        exp[a] += d * at_risk[a] / n
        for b in range(k):
            delta = 1.0 if a == b else 0.0
            cov[a][b] += factor * at_risk[a] / n * (delta - at_risk[b] / n)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """x with A x = b (Gaussian elimination, partial pivoting); zeros for a singular A."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-12:
            return [0.0] * n
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def chi2_sf(x: float, df: int) -> float:
    """P(χ²_df > x) = Q(df/2, x/2), the regularised upper incomplete gamma function."""
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    if z < a + 1:  # series for P, then Q = 1 − P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    b, c, d = z + 1 - a, 1e300, 1 / (z + 1 - a)  # Lentz continued fraction for Q
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(-z + a * math.log(z) - math.lgamma(a)) * h


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty sequence."""
    srt = sorted(float(v) for v in values)
    pos = q * (len(srt) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(srt) - 1)
    return srt[lo] + (srt[hi] - srt[lo]) * (pos - lo)


def risk_groups(risk: Sequence[float], n_groups: int) -> tuple[list[int], list[float]]:
    """(group [n] in 0..G−1, cut points [G−1]): cuts at the k/G quantiles of risk; group = #cuts < risk.
    Group 0 is the lowest risk (best prognosis); a patient at a cut goes to the lower group."""
    if n_groups < 2:
        raise ValueError(f"risk groups: n_groups must be ≥ 2, got {n_groups}")
    cuts = [quantile(risk, k / n_groups) for k in range(1, n_groups)]
    return [sum(1 for c in cuts if float(r) > c) for r in risk], cuts


@dataclass(frozen=True)
class CalibrationBin:
    """One risk bin at horizon t: mean predicted S(t) vs KM observed S(t) with its 95% interval. `observed`,
    `lower` and `upper` are None when the bin's KM is not estimable at t: every patient of the bin left
    follow-up (censored) before t, so nothing is known at t (a KM carried flat past its last time would show a
    certain survival with no interval)."""

    patients: int
    predicted: float
    observed: float | None
    lower: float | None
    upper: float | None


MIN_PATIENTS_PER_BIN = 5  # fewer bins for a small split: a "decile" of 1–2 patients says nothing


def calibration_bins(
    predicted: Sequence[float], time: Sequence[float], event: Sequence[int], horizon: float, n_bins: int = 10
) -> list[CalibrationBin]:
    """Patients sorted by predicted S(horizon) and cut into ≤ n_bins bins of near-equal size (deciles by
    default; at least MIN_PATIENTS_PER_BIN patients each, so a small split gets fewer bins); each bin: mean
    predicted survival and the Kaplan–Meier survival at `horizon` of its patients (None where not estimable)."""
    t, e = _check(time, event)
    if len(predicted) != len(t):
        raise ValueError("one predicted survival per patient is needed")
    order = sorted(range(len(t)), key=lambda i: float(predicted[i]))
    bins = max(1, min(n_bins, len(t) // MIN_PATIENTS_PER_BIN))
    out: list[CalibrationBin] = []
    for b in range(bins):
        members = order[b * len(t) // bins : (b + 1) * len(t) // bins]
        if not members:
            continue
        km = kaplan_meier([t[i] for i in members], [e[i] for i in members])
        pred = sum(float(predicted[i]) for i in members) / len(members)
        observed = km.at(horizon)
        # estimable at the horizon: someone of the bin is still followed there, or the curve already reached 0
        if max(t[i] for i in members) >= horizon or observed == 0.0:
            lo, hi = km.interval_at(horizon)
            out.append(CalibrationBin(len(members), pred, observed, lo, hi))
        else:
            out.append(CalibrationBin(len(members), pred, None, None, None))
    return out
