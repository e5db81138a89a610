"""HTTP: deleting models, jobs, cohorts, checkpoints and bases with referential safety; garbage collection.

After every deletion the test checks the database rows and the store objects that remain."""

from __future__ import annotations

from datetime import timedelta

from app.db import repositories as repo
from app.db.models import MergeJob, utcnow
from tests.api.conftest import assert_error
from tests.workers.api_helpers import register_cohort, run_job


def rows(ctx) -> dict[str, int]:
    with ctx.session() as s:
        return repo.count_rows(s)


def job_row(job_id: str, family: dict, cohort: dict, **fields) -> MergeJob:
    """A merge-job row written straight to the database (no runner is told about it)."""
    return MergeJob(
        id=job_id,
        method="steph",
        base_id=family["base"]["id"],
        cohort_id=cohort["id"],
        target_checkpoint_id=family["checkpoints"]["brca"]["id"],
        source_checkpoint_ids=[],
        params={},
        attempts=0,
        cancel_requested=False,
        **fields,
    )


def keys(ctx) -> set[str]:
    return set(ctx.store.list_keys())


def test_delete_chain_refuses_while_used_and_leaves_nothing_behind(client, admin, ctx, world, family) -> None:
    base_id = family["base"]["id"]
    cohort = register_cohort(client, admin, world, base_id)
    job = run_job(client, admin, family, cohort["id"])
    mid = job["model_id"]
    model = client.get(f"/models/{mid}", headers=admin).json()
    r = client.post(
        "/registered-models/brca/versions",
        headers=admin,
        json={"model_id": mid, "aliases": ["champion"], "allow_not_promoted": True},
    )
    assert r.status_code == 201

    # a model in use by an alias cannot go; the 409 names the alias and the version
    err = assert_error(client.delete(f"/models/{mid}", headers=admin), 409, contains="brca@champion")
    assert "alias brca@champion (version 1)" in err["details"]["used_by"]
    assert model["artifact_sha256"] in keys(ctx)
    # nor can its job (provenance), its cohort (the job names it), its checkpoints, or the base
    assert_error(client.delete(f"/merge-jobs/{job['id']}", headers=admin), 409, contains=f"model {mid}")
    assert_error(client.delete(f"/cohorts/{cohort['id']}", headers=admin), 409, contains=job["id"])
    brca = family["checkpoints"]["brca"]
    assert_error(client.delete(f"/checkpoints/{brca['id']}", headers=admin), 409, contains=mid)
    err = assert_error(client.delete(f"/bases/{base_id}", headers=admin), 409)
    assert {f"checkpoint {c['id']}" for c in family["checkpoints"].values()} <= set(err["details"]["used_by"])
    assert f"cohort {cohort['id']}" in err["details"]["used_by"]

    # free the model: delete the alias, then the version; the model goes with its artifact, the job stays
    assert client.delete("/registered-models/brca/aliases/champion", headers=admin).status_code == 204
    assert_error(client.delete(f"/models/{mid}", headers=admin), 409, contains="version brca/1")
    assert client.delete("/registered-models/brca/versions/1", headers=admin).status_code == 204
    assert client.delete(f"/models/{mid}", headers=admin).status_code == 204
    assert model["artifact_sha256"] not in keys(ctx)
    assert client.get(f"/merge-jobs/{job['id']}", headers=admin).json()["model_id"] is None
    assert rows(ctx)["models"] == 0 and rows(ctx)["merge_jobs"] == 1

    # then the job, then the cohort (its uploaded directory too)
    assert client.delete(f"/merge-jobs/{job['id']}", headers=admin).status_code == 204
    assert ctx.store.count_cohorts() == 1
    assert client.delete(f"/cohorts/{cohort['id']}", headers=admin).status_code == 204
    assert ctx.store.count_cohorts() == 0 and rows(ctx)["cohorts"] == 0

    # checkpoints (with θ_c and τ), then the base: the store ends empty and so do the tables
    for c in family["checkpoints"].values():
        assert client.delete(f"/checkpoints/{c['id']}", headers=admin).status_code == 204
    assert keys(ctx) == {family["base"]["sha256"]} or len(keys(ctx)) == 1
    assert client.delete(f"/bases/{base_id}", headers=admin).status_code == 204
    assert keys(ctx) == set()
    counts = rows(ctx)
    assert all(counts[t] == 0 for t in ("bases", "checkpoints", "cohorts", "merge_jobs", "models")), counts
    assert_error(client.delete(f"/bases/{base_id}", headers=admin), 404)


def test_active_job_cannot_be_deleted_and_predict_key_is_refused(client, admin, predict, ctx, world, family) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    with ctx.session() as s:  # a queued job no runner was told about stays queued
        s.add(job_row("job_q", family, cohort, status="queued", created_at=utcnow()))
    assert_error(client.delete("/merge-jobs/job_q", headers=admin), 409, contains="cancel it first")
    assert_error(client.delete("/merge-jobs/job_q", headers=predict), 403)
    assert_error(client.delete(f"/cohorts/{cohort['id']}", headers=admin), 409, contains="queued job job_q")
    assert client.post("/merge-jobs/job_q/cancel", headers=admin).status_code == 200
    assert client.delete("/merge-jobs/job_q", headers=admin).status_code == 204
    assert rows(ctx)["merge_jobs"] == 0
    assert_error(client.delete("/models/model_nope", headers=admin), 404)


def test_gc_dry_run_then_delete_and_job_expiry(client, admin, ctx, world, family) -> None:
    referenced = keys(ctx)
    orphan = ctx.store.put_bytes(b"nobody points at me")
    ctx.settings.gc_grace_s = 3600.0
    report = client.post("/admin/gc", headers=admin).json()
    assert report["dry_run"] is True and report["objects"] == []  # too young: spared
    ctx.settings.gc_grace_s = 0.0
    report = client.post("/admin/gc", headers=admin).json()
    assert report["objects"] == [{"key": orphan, "bytes": 19}] and report["bytes"] == 19
    assert orphan in keys(ctx)  # dry run: still there
    (ctx.store.root / "cohorts" / "coh_orphan").mkdir(parents=True)
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    old = utcnow() - timedelta(days=3)
    with ctx.session() as s:
        for jid, finished in (("job_old", old), ("job_new", utcnow())):
            s.add(job_row(jid, family, cohort, status="failed", created_at=old, finished_at=finished))
    ctx.settings.job_retention_days = 1.0
    report = client.post("/admin/gc", headers=admin, params={"dry_run": "false"}).json()
    assert report["dry_run"] is False and [o["key"] for o in report["objects"]] == [orphan]
    assert report["cohort_dirs"] == ["coh_orphan"] and report["expired_jobs"] == ["job_old"]
    assert keys(ctx) == referenced and ctx.store.count_cohorts() == 1  # the registered cohort stays
    with ctx.session() as s:
        assert {j.id for j in s.query(MergeJob)} == {"job_new"}
    assert client.post("/admin/gc", headers=admin, params={"dry_run": "false"}).json()["objects"] == []
