"""The job reaper (app/services/reaper.py) on a real SQLite ledger: stale running jobs are taken back once
(even with concurrent reapers), lost queued jobs are re-sent once per lease, and a re-appearing old message
never runs a job twice."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.db import repositories as repo
from app.db.models import MergeJob
from app.services import merge_jobs as mj
from app.services.reaper import reap_once, start_reaper, stop_reaper
from tests.fixtures import TinyWorld, make_tiny_world
from tests.workers.world import RecordingQueue, job_request, make_ctx, register_family
from workers.embedded import EmbeddedQueue

LEASE = 2.0


class BrokerQueue(RecordingQueue):
    """A queue that also answers `known_job_ids` (None: 'cannot tell', like an unreachable Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] | None = set()

    def known_job_ids(self) -> set[str] | None:
        return None if self.held is None else set(self.held)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    return make_tiny_world(tmp_path_factory.mktemp("reaper_world"))


@pytest.fixture
def ctx(tmp_path, world):
    c = make_ctx(
        tmp_path,
        queue=BrokerQueue(),
        job_lease_s=LEASE,
        max_job_attempts=3,
        reaper_interval_s=0.05,
        data_root=world.root,  # the cohort is registered by its server-side path
    )
    yield c
    stop_reaper(c)
    c.close()


@pytest.fixture
def job_id(ctx, world) -> str:
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(register_family(ctx, world)))
    ctx.queue.ids.clear()
    return job["id"]


def set_job(ctx, job_id: str, **values) -> None:
    with ctx.session() as s:
        s.execute(update(MergeJob).where(MergeJob.id == job_id).values(**values))


def ago(seconds: float):
    return mj.utcnow() - timedelta(seconds=seconds)


def models(ctx) -> int:
    with ctx.session() as s:
        return repo.count_rows(s)["models"]


def test_stale_running_job_is_requeued_once_by_concurrent_reapers(ctx, job_id) -> None:
    set_job(ctx, job_id, status="running", attempts=1, worker="dead:1", started_at=ago(9), heartbeat_at=ago(9))
    barrier = threading.Barrier(4)
    reports = []

    def reap() -> None:
        barrier.wait()
        reports.append(reap_once(ctx=ctx))

    threads = [threading.Thread(target=reap) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r.requeued) for r in reports) == [0, 0, 0, 1]
    assert ctx.queue.ids == [job_id]
    job = mj.get_job(ctx=ctx, job_id=job_id)
    assert (job["status"], job["attempts"], job["worker"]) == ("queued", 1, None)
    assert job["progress"] == {"stage": "requeued (worker lost)"}
    assert not reap_once(ctx=ctx)  # re-sent just now: nothing to do for one lease


def test_requeued_job_runs_once_and_the_old_message_is_harmless(ctx, job_id) -> None:
    set_job(ctx, job_id, status="running", attempts=1, worker="dead:1", started_at=ago(9), heartbeat_at=ago(9))
    assert reap_once(ctx=ctx).requeued == [job_id]
    assert mj.run_merge_job(ctx=ctx, job_id=job_id) == mj.RAN  # the reaper's message
    assert mj.run_merge_job(ctx=ctx, job_id=job_id) == mj.DONE  # the original message, redelivered later
    job = mj.get_job(ctx=ctx, job_id=job_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert models(ctx) == 1
    assert not reap_once(ctx=ctx)


def test_fresh_running_jobs_are_left_alone(ctx, job_id) -> None:
    set_job(ctx, job_id, status="running", attempts=1, worker="alive:1", started_at=ago(9), heartbeat_at=ago(0.5))
    assert not reap_once(ctx=ctx)
    assert mj.get_job(ctx=ctx, job_id=job_id)["worker"] == "alive:1"
    # the same job seen from a reaper whose clock is one lease later: stale
    assert reap_once(ctx=ctx, now=mj.utcnow() + timedelta(seconds=LEASE)).requeued == [job_id]


def test_exhausted_or_cancelled_stale_jobs_end_without_a_worker(ctx, world, job_id) -> None:
    set_job(ctx, job_id, status="running", attempts=3, worker="dead:1", heartbeat_at=ago(9))
    other, _ = mj.submit_merge_job(ctx=ctx, request=job_request(register_family(ctx, world)))
    set_job(ctx, other["id"], status="running", attempts=1, heartbeat_at=ago(9), cancel_requested=True)
    ctx.queue.ids.clear()
    report = reap_once(ctx=ctx)
    assert (report.failed, report.cancelled, report.requeued) == ([job_id], [other["id"]], [])
    failed = mj.get_job(ctx=ctx, job_id=job_id)
    assert failed["status"] == "failed" and "worker died 3 times" in failed["error"] and failed["finished_at"]
    assert mj.get_job(ctx=ctx, job_id=other["id"])["status"] == "cancelled"
    assert ctx.queue.ids == []
    assert mj.run_merge_job(ctx=ctx, job_id=job_id) == mj.DONE


def test_lost_queued_job_is_resent_once_per_lease(ctx, job_id) -> None:
    assert not reap_once(ctx=ctx)  # just created: its message may still be on its way
    set_job(ctx, job_id, created_at=ago(LEASE + 1))
    ctx.queue.held = {job_id}
    assert not reap_once(ctx=ctx)  # the broker holds it
    ctx.queue.held = None
    assert not reap_once(ctx=ctx)  # the broker cannot tell: leave it
    ctx.queue.held = set()  # lost (e.g. Redis restarted without persistence)
    assert reap_once(ctx=ctx).resent == [job_id]
    assert not reap_once(ctx=ctx)  # re-sent a moment ago by someone
    assert ctx.queue.ids == [job_id]
    later = mj.utcnow() + timedelta(seconds=LEASE + 0.5)
    assert reap_once(ctx=ctx, now=later).resent == [job_id]  # lost again: sent again one lease later
    assert mj.get_job(ctx=ctx, job_id=job_id)["status"] == "queued"
    assert mj.run_merge_job(ctx=ctx, job_id=job_id) == mj.RAN
    assert mj.run_merge_job(ctx=ctx, job_id=job_id) == mj.DONE
    assert models(ctx) == 1


def test_reaper_thread_runs_until_stopped(ctx, job_id) -> None:
    set_job(ctx, job_id, status="running", attempts=1, heartbeat_at=ago(9))
    reaper = start_reaper(ctx)
    assert reaper is not None and ctx.extras["reaper"] is reaper
    end = time.monotonic() + 10
    while mj.get_job(ctx=ctx, job_id=job_id)["status"] != "queued":
        assert time.monotonic() < end, "the reaper thread did not requeue the stale job"
        time.sleep(0.02)
    stop_reaper(ctx)
    assert not reaper.is_alive() and "reaper" not in ctx.extras and ctx.queue.ids == [job_id]
    ctx.settings.reaper_interval_s = 0
    assert start_reaper(ctx) is None


def test_embedded_queue_knows_waiting_and_running_ids() -> None:
    started, release = threading.Event(), threading.Event()

    def run(*, ctx, job_id) -> None:
        started.set()
        release.wait(10)

    q = EmbeddedQueue(lambda: None, run=run)
    try:
        q.enqueue("job_a")
        assert started.wait(10)
        q.enqueue("job_b")
        assert q.known_job_ids() == {"job_a", "job_b"}
        release.set()
        assert q.join(10)
        assert q.known_job_ids() == set()
    finally:
        release.set()
        q.close()


def test_the_documented_default_bound_is_lease_plus_reaper_interval() -> None:
    import re
    from pathlib import Path

    from app.settings import Settings

    fields = Settings.model_fields
    bound = float(fields["job_lease_s"].default) + float(fields["reaper_interval_s"].default)
    root = Path(__file__).resolve().parents[2]
    docs = [root / "README.md"]
    stated = [re.findall(r"Default bound: \*\*(\d+(?:\.\d+)?) s\*\*", p.read_text()) for p in docs if p.is_file()]
    assert stated[0], "README.md must state 'Default bound: **N s**'"
    assert {float(n) for found in stated for n in found} == {bound}, (stated, bound)
