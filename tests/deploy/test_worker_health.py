"""workers.health: a worker busy with a job (solo pool: it cannot answer a ping) is healthy only while that job's
heartbeat is fresh. (The ping path runs against real workers in tests/integration/test_s3_scale_out.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.db.models import MergeJob
from app.services.merge_jobs import submit_merge_job
from tests.fixtures import make_tiny_world
from tests.workers.world import job_request, make_ctx, register_family
from workers.health import busy_job


def test_busy_worker_is_healthy_only_with_a_fresh_heartbeat(tmp_path) -> None:
    ctx = make_ctx(tmp_path, job_lease_s=30)
    fam = register_family(ctx, make_tiny_world(tmp_path / "world"))
    job, _ = submit_merge_job(ctx=ctx, request=job_request(fam))

    def set_job(**values) -> None:
        with ctx.session() as s:
            row = s.get(MergeJob, job["id"])
            for k, v in values.items():
                setattr(row, k, v)

    me = "w1@gpu-7"
    assert busy_job(ctx.settings, me) is None  # queued, not claimed
    set_job(status="running", worker=f"{me}:4242:1", heartbeat_at=datetime.now(UTC) - timedelta(seconds=5))
    assert busy_job(ctx.settings, me) == job["id"]
    assert busy_job(ctx.settings, "w1@gpu-70") is None and busy_job(ctx.settings, "w1@gpu") is None  # other hosts
    assert busy_job(ctx.settings, "w2@gpu-7") is None  # another worker on the same host does not vouch for w1
    assert busy_job(ctx.settings, "w_@gpu-7") is None  # a node name is matched literally (_ is no wildcard)
    set_job(heartbeat_at=datetime.now(UTC) - timedelta(seconds=31))  # older than the lease: stuck or dead
    assert busy_job(ctx.settings, me) is None
    set_job(status="succeeded", heartbeat_at=datetime.now(UTC))
    assert busy_job(ctx.settings, me) is None
    ctx.close()


def test_the_runner_names_itself_after_the_celery_node() -> None:
    import os

    from app.services import job_runner

    try:
        job_runner.set_node_name("gpu1@vm")
        assert job_runner.worker_name().startswith(f"gpu1@vm:{os.getpid()}:")
    finally:
        job_runner.set_node_name(None)
    assert not job_runner.worker_name().startswith("gpu1@vm")
