"""End to end on a real redis-server and real Celery worker processes (`steph worker`):
register → cohort → merge job → predict; and a worker killed with SIGKILL mid-job: the job still ends
exactly once (succeeded after the redelivery, or failed with the reason), one model row, one artifact."""

from __future__ import annotations

import time

import pytest

from app.db import repositories as repo
from tests.fixtures import make_tiny_world
from tests.workers.api_helpers import job_body, register_family_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def poll(client, admin, job_id: str, until, timeout: float, workers) -> dict:
    end = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < end:
        job = client.get(f"/merge-jobs/{job_id}", headers=admin).json()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job state not reached in {timeout} s: {job}\n{workers.logs()}")


def test_register_merge_predict_through_a_celery_worker(api, workers, tmp_path) -> None:
    client, admin, predict = api
    assert client.get("/health/ready").status_code == 200
    workers.start()
    world = make_tiny_world(tmp_path / "world")
    family, cohort = register_family_http(client, admin, world)
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"]))
    assert r.status_code == 202, r.text
    job = poll(client, admin, r.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 45, workers)
    assert job["status"] == "succeeded", (job, workers.logs())
    assert job["attempts"] == 1 and job["worker"]
    bag = world.cohort / "bags" / "S000.h5"
    p = client.post(
        "/predict",
        headers=predict,
        data={"model_id": job["model_id"]},
        files=[("files", (bag.name, bag.read_bytes(), "application/octet-stream"))],
    )
    assert p.status_code == 200, p.text
    (res,) = p.json()["results"]
    assert res["patient_id"] == "S000" and res["risk"] < 0 and res["sources"]


def test_a_job_whose_worker_is_killed_ends_exactly_once(api, workers, tmp_path) -> None:
    client, admin, _ = api
    ctx = client.app.state.ctx
    first = workers.start()
    world = make_tiny_world(tmp_path / "world")
    family, cohort = register_family_http(client, admin, world)
    objects_before = ctx.store.count_objects()
    params = {"epochs": 150, "accum": 1, "topk": 2, "hyper_hidden": 8}
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"], params=params))
    job_id = r.json()["id"]
    running = poll(
        client,
        admin,
        job_id,
        lambda j: j["status"] == "running" and ((j["progress"] or {}).get("step") or 0) >= 1,
        30,
        workers,
    )
    assert running["attempts"] == 1
    workers.kill(first)
    time.sleep(0.5)
    assert client.get(f"/merge-jobs/{job_id}", headers=admin).json()["status"] == "running"  # nobody finished it
    workers.start()
    final = poll(client, admin, job_id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"), 50, workers)
    if final["status"] == "failed":
        assert "worker died" in final["error"], final
    else:
        assert final["status"] == "succeeded" and final["attempts"] == 2, final
    time.sleep(1.0)  # any duplicate delivery would act now
    with ctx.session() as s:
        rows = repo.count_rows(s)
    assert rows["models"] == (1 if final["status"] == "succeeded" else 0)
    assert ctx.store.count_objects() == objects_before + rows["models"]
    assert client.get(f"/merge-jobs/{job_id}", headers=admin).json()["status"] == final["status"]


def test_a_worker_stopped_with_sigterm_hands_its_job_back(api, workers, tmp_path) -> None:
    """A redeploy sends SIGTERM: the worker used to finish the whole job first (then SIGKILL after the stop grace
    period spent an attempt). Now the job stops at its next step, is queued again with its attempt given back and
    re-sent, the worker exits at once, and the next worker runs it to the end."""
    import signal

    client, admin, _ = api
    first = workers.start()
    world = make_tiny_world(tmp_path / "world")
    family, cohort = register_family_http(client, admin, world)
    params = {"epochs": 60, "accum": 1, "topk": 2, "hyper_hidden": 8, "gate": "off"}
    job_id = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"], params=params)).json()["id"]
    poll(client, admin, job_id, lambda j: j["status"] == "running" and ((j["progress"] or {}).get("step") or 0) >= 1,
         30, workers)  # fmt: skip
    t0 = time.monotonic()
    first.send_signal(signal.SIGTERM)
    first.wait(30)
    assert time.monotonic() - t0 < 20, workers.logs()  # it did not wait for the 60 epochs
    back = client.get(f"/merge-jobs/{job_id}", headers=admin).json()
    assert back["status"] == "queued" and back["attempts"] == 0, (back, workers.logs())
    assert "stopped while it ran" in back["progress"]["stage"]
    workers.start()  # the re-sent message: no reaper or visibility timeout needed
    final = poll(client, admin, job_id, lambda j: j["status"] in ("succeeded", "failed", "cancelled"), 90, workers)
    assert final["status"] == "succeeded" and final["attempts"] == 1, final
