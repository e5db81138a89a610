"""HTTP: an `ensemble` merge job (STEPH plus the sources' own models) → a model whose predictions carry every
member's standardised risk; a bad ensemble parameter is refused at submission and stores nothing."""

from __future__ import annotations

import html

import pytest

from tests.api.conftest import assert_error, snapshot
from tests.workers.api_helpers import job_body, register_cohort, run_job


def test_an_ensemble_job_gives_a_model_whose_predictions_show_every_member(
    client, admin, predict, family, world, bags
) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    params = {"epochs": 1, "accum": 2, "main_params": {"topk": 2, "hyper_hidden": 8}}
    job = run_job(client, admin, family, cohort["id"], method="ensemble", params=params)
    model = client.get(f"/models/{job['model_id']}", headers=admin).json()
    assert model["method"] == "ensemble"
    fitted = model["metrics"]["notes"]["ensemble"]
    assert fitted["members"] == ["main", "luad", "kirc"] and fitted["weights"] == pytest.approx([1.0, 0.5, 0.5])
    # a warning of the fit (sources failing the relevance pre-check, or a score that ranks nobody) is on the job
    assert ("WARNING: " + fitted["warning"] in job["promotion"]["reason"]) if "warning" in fitted else (
        "WARNING" not in job["promotion"]["reason"])  # fmt: skip
    key = admin["Authorization"].split(" ", 1)[1]
    assert client.post("/ui/login", data={"key": key}, follow_redirects=False).status_code == 303
    page = html.unescape(client.get(f"/ui/models/{job['model_id']}").text)
    assert '<td id="ensemble">3 models per bag: main, luad, kirc' in page
    r = client.post(
        "/predict", headers=predict, data={"model_id": job["model_id"]},
        files=[("files", ("caseA.h5", bags["a"].read_bytes(), "application/octet-stream"))],
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "ensemble" and r.json()["model_type"] == "ensemble"
    (res,) = r.json()["results"]
    members = res["ensemble"]["members"]
    assert [m["name"] for m in members] == ["main", "luad", "kirc"]
    assert res["ensemble"]["score"] == pytest.approx(sum(m["weight"] * m["z"] for m in members), abs=1e-5)
    assert {s["cancer"] for s in res["sources"]} <= {"luad", "kirc"}  # the STEPH model's merge, passed through
    probs = res["survival"]["probabilities"]
    assert probs[0] == 1.0 and all(x >= y for x, y in zip(probs, probs[1:], strict=False))
    assert res["risk"] == pytest.approx(-sum(probs[1:]), abs=1e-5)


def test_a_bad_ensemble_parameter_is_refused_and_stores_nothing(client, admin, family, world, ctx) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    before = snapshot(ctx)
    body = job_body(family, cohort["id"], method="ensemble", params={"main_method": "auto"})
    assert_error(client.post("/merge-jobs", headers=admin, json=body), 422, contains="cannot be 'auto'")
    assert snapshot(ctx) == before


def test_an_auto_model_says_what_it_runs_per_bag(client, admin, predict, family, world, bags) -> None:
    """method 'auto' whose sources pass (a threshold every source reaches): the registry keeps method 'auto', the
    evidence and the prediction say the model is an ensemble of 1 + 2 models per bag."""
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    params = {
        "epochs": 1,
        "accum": 2,
        "relevance_z": -10,
        "gate": "off",
        "steph_params": {"topk": 2, "hyper_hidden": 8},
    }
    job = run_job(client, admin, family, cohort["id"], method="auto", params=params)
    evidence = client.get(f"/models/{job['model_id']}", headers=admin).json()["metrics"]["notes"]["auto"]
    assert evidence["winner"] == "steph + sources' ensemble" and evidence["models_per_bag"] == 3
    r = client.post(
        "/predict", headers=predict, data={"model_id": job["model_id"]},
        files=[("files", ("caseB.h5", bags["b"].read_bytes(), "application/octet-stream"))],
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "auto" and body["model_type"] == "ensemble" and body["results"][0]["ensemble"]
    key = admin["Authorization"].split(" ", 1)[1]
    assert client.post("/ui/login", data={"key": key}, follow_redirects=False).status_code == 303
    page = html.unescape(client.get(f"/ui/models/{job['model_id']}").text)
    assert '<td id="auto-winner">steph + sources\' ensemble — 3 models per bag</td>' in page
