"""Model figures: time-dependent AUC and Brier curves, the C-index comparison with its bootstrap, the sources a
merge borrows from (STEPH per-bag w and λ, or a static merge's fixed weights), and the training curves.

Inputs are plain lists/dicts; each function returns Figured(fig, data) with the numbers drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.reports.figures_km import COLORS, Figured
from app.reports.render import new_figure, style_axis, years

MODEL_COLORS = {"merged": COLORS[3], "reference": COLORS[1]}
MODEL_LABELS = {"merged": "merged model", "reference": "target's own model"}


def time_metrics_figure(
    times_days: Sequence[float], auc: dict[str, Sequence[float] | None], brier: dict[str, Sequence[float] | None]
) -> Figured:
    """AUC(t) (left, higher = better) and Brier score BS(t) (right, lower = better) over time, one line per model
    ("merged", "reference"); a missing series is left out and named in data["missing"]."""
    fig = new_figure(10.0, 4.0)
    ax_auc, ax_bs = fig.subplots(1, 2)
    xs = [years(t) for t in times_days]
    missing = []
    for name in ("merged", "reference"):
        for ax, series, what in ((ax_auc, auc.get(name), "auc"), (ax_bs, brier.get(name), "brier")):
            if series is None:
                missing.append(f"{what}:{name}")
                continue
            ax.plot(xs, list(series), marker="o", markersize=3, color=MODEL_COLORS[name], label=MODEL_LABELS[name])
    ax_auc.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (0.5)")
    ax_bs.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="uninformative (0.25)")
    style_axis(ax_auc, xlabel="time (years)", ylabel="cumulative/dynamic AUC(t)", title="time-dependent AUC")
    style_axis(ax_bs, xlabel="time (years)", ylabel="Brier score BS(t)", title="Brier score (IPCW)")
    for ax in (ax_auc, ax_bs):
        ax.legend(fontsize=8)
    data = {"times_years": xs, "auc": dict(auc), "brier": dict(brier), "missing": missing}
    return Figured(fig, data)


def comparison_figure(comparison: dict[str, Any], differences: Sequence[float]) -> Figured:
    """C-index of the merged model and the target's own model (left) and the paired bootstrap distribution of
    their difference with its 95% interval and the verdict (right)."""
    fig = new_figure(10.0, 4.0)
    ax_c, ax_d = fig.subplots(1, 2, width_ratios=[1, 1.6])
    values = [comparison["merged_c_index"], comparison["reference_c_index"]]
    bars = ax_c.bar([MODEL_LABELS["merged"], MODEL_LABELS["reference"]], values,
                    color=[MODEL_COLORS["merged"], MODEL_COLORS["reference"]])  # fmt: skip
    for bar, v in zip(bars, values, strict=True):
        ax_c.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=9)
    ax_c.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_c.set_ylim(0, 1.05)
    style_axis(ax_c, xlabel="", ylabel="Harrell's C-index", title=f"C-index on {comparison['patients']} patients")
    diffs = [float(d) for d in differences]
    if diffs:
        ax_d.hist(diffs, bins=min(40, max(5, len(diffs) // 10)), color=COLORS[4], alpha=0.75, label="bootstrap")
    lo, hi = comparison["ci_low"], comparison["ci_high"]
    ax_d.axvline(
        comparison["difference"], color="black", linewidth=1.5, label=f"difference {comparison['difference']:+.3f}"
    )
    ax_d.axvline(lo, color="black", linestyle="--", linewidth=1, label=f"95% CI [{lo:+.3f}, {hi:+.3f}]")
    ax_d.axvline(hi, color="black", linestyle="--", linewidth=1)
    ax_d.axvline(0.0, color="red", linestyle=":", linewidth=1, label="no difference")
    verdict = comparison.get("verdict", "")
    style_axis(ax_d, xlabel="C-index difference (merged − own model)", ylabel="bootstrap resamples",
               title=f"paired bootstrap ({len(diffs)} resamples): {verdict}")  # fmt: skip
    ax_d.legend(fontsize=8)
    return Figured(fig, {"c_index": dict(zip(("merged", "reference"), values, strict=True)), "differences": diffs,
                         "ci": [lo, hi], "verdict": verdict})  # fmt: skip


def sources_summary(names: Sequence[str], per_bag: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """From the per-bag `info["sources"]` rows ({index, name, weight, lam} of the selected sources): each source's
    w and λ over the bags that selected it, and the share of bags in which it is in the top-k."""
    weights: dict[str, list[float]] = {n: [] for n in names}
    lams: dict[str, list[float]] = {n: [] for n in names}
    for rows in per_bag:
        for row in rows:
            name = row.get("name") or names[int(row["index"])]
            weights.setdefault(name, []).append(float(row["weight"]))
            if row.get("lam") is not None:
                lams.setdefault(name, []).append(float(row["lam"]))
    n = max(1, len(per_bag))
    freq = {name: len(ws) / n for name, ws in weights.items()}
    return {"names": list(weights), "weights": weights, "lams": lams, "topk_share": freq, "bags": len(per_bag)}


def sources_figure(summary: dict[str, Any]) -> Figured:
    """STEPH: box plots of each source's merge weight w and mixup ratio λ over held-out bags (where selected), and
    the share of bags that put it in the top-k."""
    names = summary["names"]
    fig = new_figure(12.0, 4.2)
    ax_w, ax_l, ax_f = fig.subplots(1, 3)
    pos = list(range(1, len(names) + 1))
    w = [summary["weights"][n] or [float("nan")] for n in names]
    lam = [summary["lams"].get(n) or [float("nan")] for n in names]
    ax_w.boxplot(w, positions=pos, tick_labels=names, showfliers=True)
    ax_l.boxplot(lam, positions=pos, tick_labels=names, showfliers=True)
    ax_l.set_ylim(0, 1.02)
    shares = [summary["topk_share"][n] for n in names]
    ax_f.bar(names, shares, color=COLORS[0])
    ax_f.set_ylim(0, 1.05)
    style_axis(ax_w, xlabel="source cancer", ylabel="merge weight w", title="merge weight per bag (when selected)")
    style_axis(ax_l, xlabel="source cancer", ylabel="mixup ratio λ (1 = target only)", title="mixup ratio λ per bag")
    style_axis(ax_f, xlabel="source cancer", ylabel="share of bags", title=f"in the top-k ({summary['bags']} bags)")
    for ax in (ax_w, ax_l, ax_f):
        ax.tick_params(axis="x", rotation=45)
    return Figured(fig, {**summary, "shares": shares})


def static_weights_figure(names: Sequence[str], weights: Sequence[float], title: str) -> Figured:
    """A static merge's fixed per-source weights (one bar each)."""
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot()
    ax.bar(list(names), [float(x) for x in weights], color=COLORS[0])
    style_axis(ax, xlabel="merged model", ylabel="weight", title=title)
    ax.tick_params(axis="x", rotation=45)
    return Figured(fig, {"names": list(names), "weights": [float(x) for x in weights]})


def training_figure(step_losses: Sequence[float] | None, epoch_losses: Sequence[float] | None) -> Figured:
    """Training loss per optimiser step (thin line) and the mean loss per epoch (markers, at the epoch's last
    step when steps are known, else at the epoch number)."""
    fig = new_figure(7.0, 3.8)
    ax = fig.add_subplot()
    steps = [float(x) for x in step_losses or []]
    epochs = [float(x) for x in epoch_losses or []]
    if steps:
        ax.plot(range(1, len(steps) + 1), steps, color=COLORS[3], linewidth=1, alpha=0.7, label="loss per step")
    per_epoch = len(steps) // len(epochs) if steps and epochs and len(steps) % len(epochs) == 0 else 0
    ex = [per_epoch * (i + 1) for i in range(len(epochs))] if per_epoch else list(range(1, len(epochs) + 1))
    if epochs:
        ax.plot(ex, epochs, "o-", color=COLORS[2], markersize=4, label="mean loss per epoch")
    style_axis(ax, xlabel="optimiser step" if per_epoch or steps else "epoch", ylabel="training loss (NLL + aux)",
               title="training curve of the merge job")  # fmt: skip
    if steps or epochs:
        ax.legend(fontsize=8)
    return Figured(fig, {"steps": steps, "epochs": epochs, "epoch_x": ex})


def c_index_figure(
    c_index: float, ci: tuple[float | None, float | None], boots: Sequence[float], patients: int
) -> Figured:
    """One model's Harrell C-index with its bootstrap 95% interval (the hospital's validation)."""
    fig = new_figure(7.0, 3.8)
    ax = fig.add_subplot()
    values = [float(b) for b in boots]
    if values:
        ax.hist(values, bins=min(40, max(5, len(values) // 10)), color=COLORS[4], alpha=0.75, label="bootstrap")
    ax.axvline(c_index, color="black", linewidth=1.5, label=f"C-index {c_index:.3f}")
    lo, hi = ci
    if lo is not None and hi is not None:
        ax.axvline(lo, color="black", linestyle="--", linewidth=1, label=f"95% CI [{lo:.3f}, {hi:.3f}]")
        ax.axvline(hi, color="black", linestyle="--", linewidth=1)
    ax.axvline(0.5, color="red", linestyle=":", linewidth=1, label="chance (0.5)")
    style_axis(ax, xlabel="Harrell's C-index", ylabel="bootstrap resamples",
               title=f"C-index on {patients} local patients")  # fmt: skip
    ax.legend(fontsize=8)
    return Figured(fig, {"c_index": c_index, "ci": [lo, hi], "bootstrap": values})
