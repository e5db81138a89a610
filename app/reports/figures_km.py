"""Kaplan–Meier by risk group (numbers at risk under the axis, log-rank p), calibration, one patient's curve.

Every function takes plain lists (no torch: the hospital client uses them too) and returns Figured(fig, data):
`data` holds exactly the numbers drawn, for the report's tables and for tests. KM and log-rank: app.domain.km
(the project's own code, checked against lifelines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from app.domain import km
from app.reports.render import DAYS_PER_YEAR, new_figure, style_axis, years

COLORS = ("#1b7837", "#e08214", "#b2182b", "#2166ac", "#762a83")
GROUP_LABELS = {2: ("low risk", "high risk"), 3: ("low risk", "intermediate risk", "high risk")}
HORIZONS_YEARS = (1, 3, 5)


@dataclass
class Figured:
    """A matplotlib Figure and the numbers it shows (JSON-able)."""

    figure: Any
    data: dict[str, Any]


@dataclass
class KMPanel:
    """One KM panel: patients' follow-up (days), events (0/1) and predicted risk (higher = worse)."""

    title: str
    time: Sequence[float]
    event: Sequence[int]
    risk: Sequence[float]


def group_labels(n_groups: int) -> tuple[str, ...]:
    return GROUP_LABELS.get(n_groups) or tuple(f"risk group {g + 1} of {n_groups}" for g in range(n_groups))


def km_groups(panel: KMPanel, n_groups: int) -> dict[str, Any]:
    """Risk groups by quantiles of panel.risk, each group's KM curve, at-risk counts per year, log-rank test."""
    group, cuts = km.risk_groups(panel.risk, n_groups)
    t, e = [float(x) for x in panel.time], [int(x) for x in panel.event]
    last_year = int(max(t) // DAYS_PER_YEAR) if t else 0
    step = next((s for s in (1, 2, 5, 10, 20) if last_year / s <= 8), 50)
    points = [float(y) for y in range(0, last_year + 1, step)]
    groups = []
    for g, label in enumerate(group_labels(n_groups)):
        gt = [ti for ti, gi in zip(t, group, strict=True) if gi == g]
        ge = [ei for ei, gi in zip(e, group, strict=True) if gi == g]
        curve = km.kaplan_meier(gt, ge)
        groups.append({
            "label": label, "patients": len(gt), "events": sum(ge),
            "times_years": [0.0, *(years(x) for x in curve.times)], "survival": [1.0, *curve.survival],
            "censored_years": [years(ti) for ti, ei in zip(gt, ge, strict=True) if not ei],
            "at_risk": km.at_risk_counts(gt, [p * DAYS_PER_YEAR for p in points]),
        })  # fmt: skip
    present = sorted(set(group))
    test = None
    if len(present) >= 2 and sum(e) > 0:
        lr = km.logrank_test(t, e, group)
        test = {"statistic": lr.statistic, "df": lr.df, "p_value": lr.p_value}
    return {"title": panel.title, "cuts": cuts, "groups": groups, "at_risk_years": points, "logrank": test}


def format_p(p: float | None) -> str:
    if p is None:
        return "log-rank p: n/a"
    return "log-rank p < 0.0001" if p < 1e-4 else f"log-rank p = {p:.4f}"


def km_figure(panels: Sequence[KMPanel], n_groups: int = 2) -> Figured:
    """Side-by-side KM panels (e.g. merged model | the target's own model) with a numbers-at-risk table under
    each axis. data = {"n_groups", "panels": [km_groups(...)]}; the i-th curve line of a panel is labelled by
    its group and has x = [0, *years of the distinct times], y = [1, *Ŝ]."""
    fig = new_figure(6.0 * len(panels), 4.6 + 0.25 * n_groups)
    grid = fig.add_gridspec(2, len(panels), height_ratios=[4.0, 0.45 + 0.28 * n_groups])
    data: dict[str, Any] = {"n_groups": n_groups, "panels": []}
    for col, panel in enumerate(panels):
        info = km_groups(panel, n_groups)
        data["panels"].append(info)
        ax, table = fig.add_subplot(grid[0, col]), fig.add_subplot(grid[1, col])
        for g, grp in enumerate(info["groups"]):
            color = COLORS[g % len(COLORS)]
            ax.step(grp["times_years"], grp["survival"], where="post", color=color, linewidth=1.8,
                    label=f"{grp['label']} (n={grp['patients']}, events={grp['events']})")  # fmt: skip
            marks = [_step_value(grp, x) for x in grp["censored_years"]]
            ax.plot(grp["censored_years"], marks, "|", color=color, markersize=7, gid="censored")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(info["at_risk_years"])
        ax.set_xlim(0, max([*info["at_risk_years"], *(g["times_years"][-1] for g in info["groups"])]) * 1.02 + 1e-9)
        style_axis(ax, xlabel="time (years)", ylabel="survival probability", title=panel.title)
        p_value = info["logrank"]["p_value"] if info["logrank"] else None
        ax.legend(loc="upper right", fontsize=8, title=format_p(p_value), title_fontsize=8)
        _at_risk_table(table, ax, info)
    return Figured(fig, data)


def _step_value(grp: dict[str, Any], x: float) -> float:
    ys = [s for t, s in zip(grp["times_years"], grp["survival"], strict=True) if t <= x]
    return ys[-1] if ys else 1.0


def _at_risk_table(table: Any, ax: Any, info: dict[str, Any]) -> None:
    """Numbers at risk at whole years, one row per group, aligned with the KM axis."""
    table.set_xlim(ax.get_xlim())
    n = len(info["groups"])
    table.set_ylim(-0.5, n - 0.5)
    for row, grp in enumerate(info["groups"]):
        y = n - 1 - row
        for x, count in zip(info["at_risk_years"], grp["at_risk"], strict=True):
            if x <= ax.get_xlim()[1]:
                table.text(x, y, str(count), ha="center", va="center", fontsize=8,
                           color=COLORS[row % len(COLORS)], gid="at-risk")  # fmt: skip
    table.set_yticks(range(n), [g["label"] for g in reversed(info["groups"])], fontsize=8)
    table.set_xticks([])
    table.tick_params(axis="y", length=0, pad=14)
    table.set_title("number at risk", fontsize=8, loc="left")
    for side in ("top", "right", "bottom", "left"):
        table.spines[side].set_visible(False)


def calibration_figure(
    time: Sequence[float], event: Sequence[int], predicted: Mapping[int, Sequence[float]], n_bins: int = 10
) -> Figured:
    """Predicted vs Kaplan–Meier observed survival per risk bin (deciles; fewer for a small split) at each
    horizon (years → predicted S(horizon) per patient). A horizon beyond the longest follow-up is skipped with the
    reason; a bin whose patients were all censored before the horizon is not drawn (noted on the panel)."""
    horizons = sorted(predicted)
    fig = new_figure(4.0 * max(1, len(horizons)), 4.2)
    axes = fig.subplots(1, max(1, len(horizons)), squeeze=False)[0]
    data: dict[str, Any] = {"horizons": []}
    longest = max((float(x) for x in time), default=0.0)
    for ax, h in zip(axes, horizons, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        style_axis(ax, xlabel=f"predicted {h}-year survival", ylabel=f"observed {h}-year survival (KM)",
                   title=f"calibration at {h} year{'s' if h > 1 else ''}")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        if h * DAYS_PER_YEAR > longest:
            reason = f"no patient followed {h} years (longest {years(longest):.1f})"
            ax.text(0.5, 0.5, reason, ha="center", va="center", fontsize=9, transform=ax.transAxes, wrap=True)
            data["horizons"].append({"years": h, "bins": [], "skipped": reason})
            continue
        bins = km.calibration_bins(predicted[h], time, event, h * DAYS_PER_YEAR, n_bins=n_bins)
        shown = [b for b in bins if b.observed is not None and b.lower is not None and b.upper is not None]
        xs, ys = [b.predicted for b in shown], [float(b.observed or 0.0) for b in shown]
        err = [
            [y - float(b.lower or 0.0) for y, b in zip(ys, shown, strict=True)],
            [float(b.upper or 0.0) - y for y, b in zip(ys, shown, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=COLORS[3], markersize=5, capsize=3, label="risk bins (95% CI)")
        if len(shown) < len(bins):
            note = f"{len(bins) - len(shown)} bin(s) not estimable: all censored before {h} year{'s' if h > 1 else ''}"
            ax.text(0.98, 0.02, note, ha="right", va="bottom", fontsize=7, transform=ax.transAxes)
        ax.legend(loc="upper left", fontsize=8)
        data["horizons"].append({"years": h, "bins": [asdict(b) for b in bins], "skipped": None})
    return Figured(fig, data)


def patient_curve_figure(
    edges_days: Sequence[float], survival: Sequence[float], *, title: str, group: dict[str, Any] | None = None
) -> Figured:
    """One patient's predicted survival (step function over the bin edges: S = 1 until the first edge, then
    S_j), with the KM curve of its risk group (dashed) when given. data: x (years), y, group label."""
    xs = [years(x) for x in edges_days]
    ys = [1.0, *(float(s) for s in survival)]
    if len(ys) != len(xs):
        raise ValueError(f"a curve of {len(survival)} bins needs {len(survival) + 1} edges; got {len(xs)}")
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.step(xs, ys, where="post", color=COLORS[3], linewidth=2, label="predicted survival")
    if group is not None:
        ax.step(group["times_years"], group["survival"], where="post", color="grey", linestyle="--",
                label=f"KM of the {group['label']} group")  # fmt: skip
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, max(xs[-1], xs[1] if len(xs) > 1 else 1.0))
    style_axis(ax, xlabel="time (years)", ylabel="survival probability", title=title)
    ax.legend(loc="lower left", fontsize=8)
    return Figured(fig, {"x_years": xs, "survival": ys, "group": None if group is None else group["label"]})
