"""`steph-client validate … --report out.html`: the hospital's own KM / calibration / C-index figures, offline.

No torch and no server: Kaplan–Meier and log-rank from app.domain.km (pure Python), figures with matplotlib (the
optional `plots` extra: pip install 'steph-service[plots]'); the page is plain HTML with the images inline.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from app.client.validate import ValidationInputError, ValidationResult, bootstrap_c, comparable_pairs


def _figures(patients: dict[str, float], outcomes: dict[str, tuple[float, int]],
             survival: dict[int, dict[str, float]], result: ValidationResult, *, n_groups: int,
             seed: int, n_boot: int) -> dict[str, Any]:  # fmt: skip
    from app.reports import figures_km as fk
    from app.reports import figures_model as fm

    ids = [p for p in patients if p in outcomes]
    time, event = [outcomes[p][0] for p in ids], [outcomes[p][1] for p in ids]
    risk = [patients[p] for p in ids]
    figs = {"km": fk.km_figure([fk.KMPanel("local patients by predicted risk", time, event, risk)], n_groups)}
    horizons = {y: [by[p] for p in ids] for y, by in sorted(survival.items()) if all(p in by for p in ids)}
    if horizons:
        figs["calibration"] = fk.calibration_figure(time, event, horizons)
    boots = bootstrap_c(comparable_pairs(time, event, risk), len(ids), n_boot=n_boot, seed=seed)
    figs["c-index"] = fm.c_index_figure(result.c_index, (result.ci_low, result.ci_high), boots, len(ids))
    return figs


def write_report(path: str | Path, patients: dict[str, float], outcomes: dict[str, tuple[float, int]],
                 survival: dict[int, dict[str, float]], result: ValidationResult, *, n_groups: int = 2,
                 seed: int = 0, n_boot: int = 200) -> list[str]:  # fmt: skip
    """Write the self-contained HTML report; returns the figure names. ValidationInputError without matplotlib."""
    from app.reports.render import PlottingUnavailable, data_uri

    try:
        figs = _figures(patients, outcomes, survival, result, n_groups=n_groups, seed=seed, n_boot=n_boot)
    except PlottingUnavailable as exc:
        raise ValidationInputError(str(exc)) from None
    km = figs["km"].data["panels"][0]
    lr = km["logrank"]
    rows = [
        ("patients (scored and labelled)", f"{result.patients} ({result.events} events)"),
        ("Harrell's C-index", f"{result.c_index:.4f}"),
        ("95% bootstrap CI", "n/a" if result.ci_low is None else f"[{result.ci_low:.4f}, {result.ci_high:.4f}]"),
        ("log-rank test between risk groups",
         "n/a" if lr is None else f"χ² = {lr['statistic']:.3f}, df = {lr['df']}, p = {lr['p_value']:.4g}"),
        ("model(s)", ", ".join(result.model_ids) or "not recorded in the scores file"),
        ("matched by", result.matched_by),
    ]  # fmt: skip
    rows += [(f"group: {g['label']}", f"{g['patients']} patients, {g['events']} events") for g in km["groups"]]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    images = "".join(
        f'<h2>{html.escape(name)}</h2><figure id="fig-{name}"><img data-figure="{name}" alt="{name}" '
        f'src="{data_uri(f.figure, "png")}"></figure>'
        for name, f in figs.items()
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>Local validation</title><style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;"
        "padding:0 1rem}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}table{border-collapse:collapse}"
        "img{max-width:100%}</style></head><body><h1>Local validation of the model's scores</h1>"
        "<p>Computed on this site from its own outcomes; nothing was sent anywhere.</p>"
        f'<table id="summary">{table}</table>{images}</body></html>'
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(page, encoding="utf-8")
    return list(figs)
