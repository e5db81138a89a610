"""The promotion gate in merge jobs: which gate a job runs, and what its model row and job row record.

The estimate itself is domain logic (app.domain.promotion, run inside app.domain.pipeline.run_merge); this
module turns job params + settings into a GateConfig and a finished run into database fields:

    models.promotion_status   promoted | not_promoted | unchecked
    models.promotion          {status, reason, estimate?, evidence?, gate, collapsed?, no_source_knowledge?,
                               target_unchanged?, constant_risk?}
    merge_jobs.promotion      the same without gate   (the summary on the job)

A `not_promoted` model is still stored and downloadable; its status is on the model JSON, so clients and the
registry can offer only promoted models as the target's model.
"""

from __future__ import annotations

from typing import Any

from app.services.errors import UnprocessableInput

STATUSES = ("promoted", "not_promoted", "unchecked")


def gate_config(params: dict[str, Any] | None, settings: Any = None) -> Any:
    """GateConfig from the job params (gate, gate_folds, gate_margin); missing keys take the settings'
    merge_gate / merge_gate_margin (default fast, 0.0). UnprocessableInput on a bad value."""
    from app.domain.merging.base import MergeParamsError
    from app.domain.promotion import split_gate

    raw = dict(params or {})
    raw.setdefault("gate", getattr(settings, "merge_gate", "fast"))
    raw.setdefault("gate_margin", getattr(settings, "merge_gate_margin", 0.0))
    try:
        return split_gate(raw)[0]
    except MergeParamsError as exc:
        raise UnprocessableInput(str(exc)) from None


def promotion_fields(run: Any) -> dict[str, Any]:
    """{"promotion_status", "promotion" (model row), "job_promotion" (job row)} from a pipeline MergeRun."""
    promotion = dict(run.promotion or {"status": "unchecked", "reason": "no promotion gate ran"})
    collapsed = (run.merge_stats or {}).get("collapsed")
    if collapsed is not None:
        promotion["collapsed"] = bool(collapsed)
        if collapsed:
            promotion["reason"] += (
                "; WARNING: the STEPH merge collapsed (every merge weight w is 0 on every train bag, the encoder "
                "is θ₀): use the default preset (softplus weights) instead of 'paper'"
            )
    if (run.merge_stats or {}).get("no_source_knowledge"):
        share = run.merge_stats["train"]["source_share"]["mean"]
        promotion["no_source_knowledge"] = True
        promotion["reason"] += (
            f"; WARNING: the STEPH merge used no source knowledge (λ ≈ 1 on every train bag: {share:.1%} of the "
            "encoder's move comes from the sources), so it is the target's own task vector rescaled per bag; "
            "compare it with `auto` or the ensemble, or check the sources' relevance"
        )
    notes = getattr(run, "notes", None) or {}
    degenerate = bool((notes.get("ensemble") or {}).get("degenerate"))  # its calibration slope is ~0: one curve
    if degenerate or ((getattr(run, "test_metrics", None) or {}).get("merged") or {}).get("constant_risk"):
        promotion["constant_risk"] = True
        if not degenerate:  # a flat ensemble says so in its own warning (below)
            promotion["reason"] += (
                "; WARNING: the model gives every patient the same risk, so it ranks nobody (look at its inputs: "
                "a checkpoint far from its base, a diverged training, penalties that drown the survival loss)"
            )
        if promotion.get("status") == "promoted":  # a C of 0.5 beat a worse reference: not a model to serve
            promotion["status"] = "not_promoted"
            promotion["reason"] += "; so it is not promoted, whatever the gate estimated"
    warning = (notes.get("ensemble") or notes.get("auto") or {}).get("warning")
    if warning:  # an ensemble (auto's winner or not) whose sources fail the relevance check, or that ranks nobody
        promotion["reason"] += f"; WARNING: {warning}"
    status = promotion.get("status", "unchecked")
    if status not in STATUSES:
        raise ValueError(f"unknown promotion status {status!r}")
    keys = ("status", "reason", "evidence", "estimate", "collapsed", "no_source_knowledge", "target_unchanged",
            "constant_risk")  # fmt: skip
    summary = {k: promotion[k] for k in keys if k in promotion}
    return {"promotion_status": status, "promotion": promotion, "job_promotion": summary}
