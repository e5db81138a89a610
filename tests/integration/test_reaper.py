"""The job reaper against a real redis-server and real Celery workers (`steph worker`): no job stays stuck.

- a worker killed with SIGKILL, with the default visibility timeout (no redelivery for an hour): the reaper puts
  the job back within job_lease_s + reaper_interval_s and it succeeds on a live worker, once;
- Redis restarted without persistence under a running worker: the running job finishes and the lost queued one
  is re-sent within job_lease_s + reaper_interval_s; both succeed once;
- a killed worker whose old message IS redelivered (short visibility timeout) while the reapers of the API and
  two workers also act: still one attempt that commits, one model row, one artifact.

Each test has its own redis-server (so it can be restarted) and short lease / reaper interval settings; the
default bound is checked against the docs in tests/workers/test_reaper.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import repositories as repo
from tests.fixtures import free_port, make_tiny_world
from tests.integration.test_celery_jobs import poll
from tests.workers.api_helpers import job_body, register_family_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE, INTERVAL = 3.0, 0.5
SLACK = 5.0  # polling, a loaded CI machine
LONG = {"epochs": 60, "accum": 1, "topk": 2, "hyper_hidden": 8}
TERMINAL = ("succeeded", "failed", "cancelled")


class RedisServer:
    """A redis-server without persistence on a fixed port that can be restarted (losing every message)."""

    def __init__(self, port: int, work: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (`make test` installs it with apt)")
        self.exe, self.port, self.work = exe, port, work
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None
        work.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.exe, *args, "--dir", str(self.work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import redis

        end = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                pass
            assert self.proc.poll() is None and time.monotonic() < end, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def celery_env(celery_env: dict[str, str], private_redis: RedisServer) -> dict[str, str]:
    celery_env.update(
        {
            "STEPH_REDIS_URL": private_redis.url,
            "STEPH_JOB_LEASE_S": str(LEASE),
            "STEPH_REAPER_INTERVAL_S": str(INTERVAL),
            "STEPH_CELERY_VISIBILITY_TIMEOUT_S": "3600",  # the default: Celery redelivers nothing during a test
        }
    )
    return celery_env


def start_ready(workers, n: int = 1, timeout: float = 60) -> list:
    """Start `n` workers and wait until each says it is ready."""
    procs = [workers.start() for _ in range(n)]
    first = len(workers.procs) - n
    end = time.monotonic() + timeout
    for i in range(first, len(workers.procs)):
        log = workers.log_dir / f"worker{i}.log"
        while "ready." not in log.read_text(errors="replace"):
            assert time.monotonic() < end and workers.procs[i].poll() is None, workers.logs()
            time.sleep(0.1)
    return procs


def until_running(client, admin, job_id: str, workers) -> dict:
    step = lambda j: j["status"] == "running" and ((j["progress"] or {}).get("step") or 0) >= 1  # noqa: E731
    return poll(client, admin, job_id, step, 60, workers)


def runner_of(workers, job: dict):
    """The worker process running `job` (its `worker` is host:pid:thread)."""
    pid = int(job["worker"].split(":")[1])
    (proc,) = [p for p in workers.procs if p.pid == pid]
    return proc


def models_and_objects(ctx) -> tuple[int, int]:
    with ctx.session() as s:
        return repo.count_rows(s)["models"], ctx.store.count_objects()


def test_killed_worker_job_is_reclaimed_by_the_reaper(api, workers, tmp_path) -> None:
    client, admin, _ = api
    ctx = client.app.state.ctx
    start_ready(workers, 2)  # the job runs on one; the other stands for "the worker is back"
    family, cohort = register_family_http(client, admin, make_tiny_world(tmp_path / "world"))
    before = models_and_objects(ctx)
    job_id = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"], params=LONG)).json()["id"]
    running = until_running(client, admin, job_id, workers)
    assert running["attempts"] == 1
    workers.kill(runner_of(workers, running))
    killed = time.monotonic()
    poll(client, admin, job_id, lambda j: j["status"] != "running" or j["attempts"] == 2, 30, workers)
    back = time.monotonic() - killed
    again = poll(client, admin, job_id, lambda j: j["attempts"] == 2 or j["status"] in TERMINAL, 30, workers)
    reclaimed = time.monotonic() - killed
    final = poll(client, admin, job_id, lambda j: j["status"] in TERMINAL, 60, workers)
    done = time.monotonic() - killed
    print(f"\nkill -9 → requeued {back:.2f} s, attempt 2 claimed {reclaimed:.2f} s, {final['status']} {done:.2f} s")
    assert again["attempts"] == 2, again
    assert LEASE - 1.0 <= back <= LEASE + INTERVAL + SLACK, back  # the lease decides, the reaper acts
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
    assert models_and_objects(ctx) == (before[0] + 1, before[1] + 1)


def test_jobs_lost_in_a_redis_restart_are_resent(api, workers, tmp_path, private_redis) -> None:
    client, admin, _ = api
    ctx = client.app.state.ctx
    (worker,) = start_ready(workers)
    family, cohort = register_family_http(client, admin, make_tiny_world(tmp_path / "world"))
    before = models_and_objects(ctx)
    long_id = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"], params=LONG)).json()["id"]
    until_running(client, admin, long_id, workers)
    short_id = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"])).json()["id"]
    assert ctx.queue.known_job_ids() >= {long_id, short_id}  # one delivered (unacked), one waiting
    private_redis.restart()
    restarted = time.monotonic()
    assert ctx.queue.known_job_ids() == set()  # every message is gone
    assert client.get(f"/merge-jobs/{short_id}", headers=admin).json()["status"] == "queued"
    end = restarted + 30
    while short_id not in ctx.queue.known_job_ids() and mj_status(client, admin, short_id) == "queued":
        assert time.monotonic() < end, workers.logs()
        time.sleep(0.05)
    resent = time.monotonic() - restarted
    finals = [poll(client, admin, i, lambda j: j["status"] in TERMINAL, 90, workers) for i in (long_id, short_id)]
    done = time.monotonic() - restarted
    print(f"\nredis restart → lost job re-sent {resent:.2f} s, both terminal {done:.2f} s")
    assert resent <= LEASE + INTERVAL + SLACK, resent
    assert [(j["status"], j["attempts"]) for j in finals] == [("succeeded", 1), ("succeeded", 1)], finals
    assert worker.poll() is None  # the worker reconnected instead of dying
    assert models_and_objects(ctx) == (before[0] + 2, before[1] + 2)


def mj_status(client, admin, job_id: str) -> str:
    return client.get(f"/merge-jobs/{job_id}", headers=admin).json()["status"]


def test_redelivery_and_reapers_together_run_a_job_once(api, workers, tmp_path, celery_env) -> None:
    client, admin, _ = api
    ctx = client.app.state.ctx
    celery_env["STEPH_CELERY_VISIBILITY_TIMEOUT_S"] = "4"  # the workers redeliver the killed worker's message
    start_ready(workers, 3)
    family, cohort = register_family_http(client, admin, make_tiny_world(tmp_path / "world"))
    before = models_and_objects(ctx)
    job_id = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"], params=LONG)).json()["id"]
    victim = runner_of(workers, until_running(client, admin, job_id, workers))
    workers.kill(victim)
    final = poll(client, admin, job_id, lambda j: j["status"] in TERMINAL, 90, workers)
    assert final["status"] == "succeeded" and final["attempts"] == 2, (final, workers.logs())
    k = workers.procs.index(victim)
    (task_id,) = re.findall(r"run_merge_job\[([0-9a-f-]+)\] received", (tmp_path / f"worker{k}.log").read_text())
    others = [tmp_path / f"worker{i}.log" for i in range(3) if i != k]
    end = time.monotonic() + 20  # the killed worker's message comes back to a live worker (and finds it done)
    while not any(task_id in log.read_text() for log in others):
        assert time.monotonic() < end, f"message {task_id} was not redelivered\n{workers.logs()}"
        time.sleep(0.2)
    time.sleep(2 * LEASE)  # any duplicate (redelivery, reaper re-send, BUSY retry) has acted by now
    after = client.get(f"/merge-jobs/{job_id}", headers=admin).json()
    assert (after["status"], after["attempts"], after["model_id"]) == ("succeeded", 2, final["model_id"])
    assert models_and_objects(ctx) == (before[0] + 1, before[1] + 1)
