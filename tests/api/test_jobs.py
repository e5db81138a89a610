"""HTTP: merge jobs — 202 + Location, validation (422/404, nothing stored),
idempotency, cancel, list, auth."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, snapshot
from tests.workers.api_helpers import job_body, register_cohort, run_job, wait_job


@pytest.fixture
def cohort(client, admin, world, family) -> dict:
    return register_cohort(client, admin, world, family["base"]["id"])


def test_submit_runs_on_the_embedded_runner_to_a_model(client, admin, family, cohort) -> None:
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"]))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/merge-jobs/{job['id']}" and job["status"] in ("queued", "running")
    ck = family["checkpoints"]
    assert job["source_checkpoint_ids"] == [ck["luad"]["id"], ck["kirc"]["id"]]
    done = wait_job(client, admin, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["epochs"] == 1 and done["progress"]["step"] == done["progress"]["total_steps"]
    assert done["comparison"] is not None and done["model_id"]
    m = client.get(f"/models/{done['model_id']}", headers=admin)
    assert m.status_code == 200 and m.json()["job_id"] == job["id"]
    listed = client.get("/merge-jobs", headers=admin, params={"status": "succeeded"}).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == job["id"]
    assert client.get("/merge-jobs", headers=admin, params={"method": "ties"}).json()["total"] == 0
    assert_error(client.get("/merge-jobs", headers=admin, params={"method": "tie"}), 422, contains="unknown method")
    for key, value in (("base_id", family["base"]["id"]), ("cohort_id", cohort["id"]),
                       ("target_checkpoint_id", ck["brca"]["id"])):  # fmt: skip
        assert client.get("/merge-jobs", headers=admin, params={key: value}).json()["total"] == 1
        assert client.get("/merge-jobs", headers=admin, params={key: "other"}).json()["total"] == 0
    r = client.post(f"/merge-jobs/{job['id']}/cancel", headers=admin)
    assert_error(r, 409, contains="has already ended (succeeded)")


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"method": "bogus"}, 422, "bogus"),
        ({"params": {"epochs": "ten"}}, 422, "epochs"),
        ({"params": {"unknown_knob": 1}}, 422, "unknown_knob"),
        ({"params": {"unknown_knob": 1}}, 422, "every method also takes: train_preset, epochs"),
        ({"base_id": "base_nope"}, 404, "base_nope"),
        ({"target_checkpoint_id": "ckpt_nope"}, 404, "ckpt_nope"),
        ({"cohort_id": "coh_nope"}, 404, "coh_nope"),
        ({"source_checkpoint_ids": []}, 422, "no source checkpoints"),
        ({"params": {"beta_rule": "sometimes"}}, 422, "beta_rule"),  # issue 12: STEPH's β rule
        ({"method": "auto", "params": {"choose": "vote"}}, 422, "choose must be one of"),
        ({"method": "auto", "params": {"relevance_z": None}}, 422, "needs a relevance_z"),
        ({"params": {"compute_dtype": "int8"}}, 422, "compute_dtype"),
        # one weight per source, known only once the sources are resolved (the job used to fail later)
        ({"method": "task_arithmetic", "params": {"weights": [1.0]}}, 422, "weights has 1 entries but the job has"),
        ({"method": "task_arithmetic", "params": {"scale": 1e308}}, 422, "must lie in [-100, 100]"),
        ({"method": "ties", "params": {"scale": -1e308}}, 422, "scale must be a finite number in"),
        (
            {"params": {"gamma": 1e30}},
            422,
            "gamma and beta must be finite numbers in [0, 100]",
        ),  # "trained" to a 2.5e30 loss
        # a gate that cannot run on this train split: refused now, not `unchecked` after the whole training
        (
            {"params": {"epochs": 1, "gate": "fast", "gate_folds": 1000}},
            422,
            ("1000-fold validation needs at least 2000 train patients", "has 7 in its train split", '"gate": "off"'),
        ),
    ],
)
def test_bad_submissions_are_refused_and_store_nothing(client, admin, family, cohort, change, status, needle) -> None:
    before = snapshot(client.app.state.ctx)
    r = client.post("/merge-jobs", headers=admin, json={**job_body(family, cohort["id"]), **change})
    assert_error(r, status, contains=needle)
    assert snapshot(client.app.state.ctx) == before


def test_target_among_sources_and_missing_fields(client, admin, family, cohort) -> None:
    target = family["checkpoints"]["brca"]["id"]
    body = job_body(family, cohort["id"], sources=[target, family["checkpoints"]["luad"]["id"]])
    assert_error(client.post("/merge-jobs", headers=admin, json=body), 422, contains="also listed as a source")
    body = job_body(family, cohort["id"])
    del body["cohort_id"]
    assert_error(client.post("/merge-jobs", headers=admin, json=body), 422, "validation_error", contains="cohort_id")


def test_idempotency_key_replays_and_conflicts(client, admin, family, cohort) -> None:
    body = job_body(family, cohort["id"], method="average", params={"retrain_head": False})
    h = {**admin, "Idempotency-Key": "submit-42"}
    first = client.post("/merge-jobs", headers=h, json=body)
    again = client.post("/merge-jobs", headers=h, json=body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert client.get("/merge-jobs", headers=admin).json()["total"] == 1
    other = {**body, "params": {"retrain_head": True}}
    assert_error(client.post("/merge-jobs", headers=h, json=other), 409, contains="submit-42")
    # the same body with a webhook added is another request: replaying the old job would drop the webhook silently
    hooked = {**body, "webhook_url": "https://hooks.example.org/steph"}
    assert_error(client.post("/merge-jobs", headers=h, json=hooked), 409, contains="submit-42")
    wait_job(client, admin, first.json()["id"])


def test_cancel_queued_job_and_unknown_job(client, admin, family, cohort) -> None:
    ctx = client.app.state.ctx
    ctx.queue.close()  # nothing runs: the job stays queued
    from tests.workers.world import RecordingQueue

    ctx.queue = RecordingQueue()
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"]))
    job_id = r.json()["id"]
    assert ctx.queue.ids == [job_id]
    c = client.post(f"/merge-jobs/{job_id}/cancel", headers=admin)
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    assert client.get(f"/merge-jobs/{job_id}", headers=admin).json()["status"] == "cancelled"
    assert_error(client.post("/merge-jobs/job_nope/cancel", headers=admin), 404, contains="job_nope")
    assert_error(client.get("/merge-jobs/job_nope", headers=admin), 404, contains="job_nope")


def test_auth_matrix_for_jobs(client, admin, predict, family, cohort) -> None:
    job = run_job(client, admin, family, cohort["id"], method="average", params={"retrain_head": False})
    routes = [
        ("post", "/merge-jobs", {"json": job_body(family, cohort["id"])}),
        ("get", "/merge-jobs", {}),
        ("get", f"/merge-jobs/{job['id']}", {}),
        ("post", f"/merge-jobs/{job['id']}/cancel", {}),
    ]
    for method, path, kw in routes:
        assert_error(getattr(client, method)(path, **kw), 401)
        assert_error(getattr(client, method)(path, headers=predict, **kw), 403)
    assert client.get("/merge-jobs", headers=admin).status_code == 200


def test_restart_of_the_embedded_runner_picks_up_queued_and_interrupted_jobs(settings, world) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from app.db.models import MergeJob
    from app.main import create_app
    from tests.api.conftest import upload
    from tests.workers.world import RecordingQueue

    with TestClient(create_app(settings)) as c1:
        admin = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        ctx = c1.app.state.ctx
        ctx.queue.close()
        ctx.queue = RecordingQueue()  # the "process" dies before running anything
        base = c1.post("/bases", headers=admin, files=upload(world.base), data={"name": "t", "encoder": "e"}).json()
        ckpts = {
            cancer: c1.post(
                "/checkpoints",
                headers=admin,
                files=upload(path),
                data={"cancer": cancer, "base_id": base["id"]},
            ).json()
            for cancer, path in world.checkpoints.items()
        }
        family = {"base": base, "checkpoints": ckpts}
        cohort = register_cohort(c1, admin, world, base["id"])
        ids = [c1.post("/merge-jobs", headers=admin, json=job_body(family, cohort["id"])).json()["id"] for _ in "ab"]
        with ctx.session() as s:  # the second one was interrupted mid-run
            s.execute(update(MergeJob).where(MergeJob.id == ids[1]).values(status="running", attempts=1))
    with TestClient(create_app(settings)) as c2:
        done = [wait_job(c2, admin, i) for i in ids]
        assert [j["status"] for j in done] == ["succeeded", "succeeded"], done
        assert [j["attempts"] for j in done] == [1, 2]
        assert c2.get("/models", headers=admin).json()["total"] == 2
