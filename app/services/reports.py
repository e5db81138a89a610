"""Model reports: the figures and the HTML page of a merged model, from the database, the store and the cohort.

    model_report_html(ctx=, model_id=, n_groups=2, patient=None, cohort_id=None) -> str
    model_figure(ctx=, model_id=, name=, fmt="png", ...) -> bytes
    model_report_json(ctx=, model_id=, ...) -> dict      the plotted numbers

The held-out patients are the test split of the job's cohort (or `cohort_id`); the reference is the target's own
checkpoint scored as a plain ABMIL. The computed numbers are cached per (model, cohort) in ctx.extras (they only
depend on immutable rows and content-addressed files); figures are drawn per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from app.services.errors import NotFound, UnprocessableInput, not_found

_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 8
GROUP_CHOICES = (2, 3, 4)


def _cache(ctx: Any) -> tuple[OrderedDict, dict]:
    with _CACHE_LOCK:
        entry = ctx.extras.get("report_cache")
        if entry is None:
            entry = ctx.extras["report_cache"] = (OrderedDict(), {})
        return entry


def model_names(session: Any, model_ids: list[str]) -> dict[str, list[str]]:
    """model id -> ["name v3 (champion)", …] from the model registry; {} while the registry tables are absent."""
    from sqlalchemy import select

    from app.db import models as m

    version, registered, alias = (getattr(m, n, None) for n in ("ModelVersion", "RegisteredModel", "ModelAlias"))
    if version is None or registered is None or not model_ids:
        return {}
    out: dict[str, list[str]] = {}
    rows = session.execute(
        select(version.model_id, version.version, registered.name, registered.id)
        .join(registered, registered.id == version.registered_model_id)
        .where(version.model_id.in_(model_ids))
    ).all()
    for model_id, number, name, rid in rows:
        tags = []
        if alias is not None:
            tags = session.scalars(
                select(alias.alias).where(alias.registered_model_id == rid, alias.version == number)
            ).all()
        out.setdefault(model_id, []).append(f"{name} v{number}" + (f" ({', '.join(tags)})" if tags else ""))
    return out


def _meta(ctx: Any, model_id: str, cohort_id: str | None) -> dict[str, Any]:
    """The model row, its job, target, base and cohort as plain dicts (NotFound / UnprocessableInput)."""
    from app.db import models as m

    with ctx.session() as s:
        row = s.get(m.Model, model_id)
        if row is None:
            raise not_found("model", model_id, hint="list them with GET /models")
        job = s.get(m.MergeJob, row.job_id) if row.job_id else None
        cohort_id = cohort_id or (job.cohort_id if job is not None else None)
        if cohort_id is None:
            raise UnprocessableInput(f"model {model_id!r} has no merge job: pass ?cohort_id= to choose the cohort")
        cohort, base = s.get(m.Cohort, cohort_id), s.get(m.ModelBase, row.base_id)
        target = s.get(m.Checkpoint, row.target_checkpoint_id)
        if cohort is None:
            raise not_found("cohort", cohort_id, hint="list them with GET /cohorts")
        if cohort.base_id != row.base_id:
            raise UnprocessableInput(f"cohort {cohort_id!r} belongs to another base than model {model_id!r}")
        train = (row.metrics or {}).get("train") or {}
        names = model_names(s, [model_id]).get(model_id, [])
        return {
            "model": {
                "id": row.id, "name": ", ".join(names) or None, "target": target.cancer if target else None,
                "sources": [x.get("cancer") for x in row.sources], "created_at": str(row.created_at),
                "job_id": row.job_id, "artifact_sha256": row.artifact_sha256,
            },
            "method": row.method, "params": row.params,
            # issue 12: the promotion gate's verdict and, for method auto, every candidate's inner-CV estimate
            "promotion": {"status": row.promotion_status, **(row.promotion or {})},
            "auto": ((row.metrics or {}).get("notes") or {}).get("auto"),
            "relevance": ((row.metrics or {}).get("notes") or {}).get("relevance"),  # STEPH's β rule (issue 12)
            "training": {"steps": train.get("step_losses"), "epochs": train.get("history")},
            "provenance": {**(row.provenance or {}), "cohort_summary": cohort.summary},
            "software_version": (row.provenance or {}).get("code_version", ""),
            "_load": {
                "sha": row.artifact_sha256, "target_key": target.artifact_key if target else None,
                "dims": dict(base.dims), "edges": list(base.bin_edges), "cohort_id": cohort.id,
                "cohort": {"id": cohort.id, "name": cohort.name, "source": cohort.source, "location": cohort.location},
                "seed": int(((row.params or {}).get("train") or {}).get("seed", 0)),
            },
        }  # fmt: skip


def _compute(ctx: Any, meta: dict[str, Any]) -> dict[str, Any]:
    from app.domain.merging.base import StaticModel
    from app.domain.mil import FamilyDims
    from app.io.cohort import open_cohort
    from app.services.bases import load_state
    from app.services.job_inputs import cohort_path
    from app.services.model_cache import get_model_cache
    from app.services.report_data import compute_report_data

    ld = meta["_load"]
    if ld["target_key"] is None:
        raise NotFound("the model's target checkpoint was deleted: the report cannot score the reference model")
    model = get_model_cache(ctx).get(ld["sha"]).model
    dims = FamilyDims.from_dict(ld["dims"])
    reference = StaticModel(load_state(ctx, ld["target_key"]), dims, ld["edges"], method="cancer_specific")
    reference.eval()
    cohort = open_cohort(cohort_path(ctx, ld["cohort"]))
    train, test = cohort.samples("train", expected_dim=dims.in_dim), cohort.samples("test", expected_dim=dims.in_dim)
    try:
        return compute_report_data(model=model, reference=reference, train_samples=train, test_samples=test,
                                   seed=ld["seed"])  # fmt: skip
    except ValueError as exc:
        raise UnprocessableInput(str(exc)) from None


def report_inputs(ctx: Any, model_id: str, cohort_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, meta) of a model's report; data computed once per (model, cohort) and cached."""
    from app.services.report_data import static_weights

    meta = _meta(ctx, model_id, cohort_id)
    key = (model_id, meta["_load"]["cohort_id"])
    items, locks = _cache(ctx)
    with _CACHE_LOCK:
        if key in items:
            items.move_to_end(key)
            data = items[key]
        else:
            data = None
            lock = locks.setdefault(key, threading.Lock())
    if data is None:
        with lock:
            with _CACHE_LOCK:
                data = items.get(key)
            if data is None:
                data = _compute(ctx, meta)
                with _CACHE_LOCK:
                    items[key] = data
                    while len(items) > CACHE_SIZE:
                        items.popitem(last=False)
    method_params = (meta["params"] or {}).get("method", {}) if isinstance(meta["params"], dict) else {}
    meta["static_weights"] = static_weights(meta["method"], method_params, meta["model"]["target"] or "target",
                                            [x or "?" for x in meta["model"]["sources"]])  # fmt: skip
    return data, meta


def check_groups(n_groups: int) -> int:
    if n_groups not in GROUP_CHOICES:
        raise UnprocessableInput(f"groups must be 2 (median split), 3 (tertiles) or 4 (quartiles); got {n_groups}")
    return n_groups


def model_report_html(
    *, ctx: Any, model_id: str, n_groups: int = 2, patient: str | None = None, cohort_id: str | None = None
) -> str:
    """The self-contained HTML report (PNG figures as data URIs)."""
    from app.reports.document import build_figures, render_html

    data, meta = report_inputs(ctx, model_id, cohort_id)
    try:
        figures = build_figures(data, meta, n_groups=check_groups(n_groups), patient=patient)
    except KeyError as exc:
        raise NotFound(str(exc.args[0])) from None
    return render_html(data, meta, figures)


def model_figure(
    *, ctx: Any, model_id: str, name: str, fmt: str = "png", n_groups: int = 2, patient: str | None = None,
    cohort_id: str | None = None,
) -> bytes:  # fmt: skip
    """One figure of the report as PNG or SVG bytes (NotFound for an unknown name or one the data do not allow)."""
    from app.reports.document import FIGURES, build_figures
    from app.reports.render import FORMATS, to_bytes

    if name not in FIGURES:
        raise NotFound(f"unknown figure {name!r}; the report has {', '.join(FIGURES)}")
    if fmt not in FORMATS:
        raise NotFound(f"unknown format {fmt!r}; use png or svg")
    data, meta = report_inputs(ctx, model_id, cohort_id)
    try:
        figures = build_figures(data, meta, n_groups=check_groups(n_groups), patient=patient, only=name)
    except KeyError as exc:
        raise NotFound(str(exc.args[0])) from None
    if name not in figures:
        raise NotFound(f"model {model_id!r} has no {name!r} figure (no data for it: see the report page)")
    return to_bytes(figures[name].figure, fmt)


CURVE_FORMATS = ("png", "svg")


def attach_curve_images(result: dict[str, Any], fmt: str | None) -> dict[str, Any]:
    """For POST /predict with `curve_image=png|svg`: add to each patient result `curve_image` =
    {format, media_type, data (base64)} — its predicted survival curve as a figure. `fmt` None: unchanged."""
    if fmt is None:
        return result
    if fmt not in CURVE_FORMATS:
        raise UnprocessableInput(f"curve_image must be png or svg; got {fmt!r}")
    import base64

    from app.reports.figures_km import patient_curve_figure
    from app.reports.render import FORMATS, to_bytes

    for patient in result["results"]:
        surv = patient["survival"]
        title = f"{patient['patient_id']}: predicted survival (risk {patient['risk']:.3f})"
        fig = patient_curve_figure(surv["times_days"], surv["probabilities"][1:], title=title)
        data = base64.b64encode(to_bytes(fig.figure, fmt)).decode("ascii")
        patient["curve_image"] = {"format": fmt, "media_type": FORMATS[fmt], "data": data}
    return result
