"""Running one merge job: claim → load inputs → run_merge → store artifact → model row + succeeded
(one transaction).

Safe to run twice and under concurrent deliveries of the same id:
- the claim is a compare-and-set UPDATE on (status, attempts): only one runner owns an attempt;
- a terminal job (succeeded/failed/cancelled) is left alone; a running job whose heartbeat is fresh belongs to
  another worker (BUSY: the Celery task retries later); a running job with a stale heartbeat was interrupted
  (its worker died) and is claimed again, at most `max_job_attempts` times in all, then marked failed;
- the final UPDATE only succeeds while this runner still owns the attempt, and commits the models row with it.
A heartbeat thread writes `heartbeat_at` and the latest progress about once per second and reads
`cancel_requested`, so training never waits on the database.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import asdict
from pathlib import PurePath
from typing import Any

from sqlalchemy import select, update

from app.services import job_inputs as inputs_mod
from app.services.job_common import (
    BUSY,
    DONE,
    MISSING,
    RAN,
    RELEASED,
    TERMINAL,
    aware,
    cfg,
    exhausted_reason,
    job_lease_s,
    new_id,
    orm,
    utcnow,
)
from app.services.job_events import final_progress, notify_finished  # issue 9

log = logging.getLogger(__name__)


EXHAUSTED = "exhausted"  # _claim failed the job itself because its attempts were used up


class _LostOwnership(RuntimeError):
    """Another runner took over this job (our heartbeat went stale); drop our result."""


NODE_NAME: str | None = None  # a Celery worker's node name (`--hostname gpu1@%h`), set when the worker starts


def set_node_name(name: str | None) -> None:
    global NODE_NAME
    NODE_NAME = name or None


def stopping(ctx: Any) -> threading.Event:
    """The context's "stopping" flag (in ctx.extras): set by a graceful shutdown (request_shutdown)."""
    extras = getattr(ctx, "extras", None)
    if extras is None:
        return threading.Event()  # a context without extras never stops its jobs early
    return extras.setdefault("stopping", threading.Event())


def request_shutdown(ctx: Any) -> None:
    """The service that owns `ctx` is stopping (SIGTERM, a redeploy): every job it runs stops at its next
    training step and goes back to `queued` without spending an attempt (release_for_shutdown), instead of the
    stop waiting for the job and the job counting the restart as a worker death."""
    stopping(ctx).set()


def release_for_shutdown(ctx: Any, hb: Heartbeat) -> bool:
    """Hand a job this process owns back to the queue: queued again, the attempt this claim took given back."""
    m = orm()
    with ctx.session_factory() as s, s.begin():
        res = s.execute(
            update(m.MergeJob)
            .where(*hb.owned(), m.MergeJob.cancel_requested.is_(False))
            .values(status="queued", attempts=m.MergeJob.attempts - 1, worker=None, heartbeat_at=None,
                    started_at=None, progress={"stage": "queued again: the service stopped while it ran"})
        )  # fmt: skip
        return res.rowcount == 1


def worker_name() -> str:
    """Who runs a job (MergeJob.worker): `<node>:<pid>:<thread>`, node = the Celery worker's name (e.g.
    gpu1@host, so two workers on one host are told apart by name) or, outside Celery, the host name."""
    return f"{NODE_NAME or socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _claim(ctx: Any, job_id: str, me: str) -> int | str:
    """Claim the job for attempt n (returns n) or say why not (DONE, BUSY, MISSING; EXHAUSTED when this call
    marked the job failed because its attempts were used up)."""
    m = orm()
    now = utcnow()
    max_attempts = int(cfg(ctx.settings, "max_job_attempts", 3))
    with ctx.session_factory() as s, s.begin():
        job = s.get(m.MergeJob, job_id)
        if job is None:
            return MISSING
        if job.status in TERMINAL:
            return DONE
        hb = aware(job.heartbeat_at or job.started_at)
        if job.status == "running" and hb is not None and (now - hb).total_seconds() < job_lease_s(ctx.settings):
            return BUSY
        where = [
            m.MergeJob.id == job_id,
            m.MergeJob.status == job.status,
            m.MergeJob.attempts == job.attempts,
        ]
        attempt = job.attempts + 1  # read before the UPDATE (the ORM syncs the loaded row)
        if job.attempts >= max_attempts:
            reason = exhausted_reason(job.attempts, max_attempts)
            res = s.execute(
                update(m.MergeJob)
                .where(*where)
                .values(status="failed", error=reason, finished_at=now, progress=final_progress(job.progress, "failed"))
            )
            return EXHAUSTED if res.rowcount == 1 else DONE
        res = s.execute(
            update(m.MergeJob)
            .where(*where)
            .values(
                status="running",
                attempts=attempt,
                worker=me,
                started_at=now,
                heartbeat_at=now,
                error=None,
                progress={"stage": "loading inputs"},
            )
        )
        return attempt if res.rowcount == 1 else BUSY


class Heartbeat(threading.Thread):
    """Writes progress + heartbeat_at every `interval` s while we own the attempt; reads cancel_requested."""

    def __init__(self, ctx: Any, job_id: str, me: str, attempt: int, interval: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.ctx, self.job_id, self.me, self.attempt, self.interval = ctx, job_id, me, attempt, interval
        self.cancel = threading.Event()
        self.lost = False
        self._stop_evt = threading.Event()
        self._progress: dict[str, Any] | None = None
        self._written: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def set_progress(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self._progress = progress

    def last_progress(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._progress or {})

    def should_cancel(self) -> bool:
        return self.cancel.is_set() or stopping(self.ctx).is_set()

    def run(self) -> None:
        from app.observability import RepeatedFailure

        failures = RepeatedFailure(log, f"heartbeat of job {self.job_id}")
        while not self._stop_evt.wait(self.interval):
            try:
                self.beat()
                failures.succeeded()
            except Exception as exc:  # a transient DB error must not kill the job; the next beat retries
                failures.failed(exc)

    def beat(self) -> None:
        m = orm()
        with self._lock:
            progress = self._progress
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None and progress != self._written:
            values["progress"] = progress
        with self.ctx.session_factory() as s, s.begin():
            res = s.execute(update(m.MergeJob).where(*self.owned()).values(**values))
            if res.rowcount != 1:
                self.lost = True
                self.cancel.set()
                return
            if s.execute(select(m.MergeJob.cancel_requested).where(m.MergeJob.id == self.job_id)).scalar():
                self.cancel.set()
        self._written = progress

    def owned(self) -> list[Any]:
        m = orm()
        return [
            m.MergeJob.id == self.job_id,
            m.MergeJob.status == "running",
            m.MergeJob.worker == self.me,
            m.MergeJob.attempts == self.attempt,
        ]

    def stop(self) -> None:
        self._stop_evt.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=10)


def _progress_dict(p: Any) -> dict[str, Any]:
    d = asdict(p) if hasattr(p, "__dataclass_fields__") else dict(vars(p))
    out = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
    out["stage"] = out.get("stage") or "training"
    return out


def _finish(ctx: Any, hb: Heartbeat, status: str, **values: Any) -> bool:
    m = orm()
    with ctx.session_factory() as s, s.begin():
        progress = final_progress(hb.last_progress(), status)  # issue 9: no running stage / ETA once finished
        res = s.execute(
            update(m.MergeJob)
            .where(*hb.owned())
            .values(status=status, finished_at=utcnow(), progress=progress, **values)
        )
        return res.rowcount == 1


def _commit_success(ctx: Any, hb: Heartbeat, job: dict[str, Any], result: dict[str, Any]) -> None:
    """Record the model and mark the job succeeded, unless a cancel arrived meanwhile (TrainingCancelled: the
    request was accepted, so it is honoured even after the last step) or another runner owns the attempt."""
    from app.domain.training import TrainingCancelled

    m = orm()
    model_id = new_id("model")
    with ctx.session_factory() as s, s.begin():
        res = s.execute(
            update(m.MergeJob)
            .where(*hb.owned(), m.MergeJob.cancel_requested.is_(False))
            .values(
                status="succeeded",
                finished_at=utcnow(),
                model_id=model_id,
                comparison=result["comparison"],
                comparison_skipped=(result.get("metrics") or {}).get("comparison_skipped"),  # issue 9
                progress=result["progress"],
                cancel_requested=False,
                promotion=result.get("job_promotion"),  # issue 12
            )
        )
        if res.rowcount != 1:
            owned = s.execute(select(m.MergeJob.cancel_requested).where(*hb.owned())).first()
            if owned is not None and owned[0]:
                raise TrainingCancelled(f"job {job['id']} was cancelled while it finished")
            raise _LostOwnership(job["id"])
        s.add(
            m.Model(
                id=model_id,
                job_id=job["id"],
                method=job["method"],
                base_id=job["base_id"],
                target_checkpoint_id=job["target_checkpoint_id"],
                params=result["params"],
                sources=result["sources"],
                metrics=result["metrics"],
                provenance=result["provenance"],
                artifact_sha256=result["sha256"],
                artifact_key=result["artifact_key"],
                created_at=utcnow(),
                promotion_status=result.get("promotion_status", "unchecked"),  # issue 12
                promotion=result.get("promotion"),
            )
        )


_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\":/]+/)*[^\s'\":/]*")


def scrub(text: str) -> str:
    """Replace absolute server paths in a message by their last component."""
    return _ABS_PATH.sub(lambda m: PurePath(m.group()).name or "<path>", text)


def _failure_message(exc: BaseException) -> str:
    """What the user sees on a failed job: the error type and message, without server paths."""
    from app.io.errors import InputFileError

    # ArithmeticError: training diverged (FloatingPointError), a matter of the settings or data, not a bug
    if isinstance(exc, InputFileError | ValueError | KeyError | OSError | ArithmeticError):
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return scrub(f"{type(exc).__name__}: {msg}")
    return scrub(f"internal error ({type(exc).__name__}): {exc}. See the worker log; submit the job again once fixed")


def run_merge_job(*, ctx: Any, job_id: str) -> str:
    """Run merge job `job_id` to a terminal state. Returns RAN, DONE (nothing to do), BUSY or MISSING."""
    from app.domain.training import TrainingCancelled

    me = worker_name()
    claim = _claim(ctx, job_id, me)
    if claim == EXHAUSTED:  # this claim ended the job (attempts used up): it is terminal now
        notify_finished(ctx, job_id)
        return DONE
    if isinstance(claim, str):
        return claim
    lease = job_lease_s(ctx.settings)
    hb = Heartbeat(ctx, job_id, me, claim, interval=max(0.05, min(1.0, lease / 4)))
    hb.start()
    started = time.monotonic()
    status, method = "failed", ""
    result: dict[str, Any] | None = None
    try:
        job = inputs_mod.load_job(ctx, job_id)
        method = job["method"]
        result = inputs_mod.execute(ctx, job, hb, on_progress=lambda p: hb.set_progress(_progress_dict(p)))
        hb.beat()
        _commit_success(ctx, hb, job, result)
        status = "succeeded"
    except TrainingCancelled:
        if hb.lost:
            status = "lost"
        elif stopping(ctx).is_set() and not hb.cancel.is_set() and release_for_shutdown(ctx, hb):
            status = "released"  # back to queued: the next start (or another worker) runs it again
            log.info("job %s handed back to the queue: this process is stopping", job_id)
        else:
            status = "cancelled"
            _finish(ctx, hb, "cancelled", error="cancelled on request")
    except _LostOwnership:
        status = "lost"
        log.warning("job %s: another runner took over attempt %s; result discarded", job_id, claim)
    except Exception as exc:  # recorded on the job: the user sees why it failed
        log.exception("merge job %s failed", job_id)
        _finish(ctx, hb, "failed", error=_failure_message(exc))
    finally:
        hb.stop()
        _observe(method, status, time.monotonic() - started)
    if result is not None and status != "succeeded":  # stored, then cancelled / lost / failed while committing
        _discard_artifact(ctx, result.get("artifact_key"))
    if status in TERMINAL:
        notify_finished(ctx, job_id)  # issue 9: the job's completion webhook, if it has one
    return RELEASED if status == "released" else RAN


def _discard_artifact(ctx: Any, key: str | None) -> None:
    """The artifact of a job that did not commit its model: removed unless a row references it (another runner's
    model of the same bytes); gc would reclaim it only after its grace period."""
    if not key:
        return
    from app.services.store_refs import delete_unreferenced

    try:
        delete_unreferenced(ctx, key)
    except Exception:  # the job's outcome stands; gc removes the object later
        log.warning("could not remove the artifact %s of an uncommitted job", key[:12], exc_info=True)


def _observe(method: str, status: str, seconds: float) -> None:
    try:
        from app import observability
    except ImportError:
        return
    fn = getattr(observability, "observe_job", None)
    if callable(fn):
        fn(method=method, status=status, seconds=seconds)
        return
    hist = getattr(observability, "JOB_DURATION", None) or getattr(observability, "JOB_DURATION_SECONDS", None)
    if hist is not None:
        try:
            hist.labels(method=method, status=status).observe(seconds)
        except ValueError:
            hist.observe(seconds)
