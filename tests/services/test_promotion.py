"""The promotion gate's service side: gate settings from job params + settings, and the fields a job records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.services.errors import UnprocessableInput
from app.services.promotion import gate_config, promotion_fields


def test_gate_config_takes_the_settings_default_and_job_overrides():
    settings = SimpleNamespace(merge_gate="full", merge_gate_margin=0.01)
    gate = gate_config({}, settings)
    assert (gate.mode, gate.n_folds, gate.margin) == ("full", 5, 0.01)
    gate = gate_config({"gate": "off", "gate_margin": 0.02, "epochs": 3}, settings)
    assert (gate.mode, gate.margin) == ("off", 0.02)
    assert gate_config(None).mode == "fast"
    with pytest.raises(UnprocessableInput, match="gate_folds"):
        gate_config({"gate_folds": 0})


def test_promotion_fields_report_the_status_and_a_collapse():
    est = {"difference": -0.02}
    run = SimpleNamespace(
        promotion={"status": "not_promoted", "reason": "gain -0.020", "estimate": est},
        merge_stats={"collapsed": True},
    )
    fields = promotion_fields(run)
    assert fields["promotion_status"] == "not_promoted"
    assert fields["promotion"]["estimate"] == est and fields["promotion"]["collapsed"] is True
    assert "collapsed" in fields["job_promotion"]["reason"] and fields["job_promotion"]["estimate"] == est  # job too
    idle = SimpleNamespace(
        promotion={"status": "promoted", "reason": "gain +0.030"},
        merge_stats={"collapsed": False, "no_source_knowledge": True, "train": {"source_share": {"mean": 0.002}}},
    )
    idle_fields = promotion_fields(idle)
    assert idle_fields["promotion"]["no_source_knowledge"] is True
    assert idle_fields["job_promotion"]["no_source_knowledge"] is True
    assert "used no source knowledge (λ ≈ 1 on every train bag: 0.2%" in idle_fields["job_promotion"]["reason"]
    plain = promotion_fields(SimpleNamespace(promotion=None, merge_stats=None))
    assert plain["promotion_status"] == "unchecked" and "collapsed" not in plain["promotion"]
    warned = SimpleNamespace(
        promotion={"status": "promoted", "reason": "gain +0.010"}, merge_stats=None,
        notes={"ensemble": {"warning": "the sources' own models do not rank …"}},
    )  # fmt: skip
    reason = promotion_fields(warned)["job_promotion"]["reason"]
    assert reason == "gain +0.010; WARNING: the sources' own models do not rank …"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.fixtures import make_tiny_world

    return make_tiny_world(tmp_path_factory.mktemp("promotion_world"))


@pytest.mark.parametrize("method", ["steph", "auto"])
def test_a_merge_job_records_the_gate_on_the_job_and_the_model(tmp_path, world, method):
    from app.db import repositories as repo
    from app.services import merge_jobs as mj
    from app.services.models import model_to_dict
    from tests.workers.world import job_request, make_ctx, register_family

    ctx = make_ctx(tmp_path)
    try:
        request = job_request(register_family(ctx, world))
        params = {**request.get("params", {}), "gate": "fast"}
        if method == "auto":  # the STEPH parameters go to auto's STEPH candidates
            params = {"epochs": params["epochs"], "gate": "fast", "steph_params": {"hyper_hidden": 8}}
        request = {**request, "method": method, "params": params}
        job, _ = mj.submit_merge_job(ctx=ctx, request=request)
        mj.run_merge_job(ctx=ctx, job_id=job["id"])
        done = mj.get_job(ctx=ctx, job_id=job["id"])
        assert done["status"] == "succeeded", done["error"]
        with ctx.session() as s:
            model = model_to_dict(repo.get_model(s, model_id=done["model_id"]))
        assert model["promotion_status"] in ("promoted", "not_promoted", "unchecked")
        assert done["promotion"]["status"] == model["promotion_status"] == model["metrics"]["promotion"]["status"]
        if method == "auto":  # default candidates; the model is the winner's own type
            evidence = model["metrics"]["notes"]["auto"]
            rel = evidence["relevance"]  # the pre-check ran on the job's sources (luad, kirc)
            assert set(rel["per_source"]) == {"luad", "kirc"} and rel["passed"] == (rel["z"] >= rel["threshold_z"])
            # sources passing: STEPH + the sources' ensemble; failing: STEPH with β = 0. Either way no inner CV for
            # the choice, and the promotion gate validates the winner (its estimate is the evidence)
            winner = "steph + sources' ensemble" if rel["passed"] else "steph β = 0 (fallback)"
            assert evidence["winner"] == winner and set(evidence["candidates"]) == {winner}
            assert model["promotion"]["estimate"]["difference"] == evidence["candidates"][winner]["difference"]
        if method == "steph":
            stats = model["metrics"]["merge_stats"]
            assert stats["collapsed"] is False and done["promotion"]["collapsed"] is False
            assert set(stats["test"]["topk_share"]) == {"luad", "kirc"}
        if model["promotion_status"] != "unchecked" and method == "steph":
            est = model["promotion"]["estimate"]
            assert (model["promotion_status"] == "promoted") == (est["difference"] > 0)
        with pytest.raises(Exception, match="gate"):
            mj.submit_merge_job(ctx=ctx, request={**request, "params": {"gate": "always"}})
    finally:
        ctx.close()
