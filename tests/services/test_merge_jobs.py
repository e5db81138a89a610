"""Merge-job services: up-front validation, idempotency, run → model, run twice, cancel, retries, recovery."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch
from sqlalchemy import update

from app.db import repositories as repo
from app.db.models import MergeJob
from app.domain.precision import resolve_train_dtype
from app.services import job_runner
from app.services import merge_jobs as mj
from app.services.errors import Conflict, NotFound, UnprocessableInput
from tests.fixtures import TinyWorld, make_tiny_world
from tests.workers.world import job_request, make_ctx, register_family


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    return make_tiny_world(tmp_path_factory.mktemp("jobs_world"))


@pytest.fixture
def ctx(tmp_path):
    c = make_ctx(tmp_path, job_lease_s=2.0, max_job_attempts=3)
    yield c
    c.close()


@pytest.fixture
def fam(ctx, world):
    return register_family(ctx, world)


def counts(ctx) -> dict[str, int]:
    with ctx.session() as s:
        return repo.count_rows(s)


def set_job(ctx, job_id: str, **values) -> None:
    with ctx.session() as s:
        s.execute(update(MergeJob).where(MergeJob.id == job_id).values(**values))


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        ({"method": "nope"}, UnprocessableInput, "steph"),
        ({"params": {"epochs": 1, "bogus": 3}}, UnprocessableInput, "bogus"),
        ({"params": {"topk": "many"}}, UnprocessableInput, "topk"),
        ({"base_id": "base_missing"}, NotFound, "base_missing"),
        ({"target_checkpoint_id": "ckpt_missing"}, NotFound, "ckpt_missing"),
        ({"cohort_id": "coh_missing"}, NotFound, "coh_missing"),
        ({"source_checkpoint_ids": []}, UnprocessableInput, "no source checkpoints"),
        ({"source_checkpoint_ids": ["ckpt_missing"]}, NotFound, "ckpt_missing"),
    ],
)
def test_submit_validates_up_front_and_stores_nothing(ctx, fam, change, error, needle) -> None:
    req = {**job_request(fam), **change}
    before = counts(ctx)
    with pytest.raises(error, match=needle):
        mj.submit_merge_job(ctx=ctx, request=req)
    assert counts(ctx) == before and ctx.queue.ids == []


def test_target_among_sources_and_duplicates_are_refused(ctx, fam) -> None:
    t, luad = fam["ckpt"]["brca"], fam["ckpt"]["luad"]
    with pytest.raises(UnprocessableInput, match="also listed as a source"):
        mj.submit_merge_job(ctx=ctx, request=job_request(fam, sources=[luad, t]))
    with pytest.raises(UnprocessableInput, match="more than once"):
        mj.submit_merge_job(ctx=ctx, request=job_request(fam, sources=[luad, luad]))
    assert counts(ctx)["merge_jobs"] == 0


def test_submit_commits_then_enqueues_with_default_sources(ctx, fam) -> None:
    job, created = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    assert created and job["status"] == "queued" and job["attempts"] == 0
    assert ctx.queue.ids == [job["id"]]
    assert job["source_checkpoint_ids"] == [fam["ckpt"]["luad"], fam["ckpt"]["kirc"]]
    assert mj.get_job(ctx=ctx, job_id=job["id"])["status"] == "queued"


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(ctx, fam) -> None:
    first, created1 = mj.submit_merge_job(ctx=ctx, request=job_request(fam), idempotency_key="k-1")
    again, created2 = mj.submit_merge_job(ctx=ctx, request=job_request(fam), idempotency_key="k-1")
    assert created1 and not created2 and again["id"] == first["id"]
    assert ctx.queue.ids == [first["id"]] and counts(ctx)["merge_jobs"] == 1
    with pytest.raises(Conflict, match="different request"):
        mj.submit_merge_job(ctx=ctx, request=job_request(fam, method="average", params={}), idempotency_key="k-1")


def test_run_produces_one_model_and_a_second_run_does_nothing(ctx, fam) -> None:
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.RAN
    done = mj.get_job(ctx=ctx, job_id=job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["model_id"] and done["finished_at"] >= done["started_at"]
    assert done["progress"]["stage"] == "done" and done["progress"]["total_steps"] >= 1
    comp = done["comparison"]
    assert 0.0 <= comp["merged_c_index"] <= 1.0 and 0.0 <= comp["reference_c_index"] <= 1.0
    assert comp["difference"] == pytest.approx(comp["merged_c_index"] - comp["reference_c_index"])
    assert comp["patients"] == 5 and comp["pairs"] >= 1
    with ctx.session() as s:
        model = repo.get_model(s, model_id=done["model_id"])
        assert model.job_id == job["id"] and model.method == "steph"
        assert [src["cancer"] for src in model.sources] == ["luad", "kirc"]
        prov = model.provenance
        assert prov["seed"] == model.params["train"]["seed"] and prov["code_version"]
        assert prov["inputs"]["target"]["cancer"] == "brca" and prov["device"] == "cpu"
        # the default preset's compute_dtype "auto" is recorded as what it meant on this machine (issue 7)
        native = resolve_train_dtype("auto", "cpu") == torch.bfloat16
        assert model.params["train"]["compute_dtype"] == ("bfloat16" if native else "float32")
        assert ctx.store.verify(model.artifact_sha256).is_file()
        tm = model.metrics["test_metrics"]
        assert tm["merged"]["c_index"] == comp["merged_c_index"] and tm["merged"]["patients"] == 5
    objects = ctx.store.count_objects()
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.DONE
    assert counts(ctx)["models"] == 1 and ctx.store.count_objects() == objects
    assert mj.get_job(ctx=ctx, job_id=job["id"])["attempts"] == 1


def test_cancel_a_queued_job_then_running_it_does_nothing(ctx, fam) -> None:
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    out = mj.cancel_merge_job(ctx=ctx, job_id=job["id"])
    assert out["status"] == "cancelled" and out["finished_at"] is not None
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.DONE
    assert mj.get_job(ctx=ctx, job_id=job["id"])["attempts"] == 0 and counts(ctx)["models"] == 0
    with pytest.raises(Conflict, match=r"has already ended \(cancelled\)"):
        mj.cancel_merge_job(ctx=ctx, job_id=job["id"])
    with pytest.raises(NotFound):
        mj.cancel_merge_job(ctx=ctx, job_id="job_missing")


def wait_for(pred, timeout: float = 30.0, interval: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_cancel_a_running_job_stops_it_at_the_next_step(ctx, fam) -> None:
    req = job_request(fam, params={"epochs": 400, "accum": 1, "topk": 2, "hyper_hidden": 8})
    job, _ = mj.submit_merge_job(ctx=ctx, request=req)
    runner = threading.Thread(target=mj.run_merge_job, kwargs={"ctx": ctx, "job_id": job["id"]})
    runner.start()
    wait_for(lambda: (mj.get_job(ctx=ctx, job_id=job["id"])["progress"] or {}).get("step"))
    assert mj.cancel_merge_job(ctx=ctx, job_id=job["id"])["cancel_requested"] is True
    runner.join(30)
    final = mj.get_job(ctx=ctx, job_id=job["id"])
    assert final["status"] == "cancelled" and final["model_id"] is None
    assert final["progress"]["step"] < final["progress"]["total_steps"]
    assert counts(ctx)["models"] == 0


def test_interrupted_job_is_retried_and_fails_past_max_attempts(ctx, fam, monkeypatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(job_runner, "notify_finished", lambda _ctx, job_id: sent.append(job_id))
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    stale = mj.utcnow() - timedelta(seconds=60)
    set_job(ctx, job["id"], status="running", attempts=3, heartbeat_at=stale, started_at=stale)
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.DONE
    failed = mj.get_job(ctx=ctx, job_id=job["id"])
    assert failed["status"] == "failed" and "worker died 3 times" in failed["error"]
    assert failed["progress"]["stage"] == "failed" and failed["progress"]["eta_s"] is None  # final, no ETA
    assert sent == [job["id"]]  # the completion webhook goes out when the claim itself ends the job
    assert counts(ctx)["models"] == 0

    job2, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    set_job(ctx, job2["id"], status="running", attempts=2, heartbeat_at=stale, started_at=stale)
    assert mj.run_merge_job(ctx=ctx, job_id=job2["id"]) == mj.RAN
    retried = mj.get_job(ctx=ctx, job_id=job2["id"])
    assert retried["status"] == "succeeded" and retried["attempts"] == 3


def test_a_job_running_elsewhere_is_busy_and_left_alone(ctx, fam) -> None:
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    set_job(
        ctx,
        job["id"],
        status="running",
        attempts=1,
        worker="other:1",
        heartbeat_at=mj.utcnow(),
        started_at=mj.utcnow(),
    )
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.BUSY
    after = mj.get_job(ctx=ctx, job_id=job["id"])
    assert after["status"] == "running" and after["attempts"] == 1 and after["worker"] == "other:1"
    assert mj.run_merge_job(ctx=ctx, job_id="job_missing") == mj.MISSING


def test_failure_is_recorded_with_a_clear_message(ctx, world, tmp_path) -> None:
    fam = register_family(ctx, world, cohort_dir=tmp_path / "gone")
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.RAN
    failed = mj.get_job(ctx=ctx, job_id=job["id"])
    assert failed["status"] == "failed" and "gone" in failed["error"], failed["error"]
    assert str(tmp_path) not in failed["error"] and failed["finished_at"] is not None
    assert counts(ctx)["models"] == 0


def test_scrub_removes_server_paths_only() -> None:
    from app.services.job_runner import scrub

    msg = "No such file: '/srv/data/brca/labels.csv' (ratio 1/2, see http://host/x)"
    assert scrub(msg) == "No such file: 'labels.csv' (ratio 1/2, see http://host/x)"


def test_recover_requeues_queued_and_interrupted_jobs_only(ctx, fam) -> None:
    ids = [mj.submit_merge_job(ctx=ctx, request=job_request(fam))[0]["id"] for _ in range(3)]
    set_job(ctx, ids[1], status="running", attempts=1, worker="dead:1", heartbeat_at=mj.utcnow())
    set_job(ctx, ids[2], status="succeeded")
    ctx.queue.ids.clear()
    assert sorted(mj.recover_interrupted_jobs(ctx)) == sorted(ids[:2])
    assert sorted(ctx.queue.ids) == sorted(ids[:2])
    assert mj.get_job(ctx=ctx, job_id=ids[1])["status"] == "queued"
    assert mj.get_job(ctx=ctx, job_id=ids[1])["attempts"] == 1
    assert mj.get_job(ctx=ctx, job_id=ids[2])["status"] == "succeeded"


def test_list_filters_and_pages(ctx, fam) -> None:
    a = mj.submit_merge_job(ctx=ctx, request=job_request(fam))[0]["id"]
    b = mj.submit_merge_job(ctx=ctx, request=job_request(fam, method="average", params={}))[0]["id"]
    mj.cancel_merge_job(ctx=ctx, job_id=a)
    items, total = mj.list_jobs(ctx=ctx)
    assert total == 2 and [j["id"] for j in items] == [b, a]
    items, total = mj.list_jobs(ctx=ctx, status="cancelled")
    assert total == 1 and items[0]["id"] == a
    items, total = mj.list_jobs(ctx=ctx, method="average", limit=1, offset=0)
    assert total == 1 and items[0]["id"] == b
    items, total = mj.list_jobs(ctx=ctx, limit=1, offset=1)
    assert total == 2 and [j["id"] for j in items] == [a]
    with pytest.raises(UnprocessableInput, match="unknown status"):
        mj.list_jobs(ctx=ctx, status="bogus")


def test_a_cross_fitted_steph_job_records_its_phases(ctx, fam) -> None:
    params = {**job_request(fam)["params"], "crossfit": "split"}
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam, params=params))
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.RAN
    done = mj.get_job(ctx=ctx, job_id=job["id"])
    assert done["status"] == "succeeded", done["error"]
    with ctx.session() as s:
        model = repo.get_model(s, model_id=done["model_id"])
        assert model.params["method"]["crossfit"] == "split"
        halves = model.metrics["notes"]["crossfit"]
    assert isinstance(halves, dict) and halves
    assert done["progress"]["step"] == done["progress"]["total_steps"]


def test_failure_messages_blame_the_input_or_the_code() -> None:
    from app.services.job_runner import _failure_message

    diverged = _failure_message(FloatingPointError("training diverged at step 3: lower lr or set grad_clip"))
    assert diverged.startswith("FloatingPointError: training diverged") and "internal" not in diverged
    bug = _failure_message(AttributeError("'NoneType' object has no attribute 'x'"))
    assert bug.startswith("internal error (AttributeError)") and "worker log" in bug


def test_a_cancel_accepted_after_the_last_step_is_honoured(ctx, fam, monkeypatch) -> None:
    """The cancel arrives while the job finishes (after training, before the commit): the job ends cancelled
    with no model, instead of succeeding and clearing the request."""
    execute = job_runner.inputs_mod.execute

    stored = []

    def late_cancel(ctx_, job, *args, **kwargs):
        result = execute(ctx_, job, *args, **kwargs)
        stored.append(result["artifact_key"])
        assert mj.cancel_merge_job(ctx=ctx_, job_id=job["id"])["cancel_requested"] is True  # accepted: running
        return result

    monkeypatch.setattr(job_runner.inputs_mod, "execute", late_cancel)
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.RAN
    final = mj.get_job(ctx=ctx, job_id=job["id"])
    assert final["status"] == "cancelled" and final["model_id"] is None and final["error"] == "cancelled on request"
    assert counts(ctx)["models"] == 0
    assert stored and not ctx.store.exists(stored[0])  # its stored artifact went with it (was left for gc)


def test_sources_sharing_a_cancer_get_distinct_names() -> None:
    from app.services.job_inputs import source_names

    rows = [{"cancer": "BRCA", "checkpoint_id": "ckpt_a"}, {"cancer": "CESC", "checkpoint_id": "ckpt_b"},
            {"cancer": "BRCA", "checkpoint_id": "ckpt_c"}]  # fmt: skip
    assert source_names(rows) == ["BRCA (ckpt_a)", "CESC", "BRCA (ckpt_c)"]


def test_a_graceful_stop_hands_a_running_job_back_without_spending_an_attempt(ctx, fam) -> None:
    """SIGTERM / a redeploy of the embedded service: the job stops at its next step and is queued again with
    its attempt given back (three restarts used to fail a long job as 'worker died 3 times')."""
    from workers.embedded import EmbeddedQueue

    queue = EmbeddedQueue(lambda: ctx)
    try:
        req = job_request(fam, params={"epochs": 400, "accum": 1, "topk": 2, "hyper_hidden": 8})
        job, _ = mj.submit_merge_job(ctx=ctx, request=req)
        queue.enqueue(job["id"])
        wait_for(lambda: (mj.get_job(ctx=ctx, job_id=job["id"])["progress"] or {}).get("step"))
        t0 = time.monotonic()
        queue.close(timeout=30)
        assert time.monotonic() - t0 < 20  # stopped at the next step, not after the 400 epochs
    finally:
        queue.close()
    again = mj.get_job(ctx=ctx, job_id=job["id"])
    assert again["status"] == "queued" and again["attempts"] == 0 and again["model_id"] is None, again
    assert "stopped while it ran" in again["progress"]["stage"] and counts(ctx)["models"] == 0
    ctx.extras.pop("stopping", None)  # the next start of this service: the job runs again, to the end
    small = {**req, "params": {"epochs": 1, "accum": 4, "topk": 2, "hyper_hidden": 8}}
    with ctx.session() as s:
        s.execute(update(MergeJob).where(MergeJob.id == job["id"]).values(params=small["params"]))
    assert mj.run_merge_job(ctx=ctx, job_id=job["id"]) == mj.RAN
    done = mj.get_job(ctx=ctx, job_id=job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
