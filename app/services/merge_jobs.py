"""Merge-job use cases: submit (validate everything up front, commit, then enqueue), read, list, cancel,
recover.

The job row is the ledger: `submit_merge_job` commits the row (status queued) before enqueueing its id, and a
retried submit with the same Idempotency-Key returns the same job. The runner itself is in `job_runner`
(re-exported here as `run_merge_job`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.db.models import Checkpoint, Cohort, MergeJob, ModelBase
from app.db.repositories import get_checkpoint, get_cohort, get_merge_job, lock_rows
from app.services.errors import Conflict, NotFound, ServiceUnavailable, UnprocessableInput, not_found
from app.services.job_common import (
    BUSY,
    DONE,
    MISSING,
    RAN,
    RELEASED,
    STATUSES,
    TERMINAL,
    job_lease_s,
    new_id,
    utcnow,
)
from app.services.job_events import final_progress, notify_finished  # issue 9
from app.services.job_runner import run_merge_job
from app.services.webhooks import check_webhook_url  # issue 9

__all__ = [
    "BUSY",
    "DONE",
    "MISSING",
    "RAN",
    "RELEASED",
    "NotFound",
    "cancel_merge_job",
    "get_job",
    "job_lease_s",
    "job_to_dict",
    "list_jobs",
    "recover_interrupted_jobs",
    "run_merge_job",
    "submit_merge_job",
]

_FIELDS = ("method", "base_id", "target_checkpoint_id", "cohort_id", "params")


def job_to_dict(job: MergeJob) -> dict[str, Any]:
    """The API view of a job row."""
    keys = (
        "id",
        "status",
        "method",
        "base_id",
        "target_checkpoint_id",
        "source_checkpoint_ids",
        "cohort_id",
        "params",
        "progress",
        "comparison",
        "error",
        "model_id",
        "attempts",
        "cancel_requested",
        "worker",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "comparison_skipped",  # issue 9
        "webhook_url",
        "webhook",
        "promotion",  # issue 12
    )
    out = {k: getattr(job, k) for k in keys}
    out["progress"] = final_progress(job.progress, job.status)  # issue 9: final once the job has ended
    return out


def validate_method(method: str, params: dict[str, Any]) -> Callable[[int], None]:
    """Unknown method or bad params → UnprocessableInput naming the problem. Returns the check of the parsed
    params against the number of sources, known once the job's sources are resolved (e.g. one weight per
    source): call it with that number."""
    from app.domain.merging.base import MergeParamsError
    from app.domain.merging.registry import UnknownMethodError, get_method
    from app.domain.pipeline import split_params
    from app.domain.promotion import split_gate

    try:
        impl = get_method(method)
        _, method_params = split_params(dict(params))
        parsed = impl.parse_params(method_params)
        split_gate(dict(params))  # issue 12: gate, gate_folds, gate_margin
    except (UnknownMethodError, MergeParamsError, ValueError, TypeError) as exc:
        message = str(exc)
        if "unknown parameter" in message:  # the method's list: name the keys every method takes as well
            from app.domain.pipeline import PRESET_KEY, TRAIN_KEYS
            from app.domain.promotion import GATE_KEYS

            message += f"; every method also takes: {', '.join([PRESET_KEY, *TRAIN_KEYS, *GATE_KEYS])}"
        raise UnprocessableInput(message) from None

    def check_sources(n_sources: int) -> None:
        try:
            impl.check_sources(parsed, n_sources)
        except ValueError as exc:
            raise UnprocessableInput(str(exc)) from None

    return check_sources


def _resolve_sources(s: Any, base_id: str, target_id: str, requested: list[str] | None) -> list[str]:
    if requested is None:
        stmt = select(Checkpoint.id).where(Checkpoint.base_id == base_id, Checkpoint.id != target_id)
        ids = list(s.scalars(stmt.order_by(Checkpoint.created_at, Checkpoint.id)))
    else:
        ids = list(requested)
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise UnprocessableInput(f"source_checkpoint_ids lists {dupes[0]!r} more than once")
        if target_id in ids:
            raise UnprocessableInput(
                f"the target checkpoint {target_id!r} is also listed as a source; remove it from source_checkpoint_ids"
            )
        for cid in ids:
            row = get_checkpoint(s, checkpoint_id=cid)
            if row is None:
                raise not_found("source checkpoint", cid, hint="list them with GET /checkpoints")
            if row.base_id != base_id:
                raise UnprocessableInput(f"source checkpoint {cid!r} belongs to base {row.base_id!r}, not {base_id!r}")
    if not ids:
        raise UnprocessableInput(
            f"no source checkpoints: base {base_id!r} has no checkpoint besides the target; "
            "register the other cancers' checkpoints with POST /checkpoints first"
        )
    return ids


def _validate_refs(s: Any, req: dict[str, Any]) -> list[str]:
    base_id, target_id = req["base_id"], req["target_checkpoint_id"]
    if s.get(ModelBase, base_id) is None:
        raise not_found("base", base_id, hint="list them with GET /bases")
    target = get_checkpoint(s, checkpoint_id=target_id)
    if target is None:
        raise not_found("target checkpoint", target_id, hint="list them with GET /checkpoints")
    if target.base_id != base_id:
        raise UnprocessableInput(f"target checkpoint {target_id!r} belongs to base {target.base_id!r}, not {base_id!r}")
    cohort = get_cohort(s, cohort_id=req["cohort_id"])
    if cohort is None:
        raise not_found("cohort", req["cohort_id"], hint="list them with GET /cohorts")
    if cohort.base_id != base_id:
        raise UnprocessableInput(f"cohort {cohort.id!r} belongs to base {cohort.base_id!r}, not {base_id!r}")
    return _resolve_sources(s, base_id, target_id, req.get("source_checkpoint_ids"))


def _lock_inputs(s: Any, req: dict[str, Any], sources: list[str]) -> None:
    """Lock the job's checkpoints and cohort until its row commits, then check they still exist: a DELETE of one
    of them racing this submission either waits and then sees the job (409), or wins and this answers 404 —
    never both succeed (the job would fail later on a deleted input)."""
    wanted = [req["target_checkpoint_id"], *sources]
    present = lock_rows(s, Checkpoint, wanted)
    gone = [cid for cid in wanted if cid not in present]
    if gone:
        raise not_found("checkpoint", gone[0], hint="it was deleted while the job was submitted")
    if not lock_rows(s, Cohort, [req["cohort_id"]]):
        raise not_found("cohort", req["cohort_id"], hint="it was deleted while the job was submitted")


def _check_gate_can_run(s: Any, req: dict[str, Any], settings: Any) -> None:
    """The promotion gate's k folds need MIN_PER_FOLD train patients each: refuse at submission a job whose gate
    could not run (it would end `unchecked` after the whole training, and an unchecked model can be aliased)."""
    from app.domain.promotion import MIN_PER_FOLD
    from app.services.promotion import gate_config

    gate = gate_config(req["params"], settings)
    cohort = get_cohort(s, cohort_id=req["cohort_id"])
    splits = (cohort.summary or {}).get("splits") if cohort is not None else None
    if gate.mode == "off" or not isinstance(splits, dict):  # no split sizes recorded: the gate will say so
        return
    n_train, need = int(splits.get("train", 0)), gate.n_folds * MIN_PER_FOLD
    if n_train < need:
        raise UnprocessableInput(
            f"the promotion gate's {gate.n_folds}-fold validation needs at least {need} train patients, but cohort "
            f'{req["cohort_id"]!r} has {n_train} in its train split: add patients, lower "gate_folds", or set '
            '"gate": "off" in params (the model is then marked unchecked)'
        )


def _same_request(job: MergeJob, req: dict[str, Any]) -> bool:
    if any(getattr(job, k) != req.get(k) for k in _FIELDS):
        return False
    if (job.webhook_url or None) != ((req.get("webhook_url") or "").strip() or None):  # nor drop a new webhook
        return False
    wanted = req.get("source_checkpoint_ids")
    return wanted is None or list(wanted) == list(job.source_checkpoint_ids)


def _replay(s: Any, key: str, req: dict[str, Any]) -> MergeJob | None:
    job = s.scalar(select(MergeJob).where(MergeJob.idempotency_key == key))
    if job is not None and not _same_request(job, req):
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for job {job.id} with a different request; "
            "use a new key for a different job"
        )
    return job


def submit_merge_job(*, ctx: Any, request: dict[str, Any], idempotency_key: str | None = None) -> tuple[dict, bool]:
    """Validate, commit a queued job row, then enqueue its id. Returns (job dict, created).

    request: {method, base_id, target_checkpoint_id, source_checkpoint_ids (None → every other checkpoint
    of the base), cohort_id, params}. Raises NotFound (unknown ids), UnprocessableInput (bad
    method/params/ids),
    Conflict (Idempotency-Key reused with another body), ServiceUnavailable (queue unreachable:
    the job is failed).
    """
    req = {**request, "params": dict(request.get("params") or {})}
    with ctx.session() as s:
        if idempotency_key and (job := _replay(s, idempotency_key, req)) is not None:
            return job_to_dict(job), False
    check_sources = validate_method(req["method"], req["params"])
    webhook_url = check_webhook_url(req.get("webhook_url"), ctx.settings)  # issue 9 (a DNS lookup: outside the session)
    try:
        with ctx.session() as s:
            sources = _validate_refs(s, req)
            _lock_inputs(s, req, sources)
            check_sources(len(sources))
            _check_gate_can_run(s, req, ctx.settings)
            job = MergeJob(
                id=new_id("job"),
                **{k: req[k] for k in _FIELDS},
                source_checkpoint_ids=sources,
                status="queued",
                attempts=0,
                cancel_requested=False,
                idempotency_key=idempotency_key,
                created_at=utcnow(),
                webhook_url=webhook_url,
            )
            s.add(job)
    except IntegrityError:  # a concurrent submit with the same key won the race
        with ctx.session() as s:
            job = _replay(s, idempotency_key or "", req)
            if job is None:
                raise
            return job_to_dict(job), False
    _enqueue(ctx, job)
    return job_to_dict(job), True


def _enqueue(ctx: Any, job: MergeJob) -> None:
    try:
        if ctx.queue is None:
            raise ServiceUnavailable("no job queue is running in this process")
        ctx.queue.enqueue(job.id)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ServiceUnavailable) else f"{type(exc).__name__}: {exc}"
        with ctx.session() as s:
            s.execute(
                update(MergeJob)
                .where(MergeJob.id == job.id, MergeJob.status == "queued")
                .values(status="failed", finished_at=utcnow(), error=f"could not be queued: {reason}")
            )
        raise ServiceUnavailable(
            f"the job queue is unreachable ({reason}); job {job.id} was marked failed — "
            "check Redis / the worker and submit again"
        ) from None


def get_job(*, ctx: Any, job_id: str) -> dict[str, Any]:
    with ctx.session() as s:
        job = get_merge_job(s, job_id=job_id)
        if job is None:
            raise not_found("merge job", job_id, hint="list them with GET /merge-jobs")
        return job_to_dict(job)


def list_jobs(
    *,
    ctx: Any,
    status: str | None = None,
    method: str | None = None,
    limit: int = 50,
    offset: int = 0,
    base_id: str | None = None,
    target_checkpoint_id: str | None = None,
    cohort_id: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first; filters by status, method, base, target checkpoint and cohort (all that are given)."""
    from app.domain.merging.registry import METHODS

    if status is not None and status not in STATUSES:
        raise UnprocessableInput(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    if method is not None and method not in METHODS:  # a typo would list nothing, silently
        raise UnprocessableInput(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    stmt = select(MergeJob)
    for column, value in (
        (MergeJob.status, status),
        (MergeJob.method, method),
        (MergeJob.base_id, base_id),
        (MergeJob.target_checkpoint_id, target_checkpoint_id),
        (MergeJob.cohort_id, cohort_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    with ctx.session() as s:
        total = int(s.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        rows = s.scalars(stmt.order_by(MergeJob.created_at.desc(), MergeJob.id).limit(limit).offset(offset))
        return [job_to_dict(j) for j in rows], total


def cancel_merge_job(*, ctx: Any, job_id: str) -> dict[str, Any]:
    """queued → cancelled now; running → cancel_requested (stops at its next step); finished → 409."""
    with ctx.session() as s:
        job = get_merge_job(s, job_id=job_id)
        if job is None:
            raise not_found("merge job", job_id, hint="list them with GET /merge-jobs")
        res = s.execute(
            update(MergeJob)
            .where(MergeJob.id == job_id, MergeJob.status == "queued")
            .values(status="cancelled", finished_at=utcnow(), error="cancelled on request")
        )
        cancelled_now = res.rowcount == 1  # issue 9: a queued job ends here, so its webhook is sent here
        if res.rowcount != 1:
            res = s.execute(
                update(MergeJob)
                .where(MergeJob.id == job_id, MergeJob.status == "running")
                .values(cancel_requested=True)
            )
        if res.rowcount != 1:
            s.refresh(job)
            raise Conflict(
                f"merge job {job_id!r} has already ended ({job.status}); only queued or running jobs can be cancelled"
            )
    if cancelled_now:
        notify_finished(ctx, job_id)
    return get_job(ctx=ctx, job_id=job_id)


def recover_interrupted_jobs(ctx: Any) -> list[str]:
    """Embedded start-up: jobs left queued or running (interrupted) go back to queued and are re-enqueued.

    Attempts are kept, so a job that keeps crashing the process ends failed after `max_job_attempts`.
    """
    with ctx.session() as s:
        s.execute(
            update(MergeJob).where(MergeJob.status == "running").values(status="queued", worker=None, heartbeat_at=None)
        )
        ids = list(
            s.scalars(select(MergeJob.id).where(MergeJob.status == "queued").order_by(MergeJob.created_at, MergeJob.id))
        )
    for job_id in ids:
        ctx.queue.enqueue(job_id)
    return ids


assert set(TERMINAL) < set(STATUSES)
