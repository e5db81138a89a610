"""HTTP: POST /models uploads an artifact made elsewhere; it predicts like the original, can be registered, and
deleting it keeps the store object its twin still uses."""

from __future__ import annotations

import io

import numpy as np

from tests.api.conftest import assert_error
from tests.workers.api_helpers import register_cohort, run_job


def bag() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(1).normal(size=(12, 16)).astype("float32"))
    return buf.getvalue()


def test_upload_register_predict_and_delete(client, admin, predict, ctx, world, family) -> None:
    job = run_job(client, admin, family, register_cohort(client, admin, world, family["base"]["id"])["id"])
    original = client.get(f"/models/{job['model_id']}", headers=admin).json()
    artifact = client.get(f"/models/{original['id']}/artifact", headers=admin).content
    form = {"base_id": family["base"]["id"], "target_checkpoint_id": family["checkpoints"]["brca"]["id"]}
    files = {"file": ("merged.safetensors", artifact, "application/octet-stream")}
    r = client.post("/models", headers=admin, data={**form, "register_as": "uploaded"}, files=files)
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["id"] != original["id"] and up["job_id"] is None and up["method"] == original["method"]
    assert up["artifact_sha256"] == original["artifact_sha256"]
    assert up["provenance"]["artifact"]["job_id"] == job["id"] and up["provenance"]["uploaded"]["sha256"]
    again = client.post("/models", headers=admin, data=form, files=files)
    assert again.status_code == 200 and again.json()["id"] == up["id"]  # same bytes, same base and target

    risks = []
    for ref in (original["id"], "uploaded/1"):
        r = client.post("/predict", headers=predict, data={"model_id": ref}, files=[("files", ("p.npy", bag()))])
        assert r.status_code == 200, r.text
        risks.append(r.json()["results"][0]["risk"])
    assert risks[0] == risks[1]

    assert_error(client.post("/models", headers=predict, data=form, files=files), 403)
    bad = {"file": ("x.safetensors", b"not an artifact", "application/octet-stream")}
    assert_error(client.post("/models", headers=admin, data=form, files=bad), 422)
    other = {**form, "target_checkpoint_id": "ckpt_nope"}
    assert_error(client.post("/models", headers=admin, data=other, files=files), 404, contains="ckpt_nope")

    # deleting the uploaded twin keeps the shared object (the job's model still uses it)
    assert client.delete("/registered-models/uploaded/versions/1", headers=admin).status_code == 204
    assert client.delete(f"/models/{up['id']}", headers=admin).status_code == 204
    assert ctx.store.exists(original["artifact_sha256"])
    assert client.get(f"/models/{original['id']}/artifact", headers=admin).status_code == 200
