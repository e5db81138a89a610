# ruff: noqa: F811  (pytest fixtures imported from tests/storage/s3server.py)
"""Scale-out through the S3 store, on real processes: a moto S3 server, redis-server, `steph worker` (Celery) and
`steph serve` (uvicorn). The API, the workers and a second API each have their own, initially empty, scratch
directory; they share only the database and the bucket.

1. register → merge job on a worker whose disk is empty → predict on an API process that never saw the job.
2. two workers on one machine drain a queue of merge jobs: every job runs exactly once, none lost or doubled.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures import free_port, make_tiny_world
from tests.integration.conftest import REPO, Workers
from tests.storage.s3server import s3_bucket, s3_client, s3_env, s3_server  # noqa: F401 (fixtures)
from tests.workers.api_helpers import job_body, register_family_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def procs(s3_celery_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """`steph` processes (workers, a second API) on the S3 settings, each with its own scratch directory."""
    (tmp_path / "logs").mkdir()
    p = Workers(s3_celery_env, tmp_path / "logs")
    yield p
    p.stop_all()


@pytest.fixture
def s3_celery_env(celery_env, s3_server, s3_bucket, tmp_path, monkeypatch) -> dict[str, str]:
    """celery_env on the S3 store (scratch = STEPH_STORE_ROOT, replaced per process); AWS_* set here too."""
    env = {
        **celery_env,
        **s3_env(s3_server, s3_bucket, tmp_path / "scratch-api"),
        "STEPH_CELERY_VISIBILITY_TIMEOUT_S": "60",
    }
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)  # boto3's credential chain in this (the API's) process
    return env


@pytest.fixture
def s3_api(s3_celery_env):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.services.auth import create_api_key
    from app.settings import Settings

    fields = {k[len("STEPH_") :].lower(): v for k, v in s3_celery_env.items() if k.startswith("STEPH_")}
    with TestClient(create_app(Settings(**fields))) as client:
        with client.app.state.ctx.session() as s:
            _, admin = create_api_key(s, scope="admin", name="it admin")
            _, pred = create_api_key(s, scope="predict", name="it predict")
        yield client, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {pred}"}


def start_worker(procs: Workers, env: dict[str, str], scratch: Path, name: str) -> subprocess.Popen:
    return procs.start(["worker", "--hostname", f"{name}@%h"], name=name, env={**env, "STEPH_STORE_ROOT": str(scratch)})


def wait_jobs(client, admin, ids: list[str], procs: Workers, timeout: float) -> list[dict]:
    end = time.monotonic() + timeout
    jobs: list[dict] = []
    while time.monotonic() < end:
        jobs = [client.get(f"/merge-jobs/{i}", headers=admin).json() for i in ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"jobs not finished in {timeout} s: {[j['status'] for j in jobs]}\n{procs.logs()}")


def wait_workers(env: dict[str, str], names: list[str], procs: Workers, timeout: float = 60) -> None:
    from app.settings import Settings
    from workers.celery_app import make_celery

    app = make_celery(Settings(redis_url=env["STEPH_REDIS_URL"]))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        answered = {next(iter(r)).split("@")[0] for r in app.control.ping(timeout=1.0) or []}
        if set(names) <= answered:
            return
    raise AssertionError(f"workers {names} did not answer a Celery ping in {timeout} s\n{procs.logs()}")


def health(env: dict[str, str], name: str) -> int:
    """Exit code of the worker health check (`python -m workers.health`) for node `name@<this host>`."""
    args = [sys.executable, "-m", "workers.health", "--name", name, "--timeout", "2"]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, timeout=60).returncode


def test_merge_on_an_empty_worker_and_predict_on_a_fresh_api_through_s3(
    s3_api,
    s3_celery_env,
    procs,
    tmp_path,
    s3_server,
    s3_bucket,
) -> None:
    client, admin, predict = s3_api
    store = client.app.state.ctx.store
    assert store.kind == "s3" and client.get("/health/ready").json()["checks"]["store"] is True
    world = make_tiny_world(tmp_path / "world")
    family, cohort = register_family_http(client, admin, world)
    inputs = set(store.list_keys())
    assert len(inputs) >= 1 + len(family["checkpoints"])  # θ₀ and every checkpoint went to the bucket
    worker_scratch = tmp_path / "scratch-worker"
    start_worker(procs, s3_celery_env, worker_scratch, "w1")
    assert not worker_scratch.exists()
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"]))
    assert r.status_code == 202, r.text
    (job,) = wait_jobs(client, admin, [r.json()["id"]], procs, 90)
    assert job["status"] == "succeeded" and job["attempts"] == 1, (job, procs.logs())
    model = client.get(f"/models/{job['model_id']}", headers=admin).json()
    sha = model["artifact_sha256"]
    assert set(store.list_keys()) == inputs | {sha}  # the worker published the artifact to the bucket
    assert (worker_scratch / "cohorts" / cohort["id"] / "labels.csv").is_file()  # fetched from the bucket
    assert not (store.root / "objects" / sha[:2] / f"{sha}.safetensors").exists()  # this API never saw it

    port, fresh_scratch = free_port(), tmp_path / "scratch-api2"
    env = {**s3_celery_env, "STEPH_STORE_ROOT": str(fresh_scratch), "STEPH_AUTO_MIGRATE": "false"}
    procs.start(["serve", "--host", "127.0.0.1", "--port", str(port)], name="api2", env=env)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, procs.logs()
        time.sleep(0.3)
    bag = world.cohort / "bags" / "S000.h5"
    files = [("files", (bag.name, bag.read_bytes(), "application/octet-stream"))]
    remote = httpx.post(f"{url}/predict", headers=predict, data={"model_id": job["model_id"]}, files=files, timeout=60)
    assert remote.status_code == 200, (remote.text, procs.logs())
    local = client.post("/predict", headers=predict, data={"model_id": job["model_id"]}, files=files)
    assert local.status_code == 200, local.text
    (a,), (b,) = remote.json()["results"], local.json()["results"]
    assert a["patient_id"] == "S000" and a["risk"] == pytest.approx(b["risk"], abs=1e-3)  # thread counts differ
    assert (fresh_scratch / "objects" / sha[:2] / f"{sha}.safetensors").is_file()  # fetched, verified, cached


def test_two_workers_drain_a_queue_exactly_once(s3_api, s3_celery_env, procs, tmp_path) -> None:
    client, admin, _ = s3_api
    store = client.app.state.ctx.store
    family, cohort = register_family_http(client, admin, make_tiny_world(tmp_path / "world"))
    inputs = set(store.list_keys())
    workers = {name: start_worker(procs, s3_celery_env, tmp_path / f"scratch-{name}", name) for name in ("w1", "w2")}
    wait_workers(s3_celery_env, list(workers), procs)
    assert health(s3_celery_env, "w1") == 0 and health(s3_celery_env, "nobody") == 1  # the compose health check
    n_jobs = 6
    ids = []
    for seed in range(n_jobs):
        body = job_body(
            family, cohort["id"], params={"epochs": 1, "accum": 2, "topk": 2, "hyper_hidden": 8, "seed": seed}
        )
        r = client.post("/merge-jobs", headers=admin, json=body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    jobs = wait_jobs(client, admin, ids, procs, 180)
    assert [j["status"] for j in jobs] == ["succeeded"] * n_jobs, procs.logs()
    assert [j["attempts"] for j in jobs] == [1] * n_jobs  # each ran once: a second run would count an attempt
    pids = {int(j["worker"].split(":")[1]) for j in jobs}
    assert pids == {p.pid for p in workers.values()}, (pids, procs.logs())  # both workers took jobs
    models = client.get("/models", headers=admin, params={"limit": 100}).json()
    assert models["total"] == n_jobs and len({m["id"] for m in models["items"]}) == n_jobs
    assert {j["model_id"] for j in jobs} == {m["id"] for m in models["items"]}
    shas = {m["artifact_sha256"] for m in models["items"]}
    assert len(shas) == n_jobs and set(store.list_keys()) == inputs | shas  # one artifact per job, none extra
