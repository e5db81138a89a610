"""What each UI page shows, as plain dicts for the templates (no HTTP here). Lists need the admin scope except
models; every function takes the service context and returns rows whose values are strings or links."""

from __future__ import annotations

import json
from typing import Any

from app.services import bases as bases_svc
from app.services import checkpoints as ckpt_svc
from app.services import cohorts as cohort_svc
from app.services import merge_jobs as jobs_svc
from app.services import models as models_svc

LIMIT = 200


def short(value: Any) -> str:
    """A timestamp to the second, '' for None."""
    return "" if value is None else str(value).replace("T", " ")[:19]


def bases(ctx: Any) -> list[dict[str, Any]]:
    rows, _ = bases_svc.list_bases(ctx, limit=LIMIT)
    return [
        {"id": b.id, "name": b.name, "encoder": b.encoder, "dims": json.dumps(b.dims), "bins": len(b.bin_edges) - 1,
         "created": short(b.created_at)}
        for b in rows
    ]  # fmt: skip


def checkpoints(ctx: Any) -> list[dict[str, Any]]:
    rows, _ = ckpt_svc.list_checkpoints(ctx, limit=LIMIT)
    return [
        {"id": c.id, "cancer": c.cancer, "name": c.name, "base_id": c.base_id, "sha256": c.sha256[:12] + "…",
         "created": short(c.created_at)}
        for c in rows
    ]  # fmt: skip


def cohorts(ctx: Any) -> list[dict[str, Any]]:
    rows, _ = cohort_svc.list_cohorts(ctx, limit=LIMIT)
    out = []
    for c in rows:
        summary = c.summary or {}
        splits = summary.get("splits") or {}
        out.append({
            "id": c.id, "name": c.name, "base_id": c.base_id, "patients": summary.get("patients", ""),
            "events": summary.get("events", ""), "splits": ", ".join(f"{k} {v}" for k, v in splits.items())
            if isinstance(splits, dict) else str(splits), "created": short(c.created_at),
        })  # fmt: skip
    return out


def progress_of(job: dict[str, Any]) -> dict[str, Any]:
    """{status, stage, percent, text, model_id, error} of a job dict — what the UI's progress bar shows."""
    p = job.get("progress") or {}
    total, step = p.get("total_steps"), p.get("step")
    percent = 100 if job["status"] == "succeeded" else int(100 * step / total) if total and step else 0
    bits = [p.get("stage") or job["status"]]
    if total and step:
        bits.append(f"step {step}/{total}, epoch {p.get('epoch')}/{p.get('epochs')}")
    if isinstance(p.get("loss"), int | float):
        bits.append(f"loss {p['loss']:.4f}")
    if isinstance(p.get("eta_s"), int | float) and job["status"] == "running":
        bits.append(f"about {p['eta_s']:.0f} s left")
    return {"id": job["id"], "status": job["status"], "percent": percent, "text": ", ".join(bits),
            "model_id": job.get("model_id"), "error": job.get("error")}  # fmt: skip


def jobs(ctx: Any) -> list[dict[str, Any]]:
    rows, _ = jobs_svc.list_jobs(ctx=ctx, limit=LIMIT)
    return [{**progress_of(j), "method": j["method"], "created": short(j.get("created_at")),
             "verdict": (j.get("comparison") or {}).get("verdict", ""),
             "promotion": (j.get("promotion") or {}).get("status", "")} for j in rows]  # fmt: skip


def job(ctx: Any, job_id: str) -> dict[str, Any]:
    j = jobs_svc.get_job(ctx=ctx, job_id=job_id)
    return {**j, "view": progress_of(j), "params_json": json.dumps(j.get("params"), indent=2)}


def models(ctx: Any) -> list[dict[str, Any]]:
    from app.services.reports import model_names

    rows, _ = models_svc.list_models(ctx=ctx, limit=LIMIT)
    with ctx.session() as s:
        names = model_names(s, [m["id"] for m in rows])
    out = []
    for m in rows:
        comp = (m.get("metrics") or {}).get("comparison") or {}
        out.append({
            "id": m["id"], "method": m["method"], "names": ", ".join(names.get(m["id"], [])),
            "sources": ", ".join(s.get("cancer", "?") for s in m["sources"]),
            "c_index": f"{comp['merged_c_index']:.3f}" if comp.get("merged_c_index") is not None else "",
            "reference": f"{comp['reference_c_index']:.3f}" if comp.get("reference_c_index") is not None else "",
            "verdict": comp.get("verdict", ""), "created": short(m.get("created_at")),
            "promotion": m.get("promotion_status") or "",
            "has_report": bool(comp),  # a report needs the held-out comparison (a model without a test split: 422)
        })  # fmt: skip
    return out


def model(ctx: Any, model_id: str) -> dict[str, Any]:
    from app.services.reports import model_names

    m = models_svc.get_model_dict(ctx=ctx, model_id=model_id)
    with ctx.session() as s:
        names = model_names(s, [model_id]).get(model_id, [])
    return {**m, "names": names, "comparison": (m.get("metrics") or {}).get("comparison"),
            "params_json": json.dumps(m.get("params"), indent=2)}  # fmt: skip


def new_job_form(ctx: Any, sent: dict[str, Any] | None = None) -> dict[str, Any]:
    """The choices of the merge-job form: methods, bases, checkpoints (with cancer), cohorts; `sent` = the values
    of a refused submission, shown again as they were (default: steph and example parameters)."""
    from app.domain.merging.registry import list_methods

    chosen = {"method": "steph", "params": json.dumps({"epochs": 5, "accum": 4, "lr": 0.001}),
              "source_checkpoint_ids": [], **(sent or {})}  # fmt: skip
    return {
        "methods": [{"name": m["name"], "summary": m.get("summary", "")} for m in list_methods()],
        "bases": bases(ctx), "checkpoints": checkpoints(ctx), "cohorts": cohorts(ctx),
        "default_params": chosen["params"], "chosen": chosen,
    }  # fmt: skip
