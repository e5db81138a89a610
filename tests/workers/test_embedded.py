"""EmbeddedQueue: ids run in order, one at a time, failures do not stop it, close() waits."""

from __future__ import annotations

import threading
import time

import pytest

from workers import build_queue
from workers.embedded import EmbeddedQueue


class Recorder:
    def __init__(self, fail_on: str | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[object, str]] = []
        self.active = 0
        self.max_active = 0
        self.fail_on = fail_on
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, *, ctx: object, job_id: str) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
            self.calls.append((ctx, job_id))
        if job_id == self.fail_on:
            raise RuntimeError("boom")


def test_runs_ids_in_order_one_at_a_time_and_survives_failures() -> None:
    rec = Recorder(fail_on="b", delay=0.01)
    ctx = object()
    q = EmbeddedQueue(lambda: ctx, run=rec)
    for job_id in ["a", "b", "c"]:
        q.enqueue(job_id)
    assert q.join(timeout=5)
    assert [j for _, j in rec.calls] == ["a", "b", "c"]
    assert all(c is ctx for c, _ in rec.calls)
    assert rec.max_active == 1
    assert q.ping() is True
    q.close()
    assert q.ping() is False
    with pytest.raises(RuntimeError, match="closed"):
        q.enqueue("d")


def test_close_finishes_the_current_job_and_drops_the_rest() -> None:
    started = threading.Event()
    release = threading.Event()
    done: list[str] = []

    def run(*, ctx: object, job_id: str) -> None:
        started.set()
        release.wait(5)
        done.append(job_id)

    q = EmbeddedQueue(lambda: None, run=run)
    q.enqueue("first")
    q.enqueue("second")
    assert started.wait(5)
    closer = threading.Thread(target=q.close)
    closer.start()
    time.sleep(0.05)
    release.set()
    closer.join(5)
    assert done == ["first"]


def test_two_workers_run_concurrently() -> None:
    rec = Recorder(delay=0.2)
    q = EmbeddedQueue(lambda: None, run=rec, workers=2)
    q.enqueue("a")
    q.enqueue("b")
    assert q.join(timeout=5)
    assert rec.max_active == 2
    q.close()


def test_build_queue_picks_embedded_and_rejects_unknown() -> None:
    class S:
        queue = "embedded"
        embedded_workers = 1

    q = build_queue(S(), lambda: "ctx")
    try:
        assert isinstance(q, EmbeddedQueue) and q.ping()
    finally:
        q.close()

    class Bad:
        queue = "kafka"

    with pytest.raises(ValueError, match="embedded' or 'celery"):
        build_queue(Bad(), None)


def test_celery_config_is_json_only_acks_late_prefetch_one() -> None:
    from types import SimpleNamespace

    from workers.celery_app import TASK_NAME, make_celery

    app = make_celery(SimpleNamespace(redis_url="redis://127.0.0.1:1/0", celery_visibility_timeout_s=7.0))
    conf = app.conf
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 7.0
    assert TASK_NAME in conf.task_routes


def test_celery_queue_ping_is_false_when_redis_is_unreachable() -> None:
    from types import SimpleNamespace

    from workers import CeleryQueue

    q = CeleryQueue(SimpleNamespace(redis_url="redis://127.0.0.1:1/0", celery_visibility_timeout_s=60.0))
    t0 = time.monotonic()
    assert q.ping() is False
    assert time.monotonic() - t0 < 5
    q.close()


def test_submit_with_redis_down_answers_503_and_fails_the_job(tmp_path) -> None:
    from types import SimpleNamespace

    from app.services import merge_jobs as mj
    from app.services.errors import ServiceUnavailable
    from tests.fixtures import make_tiny_world
    from tests.workers.world import job_request, make_ctx, register_family
    from workers import CeleryQueue

    queue = CeleryQueue(SimpleNamespace(redis_url="redis://127.0.0.1:1/0", celery_visibility_timeout_s=60.0))
    ctx = make_ctx(tmp_path, queue=queue)
    try:
        fam = register_family(ctx, make_tiny_world(tmp_path / "world"))
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="marked failed"):
            mj.submit_merge_job(ctx=ctx, request=job_request(fam))
        assert time.monotonic() - t0 < 20
        (job,), total = mj.list_jobs(ctx=ctx)
        assert total == 1 and job["status"] == "failed" and "could not be queued" in job["error"]
    finally:
        ctx.close()
