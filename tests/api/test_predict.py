"""HTTP: POST /predict — results per patient, grouping, top patches, bad inputs (4xx naming the file; nothing
stored changes; no temp files left), unknown model, auth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.api.conftest import assert_error, snapshot


def files(*items):
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def tmp_entries(client) -> list:
    tmp = client.app.state.ctx.store.root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def test_predict_each_file_and_one_patient(client, predict, model_id, bags, tmp_path) -> None:
    a, b = bags["a"].read_bytes(), bags["b"].read_bytes()
    r = client.post(
        "/predict",
        headers=predict,
        data={"model_id": model_id},
        files=files(("caseA.h5", a), ("caseB.h5", b)),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == model_id and body["method"] == body["model_type"] == "steph"
    gate = client.get(f"/models/{model_id}", headers=predict).json()["promotion_status"]
    assert body["promotion_status"] == gate and gate in ("promoted", "not_promoted", "unchecked")
    assert [(x["patient_id"], x["n_patches"]) for x in body["results"]] == [("caseA", 10), ("caseB", 6)]
    res = body["results"][0]
    probs = res["survival"]["probabilities"]
    assert len(res["survival"]["times_days"]) == len(probs) == 5 and probs[0] == 1.0
    assert all(x >= y for x, y in zip(probs, probs[1:], strict=False))
    assert res["risk"] == pytest.approx(-sum(probs[1:]), abs=1e-5)
    assert {s["cancer"] for s in res["sources"]} <= {"luad", "kirc"}

    npy = tmp_path / "caseB.npy"
    import h5py

    with h5py.File(bags["b"], "r") as f:
        np.save(npy, np.asarray(f["features"]))
    pt = tmp_path / "caseA.pt"
    with h5py.File(bags["a"], "r") as f:
        torch.save({"features": torch.from_numpy(np.asarray(f["features"]))}, pt)
    r2 = client.post(
        "/predict",
        headers=predict,
        data={"model_id": model_id, "patient_id": "PX", "top_patches": "3"},
        files=files(("caseA.pt", pt.read_bytes()), ("caseB.npy", npy.read_bytes())),
    )
    assert r2.status_code == 200, r2.text
    (one,) = r2.json()["results"]
    assert one["patient_id"] == "PX" and one["n_patches"] == 16 and one["files"] == ["caseA.pt", "caseB.npy"]
    assert len(one["top_patches"]) == 3 and one["top_patches"][0]["coords"] is None
    r3 = client.post(
        "/predict",
        headers=predict,
        data={"model_id": model_id, "patient_ids": json.dumps(["PX", "PX"])},
        files=files(("caseA.h5", a), ("caseB.h5", b)),
    )
    assert r3.json()["results"][0]["risk"] == pytest.approx(one["risk"], abs=1e-5)
    assert tmp_entries(client) == []


@pytest.mark.parametrize(
    ("name", "kind", "status", "needles"),
    [
        ("wide.h5", "wide", 422, ("wide.h5", "18")),
        ("nanbag.h5", "nan", 422, ("nanbag.h5", "nan")),
        ("empty.h5", "empty", 422, ("empty.h5",)),
        ("slide.txt", "text", 422, ("slide.txt",)),
    ],
)
def test_bad_bags_get_4xx_naming_the_file(client, predict, model_id, bags, name, kind, status, needles) -> None:
    data = {
        "wide": bags["wide"].read_bytes(),
        "nan": bags["nan"].read_bytes(),
        "empty": b"",
        "text": b"not features",
    }[kind]
    before = snapshot(client.app.state.ctx)
    r = client.post(
        "/predict",
        headers=predict,
        data={"model_id": model_id},
        files=files(("caseA.h5", bags["a"].read_bytes()), (name, data)),
    )
    err = assert_error(r, status, contains=needles)
    assert err["code"] in ("bad_bag", "bad_file", "invalid_input", "unprocessable_input")
    assert snapshot(client.app.state.ctx) == before and tmp_entries(client) == []


def test_limits_unknown_model_and_auth(client, admin, predict, model_id, bags) -> None:
    ctx = client.app.state.ctx
    a = bags["a"].read_bytes()
    limit = ctx.settings.max_bags_per_request
    r = client.post(
        "/predict",
        headers=predict,
        data={"model_id": model_id},
        files=files(*[(f"s{i}.h5", a) for i in range(limit + 1)]),
    )
    assert_error(r, 413, contains=str(limit))
    ctx.settings.max_patches = 12
    try:
        r = client.post(
            "/predict",
            headers=predict,
            data={"model_id": model_id, "patient_id": "P"},
            files=files(("caseA.h5", a), ("caseB.h5", bags["b"].read_bytes())),
        )
        assert_error(r, 413, contains="16 patches")
    finally:
        ctx.settings.max_patches = 500_000
    r = client.post("/predict", headers=predict, data={"model_id": "model_nope"}, files=files(("caseA.h5", a)))
    assert_error(r, 404, contains="model_nope")
    r = client.post(
        "/predict",
        headers=predict,
        data={"model_id": model_id, "patient_ids": "[1"},
        files=files(("caseA.h5", a)),
    )
    assert_error(r, 422, contains="patient_ids")
    assert_error(client.post("/predict", data={"model_id": model_id}, files=files(("caseA.h5", a))), 401)
    assert (
        client.post("/predict", headers=admin, data={"model_id": model_id}, files=files(("caseA.h5", a))).status_code
        == 200
    )
    assert tmp_entries(client) == []


def test_a_model_deleted_while_its_prediction_starts_answers_404_not_500(client, admin, predict, ctx, model_id,
                                                                         bags, monkeypatch) -> None:  # fmt: skip
    """DELETE /models/{id} between the lookup of the model and the load of its artifact (a race under load): the
    request answers 404 saying the model was deleted, not a 500 about a store missing an artifact."""
    from app.services import predict as svc
    from app.services.lifecycle import delete_model

    real = svc.model_record
    calls = []

    def record_then_delete(*, ctx, model_id):
        calls.append(model_id)
        out = real(ctx=ctx, model_id=model_id)
        if len(calls) == 1:  # the first lookup: the model is deleted (artifact included) before the load
            delete_model(ctx=ctx, model_id=model_id)
        return out

    monkeypatch.setattr(svc, "model_record", record_then_delete)
    one = files(("caseA.h5", bags["a"].read_bytes()))
    r = client.post("/predict", headers=predict, data={"model_id": model_id}, files=one)
    assert_error(r, 404, "not_found", contains=("was deleted while this request was being served", "GET /models"))
    assert len(calls) == 2  # looked up again after the load failed


def test_an_artifact_missing_under_a_live_model_stays_a_store_error(client, admin, predict, ctx, model_id, bags):
    with ctx.session() as s:
        from app.db.models import Model

        key = s.get(Model, model_id).artifact_key
    ctx.store.delete(key)
    one = files(("caseA.h5", bags["a"].read_bytes()))
    r = client.post("/predict", headers=predict, data={"model_id": model_id}, files=one)
    assert_error(r, 500, "store_error", contains="missing from the store")


def test_two_files_naming_one_patient_are_refused_not_pooled(client, predict, model_id, bags) -> None:
    """Without patient_id each file is its own patient (its name up to the first dot): two patients' bags both
    called slide.h5 (from patientA/ and patientB/), or P1.h5 and P1.v2.h5, were silently scored as ONE patient."""
    a, b = bags["a"].read_bytes(), bags["b"].read_bytes()
    for first, second in (("slide.h5", "slide.h5"), ("P1.h5", "P1.v2.h5")):
        r = client.post("/predict", headers=predict, data={"model_id": model_id}, files=files((first, a), (second, b)))
        assert_error(r, 422, contains=(f"{first!r} and {second!r} both name patient", "patient_id"))
    r = client.post("/predict", headers=predict, data={"model_id": model_id, "patient_id": ["P1", "P1"]},
                    files=files(("P1.h5", a), ("P1.v2.h5", b)))  # fmt: skip
    assert r.status_code == 200 and [x["patient_id"] for x in r.json()["results"]] == ["P1"]  # pooled on request
    assert r.json()["results"][0]["n_patches"] == 16
    r = client.post("/predict", headers=predict, data={"model_id": model_id}, files=files(("A.h5", a), ("B.h5", b)))
    assert [x["patient_id"] for x in r.json()["results"]] == ["A", "B"]
