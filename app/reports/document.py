"""A model report: figures from the report data (app.services.report_data) and one self-contained HTML page.

    figures = build_figures(data, meta, n_groups=2, patient=None)   # name -> Figured(fig, data)
    html    = render_html(data, meta, figures)                     # images as data: URIs, no external request

`meta`: {"model": {...}, "method", "params", "training": {"steps": [...], "epochs": [...]}, "provenance": {...}}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.reports import figures_km as fk
from app.reports import figures_model as fm
from app.reports.render import data_uri

FIGURES = ("km", "calibration", "time-metrics", "comparison", "sources", "training", "patient")
CAPTIONS = {
    "km": "Kaplan–Meier curves of the held-out patients by predicted risk group (left: merged model; right: the "
    "target's own model), numbers at risk under the axis, log-rank test between the groups.",
    "calibration": "Calibration: mean predicted vs Kaplan–Meier observed survival per risk bin (deciles, at least 5 "
    "patients each; 95% CI); bins whose patients were all censored before the horizon are not drawn.",
    "time-metrics": "Time-dependent AUC (higher is better) and IPCW Brier score (lower is better) over time.",
    "comparison": "C-index of both models on the same patients and the paired bootstrap of their difference.",
    "sources": "What the merge borrows: per held-out bag merge weights w and mixup ratios λ, top-k frequency "
    "(STEPH), or the fixed weights of a static merge.",
    "training": "Training loss of the merge job.",
    "patient": "One patient's predicted survival curve, with the KM curve of its risk group.",
}
TITLES = {
    "km": "Kaplan–Meier curves by predicted risk group", "calibration": "Calibration at 1, 3 and 5 years",
    "time-metrics": "Time-dependent AUC and Brier score", "comparison": "Comparison with the target's own model",
    "sources": "What the merge borrows from each source", "training": "Training curve",
    "patient": "One patient's predicted survival",
}  # fmt: skip
TEMPLATES = Path(__file__).with_name("templates")


def _figure(name: str, data: dict[str, Any], meta: dict[str, Any], n_groups: int, patient: str | None) -> Any:
    test, merged, ref = data["test"], data["merged"], data["reference"]
    if name == "km":
        panels = [
            fk.KMPanel("merged model", test["time"], test["event"], merged["risk"]),
            fk.KMPanel("target's own model (ABMIL)", test["time"], test["event"], ref["risk"]),
        ]
        return fk.km_figure(panels, n_groups)
    if name == "calibration":
        return fk.calibration_figure(test["time"], test["event"], {int(h): v for h, v in merged["surv_at"].items()})
    if name == "time-metrics":
        tm = data["time_metrics"]
        return fm.time_metrics_figure(tm["times_days"], tm["auc"], tm["brier"]) if tm["times_days"] else None
    if name == "comparison":
        return fm.comparison_figure(data["comparison"], data["bootstrap"]) if data.get("comparison") else None
    if name == "sources":
        if data.get("per_bag_sources"):
            return fm.sources_figure(fm.sources_summary(data["source_names"], data["per_bag_sources"]))
        fixed = meta.get("static_weights")
        return fm.static_weights_figure(fixed["names"], fixed["weights"], fixed["title"]) if fixed else None
    if name == "training":
        tr = meta.get("training") or {}
        return fm.training_figure(tr.get("steps"), tr.get("epochs")) if tr.get("steps") or tr.get("epochs") else None
    if name == "patient":
        return patient_figure(data, n_groups, patient)
    raise KeyError(f"unknown figure {name!r}; the report has {', '.join(FIGURES)}")


def patient_index(data: dict[str, Any], patient: str | None) -> int:
    """Index of patient id `patient` among the held-out patients (default: the first). KeyError when absent."""
    ids = data["test"]["patient_ids"]
    if patient is None:
        return 0
    if patient not in ids:
        raise KeyError(f"patient {patient!r} is not among the {len(ids)} held-out patients of this report")
    return ids.index(patient)


def patient_figure(data: dict[str, Any], n_groups: int, patient: str | None) -> Any:
    """The patient's merged-model survival curve and its risk group (quantile groups of the held-out risks)."""
    i = patient_index(data, patient)
    test, merged = data["test"], data["merged"]
    groups = fk.km_groups(fk.KMPanel("", test["time"], test["event"], merged["risk"]), n_groups)
    from app.domain.km import risk_groups

    g = risk_groups(merged["risk"], n_groups)[0][i]
    grp = groups["groups"][g]
    title = f"{test['patient_ids'][i]}: {grp['label']} (risk {merged['risk'][i]:.3f})"
    fig = fk.patient_curve_figure(data["bin_edges"], merged["curves"][i], title=title, group=grp)
    fig.data.update(patient=test["patient_ids"][i], group_index=g)
    return fig


def build_figures(
    data: dict[str, Any],
    meta: dict[str, Any],
    *,
    n_groups: int = 2,
    patient: str | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """name -> Figured for every figure the data allow (a figure without data is left out), or just `only`."""
    names = (only,) if only else FIGURES
    out = {}
    for name in names:
        fig = _figure(name, data, meta, n_groups, patient)
        if fig is not None:
            out[name] = fig
    return out


def render_html(data: dict[str, Any], meta: dict[str, Any], figures: dict[str, Any]) -> str:
    """The report page: summary table, every figure inline (PNG data URIs), provenance as JSON."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    images = [
        {"name": n, "title": TITLES[n], "caption": CAPTIONS[n], "src": data_uri(f.figure, "png")}
        for n, f in figures.items()
    ]
    km_panels = figures["km"].data["panels"] if "km" in figures else []
    return env.get_template("report.html").render(
        meta=meta, data=data, images=images, km_panels=km_panels,
        comparison=data.get("comparison"), skipped=data.get("skipped"),
        provenance=json.dumps(meta.get("provenance", {}), indent=2, default=str),
    )  # fmt: skip
