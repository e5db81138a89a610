"""The job reaper: no merge job stays stuck in `running` or `queued`.

One pass (`reap_once`), every `reaper_interval_s` seconds in every API and worker process:

1. **Stale running jobs** (heartbeat older than `job_lease_s`: the worker died, e.g. kill -9 or OOM) are
   taken back with a compare-and-set UPDATE and, depending on the row:
   cancel requested → `cancelled`; `attempts >= max_job_attempts` → `failed` ("worker died N times");
   otherwise → `queued` again and re-enqueued (the next claim counts the attempt).
2. **Lost queued jobs** (queued for more than `job_lease_s` since created or last re-sent, and not held by
   the queue: e.g. Redis restarted without persistence) are re-sent.

Why several reapers (and Celery's own redelivery) never run a job twice: every state change here is a
compare-and-set on the job row that re-checks the condition it acted on, so one reaper wins; a re-sent id
whose old message re-appears is harmless because the runner's claim is itself a compare-and-set on
(status, attempts) and a finished job is never claimed again. For a queued job, `heartbeat_at` records when a
reaper last re-sent it (the condition of step 2 uses it, so concurrent reapers send it once per lease).

Bound (see README, "Job guarantees"): a job whose worker died is back in the queue (or terminal) within
`job_lease_s + reaper_interval_s` seconds (40 s by default); a lost message is re-sent within the same time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from app.services.job_common import cfg, exhausted_reason, job_lease_s, orm, reaper_interval_s, utcnow
from app.services.queue import known_job_ids

log = logging.getLogger(__name__)

BATCH = 500  # jobs looked at per step and pass; the next pass takes the rest


@dataclass
class ReapReport:
    """What one pass did (job ids per outcome)."""

    requeued: list[str] = field(default_factory=list)  # stale running → queued and re-enqueued
    failed: list[str] = field(default_factory=list)  # stale running, attempts exhausted → failed
    cancelled: list[str] = field(default_factory=list)  # stale running with a cancel request → cancelled
    resent: list[str] = field(default_factory=list)  # queued but unknown to the queue → enqueued again

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled or self.resent)


def reap_once(*, ctx: Any, now: datetime | None = None) -> ReapReport:
    """One reaper pass over the job table (see the module docstring). Safe to run concurrently anywhere."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=job_lease_s(ctx.settings))
    report = ReapReport()
    _reclaim_stale(ctx, cutoff, now, report)
    _resend_lost(ctx, cutoff, now, report)
    if report:
        log.warning(
            "job reaper: re-enqueued %s, failed %s, cancelled %s (stale heartbeat); re-sent %s (not in the queue)",
            report.requeued,
            report.failed,
            report.cancelled,
            report.resent,
        )
    return report


def _stale(m: Any, cutoff: datetime) -> Any:
    """SQL condition: a running job with no sign of life since `cutoff`."""
    last = func.coalesce(m.MergeJob.heartbeat_at, m.MergeJob.started_at)
    return and_(m.MergeJob.status == "running", or_(last.is_(None), last < cutoff))


def _lost_candidate(m: Any, cutoff: datetime) -> Any:
    """SQL condition: a queued job neither created nor re-sent since `cutoff`."""
    return and_(m.MergeJob.status == "queued", func.coalesce(m.MergeJob.heartbeat_at, m.MergeJob.created_at) < cutoff)


def _reclaim_stale(ctx: Any, cutoff: datetime, now: datetime, report: ReapReport) -> None:
    m = orm()
    max_attempts = int(cfg(ctx.settings, "max_job_attempts", 3))
    with ctx.session_factory() as s:
        rows = s.execute(
            select(m.MergeJob.id, m.MergeJob.attempts, m.MergeJob.cancel_requested)
            .where(_stale(m, cutoff))
            .order_by(m.MergeJob.created_at)
            .limit(BATCH)
        ).all()
    for job_id, attempts, cancel_requested in rows:
        if cancel_requested:
            values: dict[str, Any] = {
                "status": "cancelled",
                "finished_at": now,
                "error": "cancelled on request (its worker stopped before the job could stop)",
            }
            outcome = report.cancelled
        elif attempts >= max_attempts:
            values = {"status": "failed", "finished_at": now, "error": exhausted_reason(attempts, max_attempts)}
            outcome = report.failed
        else:  # heartbeat_at = now: "re-sent now" (step 2 leaves it alone for one lease)
            values = {
                "status": "queued",
                "worker": None,
                "heartbeat_at": now,
                "progress": {"stage": "requeued (worker lost)"},
            }
            outcome = report.requeued
        with ctx.session_factory() as s, s.begin():
            where = [m.MergeJob.id == job_id, m.MergeJob.attempts == attempts, _stale(m, cutoff)]
            if s.execute(update(m.MergeJob).where(*where).values(**values)).rowcount != 1:
                continue  # its worker beat again, or another reaper or runner got there first
        outcome.append(job_id)
        if outcome is report.requeued:
            _send(ctx, job_id)
        else:
            _ended(ctx, job_id)


def _resend_lost(ctx: Any, cutoff: datetime, now: datetime, report: ReapReport) -> None:
    m = orm()
    with ctx.session_factory() as s:
        ids = list(
            s.scalars(
                select(m.MergeJob.id).where(_lost_candidate(m, cutoff)).order_by(m.MergeJob.created_at).limit(BATCH)
            )
        )
    if not ids:
        return
    held = known_job_ids(ctx.queue)  # read after the table: a job queued later cannot be a candidate
    if held is None:
        log.debug("job reaper: the queue cannot list its jobs now; %d queued job(s) not checked", len(ids))
        return
    for job_id in ids:
        if job_id in held:
            continue
        with ctx.session_factory() as s, s.begin():
            where = [m.MergeJob.id == job_id, _lost_candidate(m, cutoff)]
            if s.execute(update(m.MergeJob).where(*where).values(heartbeat_at=now)).rowcount != 1:
                continue  # taken by a worker meanwhile, or re-sent by another reaper
        report.resent.append(job_id)
        _send(ctx, job_id)


def _ended(ctx: Any, job_id: str) -> None:
    """A job the reaper ended (failed / cancelled): its completion webhook, like any finished job (issue 9)."""
    try:
        from app.services.job_events import notify_finished
    except ImportError:
        return
    notify_finished(ctx, job_id)  # never raises


def _send(ctx: Any, job_id: str) -> None:
    """Enqueue; on failure the job stays queued and a later pass (one lease on) sends it again."""
    try:
        if ctx.queue is None:
            raise RuntimeError("no job queue in this process")
        ctx.queue.enqueue(job_id)
    except Exception as exc:
        log.warning("job reaper: could not enqueue job %s (%s); will retry", job_id, exc)


class Reaper(threading.Thread):
    """Daemon thread running `reap_once` every `interval` seconds until `stop()`; errors are logged, not fatal."""

    def __init__(self, get_ctx: Callable[[], Any], interval: float) -> None:
        super().__init__(name="steph-job-reaper", daemon=True)
        if interval <= 0:
            raise ValueError(f"the reaper interval must be > 0 s, got {interval}")
        self.get_ctx, self.interval = get_ctx, interval
        self._stop_evt = threading.Event()
        self.passes = 0

    def run(self) -> None:
        from app.observability import RepeatedFailure

        failures = RepeatedFailure(log, "job reaper pass")
        while not self._stop_evt.wait(self.interval):
            try:
                reap_once(ctx=self.get_ctx())
                failures.succeeded()
            except Exception as exc:  # a database or broker hiccup: the next pass retries
                failures.failed(exc)
            self.passes += 1

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_evt.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout)


def start_reaper(ctx: Any) -> Reaper | None:
    """Start the reaper thread for `ctx` (kept in `ctx.extras["reaper"]`); None when `reaper_interval_s` is 0."""
    interval = reaper_interval_s(ctx.settings)
    if interval <= 0:
        return None
    stop_reaper(ctx)
    reaper = Reaper(lambda: ctx, interval)
    ctx.extras["reaper"] = reaper
    reaper.start()
    return reaper


def stop_reaper(ctx: Any) -> None:
    """Stop `ctx`'s reaper thread, if any (call before closing the context)."""
    reaper = ctx.extras.pop("reaper", None)
    if reaper is not None:
        reaper.stop()
