"""Loading a merge job's inputs from the store and running the pipeline (called by job_runner).

load_job(ctx, job_id) -> dict     a plain snapshot of the job, base, checkpoints and cohort rows
execute(ctx, job, hb, on_progress) -> dict   run_merge + artifact in the store + provenance/metrics
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from app.services.job_common import cfg, orm


def resolve_device(settings: Any) -> str:
    """settings.device: 'auto' → 'cuda' when available, else 'cpu'; anything else is used as given."""
    device = str(cfg(settings, "device", "auto"))
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _ckpt(row: Any) -> dict[str, Any]:
    return {"checkpoint_id": row.id, "cancer": row.cancer, "sha256": row.sha256, "key": row.artifact_key}


def load_job(ctx: Any, job_id: str) -> dict[str, Any]:
    """Snapshot the job and everything it references (a deleted one fails here)."""
    m = orm()
    with ctx.session_factory() as s:
        job = s.get(m.MergeJob, job_id)
        base = s.get(m.Base, job.base_id)
        target = s.get(m.Checkpoint, job.target_checkpoint_id)
        cohort = s.get(m.Cohort, job.cohort_id)
        sources = [s.get(m.Checkpoint, cid) for cid in job.source_checkpoint_ids]
        missing = [
            name for name, row in [("base", base), ("target checkpoint", target), ("cohort", cohort)] if row is None
        ]
        missing += [
            f"source checkpoint {cid}" for cid, r in zip(job.source_checkpoint_ids, sources, strict=True) if r is None
        ]
        if missing:
            raise ValueError(f"inputs deleted after submission: {', '.join(missing)}; submit the job again")
        return {
            "id": job.id,
            "method": job.method,
            "params": dict(job.params or {}),
            "base": {
                "id": base.id,
                "sha256": base.sha256,
                "key": base.artifact_key,
                "dims": dict(base.dims),
                "bin_edges": list(base.bin_edges),
            },
            "target": _ckpt(target),
            "sources": [_ckpt(r) for r in sources],
            "cohort": {
                "id": cohort.id,
                "name": cohort.name,
                "source": cohort.source,
                "location": cohort.location,
            },
            "base_id": job.base_id,
            "target_checkpoint_id": job.target_checkpoint_id,
        }


def cohort_path(ctx: Any, cohort: dict[str, Any]) -> Path:
    if cohort["source"] == "path":
        return Path(cohort["location"])
    loc = Path(cohort["location"])
    if loc.is_absolute():
        return loc
    if hasattr(ctx.store, "cohort_dir"):
        cand = Path(ctx.store.cohort_dir(cohort["id"]))
        if cand.is_dir():
            return cand
    return Path(ctx.store.root) / loc


def source_names(sources: list[dict[str, Any]]) -> list[str]:
    """One name per source for the model and its statistics: the cancer, made unique with the checkpoint id
    where several sources share a cancer (per-source numbers are keyed by these names: two "BRCA" would
    overwrite each other)."""
    cancers = [str(r["cancer"]) for r in sources]
    pairs = zip(cancers, sources, strict=True)
    return [c if cancers.count(c) == 1 else f"{c} ({r['checkpoint_id']})" for c, r in pairs]


def _read_state(ctx: Any, ref: dict[str, Any]) -> dict:
    """A stored state dict (sha256 verified on load)."""
    from app.services.bases import load_state

    return load_state(ctx, ref["key"])


def build_inputs(ctx: Any, job: dict[str, Any]) -> tuple[Any, Any]:
    """(MergeInputs, reference StaticModel) from the stored base, target and source checkpoints."""
    from app.domain.merging.base import MergeInputs, StaticModel
    from app.domain.mil import FamilyDims

    dims = FamilyDims.from_dict(job["base"]["dims"])
    edges = job["base"]["bin_edges"]
    target = _read_state(ctx, job["target"])
    inputs = MergeInputs(
        base=_read_state(ctx, job["base"]),
        target=target,
        sources=[_read_state(ctx, r) for r in job["sources"]],
        source_names=source_names(job["sources"]),
        target_name=job["target"]["cancer"],
        dims=dims,
        bin_edges=edges,
    )
    reference = StaticModel(target, dims, edges, method="cancer_specific")
    reference.eval()
    return inputs, reference


def execute(ctx: Any, job: dict[str, Any], hb: Any, on_progress: Any) -> dict[str, Any]:
    """Load inputs and the cohort, run the merge, store the artifact; returns what the model row needs."""
    from app.domain.pipeline import run_merge, split_params
    from app.services.cohorts import open_registered_cohort
    from app.services.promotion import gate_config, promotion_fields

    train_config, method_params = split_params(job["params"])
    device = resolve_device(ctx.settings)
    train_config.device = device
    train_config = train_config.resolved()  # compute_dtype "auto" → what it means on this device (provenance)
    inputs, reference = build_inputs(ctx, job)
    c = job["cohort"]  # issue 8: re-check that the cohort's files still resolve inside their root
    cohort = open_registered_cohort(ctx, source=c["source"], location=c["location"], directory=cohort_path(ctx, c),
                                    name=c["name"])  # fmt: skip
    in_dim = inputs.dims.in_dim
    train, test = cohort.samples("train", expected_dim=in_dim), cohort.samples("test", expected_dim=in_dim)
    run = run_merge(
        method=job["method"],
        inputs=inputs,
        params=method_params,
        train_config=train_config,
        train_samples=train,
        test_samples=test,
        reference=reference,
        progress=on_progress,
        should_cancel=hb.should_cancel,
        gate=gate_config(job["params"], ctx.settings),  # issue 12: the promotion gate (train split only)
    )
    promotion = promotion_fields(run)  # issue 12
    comparison = run.comparison.to_dict() if run.comparison is not None else None
    train_info = None
    if run.train_result is not None:
        tr = run.train_result
        train_info = {"steps": tr.steps, "final_loss": tr.final_loss, "history": list(tr.history)}
        train_info["step_losses"] = [round(x, 6) for x in getattr(tr, "step_losses", [])]  # issue 10: curves
    params = {"method": dict(run.params), "train": _train_dict(train_config)}
    provenance = _provenance(job, params, train_config, device)
    sha = _store_artifact(ctx, job, run.model, provenance)
    return {
        "sha256": sha,
        "artifact_key": sha,
        "params": params,
        "provenance": provenance,
        "comparison": comparison,
        "metrics": {
            "comparison": comparison,
            "comparison_skipped": run.comparison_skipped,
            "train": train_info,
            "test_metrics": run.test_metrics,
            **({"notes": run.notes} if run.notes else {}),
            "promotion": promotion["promotion"],  # issue 12: gate status, reason, estimate
            **({"merge_stats": run.merge_stats} if run.merge_stats else {}),  # issue 12: Σw, λ, top-k, collapse
        },
        **promotion,
        "sources": [{k: r[k] for k in ("checkpoint_id", "cancer", "sha256")} for r in job["sources"]],
        "progress": _final_progress(hb, train_info),
    }


def _train_dict(tc: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(tc)
    d.pop("device", None)
    return d


def _final_progress(hb: Any, train_info: dict | None) -> dict[str, Any]:
    last = hb.last_progress()
    last.update({"stage": "done", "eta_s": 0.0})
    if train_info is not None:
        last["loss"] = train_info["final_loss"]
    return last


def _provenance(job: dict[str, Any], params: dict, tc: Any, device: str) -> dict[str, Any]:
    import torch

    import app

    pub = {k: job["target"][k] for k in ("checkpoint_id", "cancer", "sha256")}
    return {
        "job_id": job["id"],
        "method": job["method"],
        "params": params,
        "seed": tc.seed,
        "code_version": getattr(app, "__version__", "unknown"),
        "torch": torch.__version__,
        "device": device,
        "inputs": {
            "base": {"id": job["base"]["id"], "sha256": job["base"]["sha256"]},
            "target": pub,
            "sources": [{k: r[k] for k in ("checkpoint_id", "cancer", "sha256")} for r in job["sources"]],
            "cohort": {"id": job["cohort"]["id"], "name": job["cohort"]["name"]},
        },
    }


def _store_artifact(ctx: Any, job: dict[str, Any], model: Any, provenance: dict) -> str:
    """save_model to a temp file inside the store, then put_file (content-addressed, rename)."""
    from app.io.artifacts import save_model

    tmp_dir = Path(ctx.store.tmp_dir())
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{job['id']}-{uuid.uuid4().hex[:8]}.safetensors"
    model = model.to("cpu")
    try:
        sha = save_model(tmp, model, provenance)
        stored = ctx.store.put_file(tmp, move=True)
    finally:
        tmp.unlink(missing_ok=True)
    if stored != sha:
        raise RuntimeError(f"artifact sha256 mismatch after storing ({stored[:12]} != {sha[:12]})")
    return sha
