"""Figures draw exactly the numbers they report: KM steps, at-risk counts, log-rank p, calibration, patient curve."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("matplotlib")

from app.domain import km  # noqa: E402
from app.reports import figures_km as fk  # noqa: E402
from app.reports import figures_model as fm  # noqa: E402
from app.reports.render import to_bytes  # noqa: E402


def _cohort(n: int = 60, seed: int = 0) -> tuple[list[float], list[int], list[float]]:
    rng = random.Random(seed)
    risk = [rng.gauss(0, 1) for _ in range(n)]
    time = [max(1.0, rng.expovariate(1 / (1500 * (1.6 if r < 0 else 0.6)))) for r in risk]
    event = [int(rng.random() < 0.7) for _ in range(n)]
    return time, event, risk


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label().split(" (")[0]: (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


@pytest.mark.parametrize("n_groups", [2, 3])
def test_km_figure_plots_km_steps_and_at_risk(n_groups: int) -> None:
    time, event, risk = _cohort()
    out = fk.km_figure([fk.KMPanel("merged", time, event, risk)], n_groups)
    ax, table = out.figure.axes[:2]
    groups, _ = km.risk_groups(risk, n_groups)
    lines = _lines(ax)
    for g, label in enumerate(fk.group_labels(n_groups)):
        gt = [t for t, x in zip(time, groups, strict=True) if x == g]
        ge = [e for e, x in zip(event, groups, strict=True) if x == g]
        curve = km.kaplan_meier(gt, ge)
        xs, ys = lines[label]
        assert xs == pytest.approx([0.0, *(t / 365.0 for t in curve.times)])
        assert ys == pytest.approx([1.0, *curve.survival])
        row = [int(t.get_text()) for t in table.texts if t.get_color() == fk.COLORS[g]]
        years = out.data["panels"][0]["at_risk_years"]
        assert row == km.at_risk_counts(gt, [y * 365.0 for y in years])[: len(row)]
        assert row[0] == len(gt)
    lr = km.logrank_test(time, event, groups)
    assert out.data["panels"][0]["logrank"]["p_value"] == pytest.approx(lr.p_value)
    assert fk.format_p(lr.p_value) in ax.get_legend().get_title().get_text()
    assert to_bytes(out.figure, "png")[:4] == b"\x89PNG"


def test_km_logrank_matches_lifelines() -> None:
    stats = pytest.importorskip("lifelines.statistics")
    time, event, risk = _cohort(80, 3)
    out = fk.km_figure([fk.KMPanel("m", time, event, risk)], 2)
    groups, _ = km.risk_groups(risk, 2)
    ref = stats.logrank_test(
        [t for t, g in zip(time, groups, strict=True) if g == 0],
        [t for t, g in zip(time, groups, strict=True) if g == 1],
        [e for e, g in zip(event, groups, strict=True) if g == 0],
        [e for e, g in zip(event, groups, strict=True) if g == 1],
    )
    assert out.data["panels"][0]["logrank"]["statistic"] == pytest.approx(float(ref.test_statistic), rel=1e-9)
    assert out.data["panels"][0]["logrank"]["p_value"] == pytest.approx(float(ref.p_value), rel=1e-7)


def test_calibration_figure_points_are_km_per_decile() -> None:
    time, event, risk = _cohort(100, 5)
    pred1 = [0.5 + 0.4 * (1 / (1 + pow(2.718, r))) for r in risk]
    out = fk.calibration_figure(time, event, {1: pred1, 100: pred1})
    assert out.data["horizons"][1]["skipped"] and not out.data["horizons"][1]["bins"]
    bins = km.calibration_bins(pred1, time, event, 365.0)
    ax = out.figure.axes[0]
    points = [line for line in ax.lines if line.get_marker() == "o"][0]
    assert list(points.get_xdata()) == pytest.approx([b.predicted for b in bins])
    assert list(points.get_ydata()) == pytest.approx([b.observed for b in bins])
    assert len(bins) == 10 and sum(b.patients for b in bins) == 100


def test_patient_curve_and_sources_and_training() -> None:
    edges = [0.0, 365.0, 730.0, 1095.0, 1460.0]
    out = fk.patient_curve_figure(edges, [0.9, 0.7, 0.6, 0.5], title="p1")
    line = out.figure.axes[0].lines[0]
    assert list(line.get_xdata()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert list(line.get_ydata()) == [1.0, 0.9, 0.7, 0.6, 0.5]
    with pytest.raises(ValueError, match="edges"):
        fk.patient_curve_figure(edges[:3], [0.9, 0.7, 0.6, 0.5], title="bad")

    per_bag = [
        [{"index": 0, "name": "a", "weight": 0.5, "lam": 0.2}, {"index": 1, "name": "b", "weight": 0.1, "lam": 0.9}],
        [{"index": 0, "name": "a", "weight": 0.7, "lam": 0.4}],
    ]
    summary = fm.sources_summary(["a", "b", "c"], per_bag)
    assert summary["topk_share"] == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert summary["weights"]["a"] == [0.5, 0.7] and summary["lams"]["b"] == [0.9]
    fig = fm.sources_figure(summary)
    bars = fig.figure.axes[2].patches
    assert [b.get_height() for b in bars] == [1.0, 0.5, 0.0]

    tr = fm.training_figure([3.0, 2.0, 1.5, 1.0], [2.5, 1.25])
    ax = tr.figure.axes[0]
    assert list(ax.lines[0].get_ydata()) == [3.0, 2.0, 1.5, 1.0]
    assert list(ax.lines[1].get_xdata()) == [2, 4] and list(ax.lines[1].get_ydata()) == [2.5, 1.25]


def test_comparison_figure_shows_ci_and_verdict() -> None:
    comp = {"merged_c_index": 0.7, "reference_c_index": 0.6, "difference": 0.1, "ci_low": 0.02, "ci_high": 0.18,
            "patients": 40, "verdict": "better"}  # fmt: skip
    out = fm.comparison_figure(comp, [0.05, 0.1, 0.15, 0.08, 0.12])
    ax_c, ax_d = out.figure.axes
    assert [b.get_height() for b in ax_c.patches] == [0.7, 0.6]
    vlines = sorted(float(line.get_xdata()[0]) for line in ax_d.lines)
    assert vlines == pytest.approx([0.0, 0.02, 0.1, 0.18])
    assert "better" in ax_d.get_title()
    svg = to_bytes(out.figure, "svg")
    assert b"<svg" in svg[:400]
