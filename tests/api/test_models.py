"""HTTP: models — list, read, download (ETag = sha256, verified), 404, auth (predict scope reads)."""

from __future__ import annotations

import hashlib

import pytest

from tests.api.conftest import assert_error
from tests.workers.api_helpers import register_cohort, run_job


@pytest.fixture
def model(client, admin, world, family) -> dict:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    job = run_job(client, admin, family, cohort["id"])
    return client.get(f"/models/{job['model_id']}", headers=admin).json()


def test_model_detail_list_and_artifact(client, admin, predict, family, model) -> None:
    assert model["method"] == "steph" and model["base_id"] == family["base"]["id"]
    assert model["target_checkpoint_id"] == family["checkpoints"]["brca"]["id"]
    assert [s["cancer"] for s in model["sources"]] == ["luad", "kirc"]
    assert model["params"]["method"]["topk"] == 2 and model["params"]["train"]["epochs"] == 1
    prov = model["provenance"]
    assert prov["inputs"]["base"]["sha256"] == family["base"]["sha256"] and "torch" in prov
    assert model["metrics"]["comparison"] is not None

    listed = client.get("/models", headers=predict).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == model["id"]
    assert client.get("/models", headers=predict, params={"method": "ties"}).json()["total"] == 0

    r = client.get(f"/models/{model['id']}/artifact", headers=predict)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == model["artifact_sha256"]
    assert r.headers["etag"] == f'"{model["artifact_sha256"]}"'
    assert f"model-{model['id']}.safetensors" in r.headers["content-disposition"]
    cached = client.get(f"/models/{model['id']}/artifact", headers={**predict, "If-None-Match": r.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""


def test_corrupt_artifact_is_not_served(client, admin, model) -> None:
    path = client.app.state.ctx.store.path(model["artifact_sha256"])
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-4] + b"\x00\x00\x00\x00")
        assert_error(client.get(f"/models/{model['id']}/artifact", headers=admin), 503, contains="corrupt")
    finally:
        path.write_bytes(original)


def test_unknown_model_and_auth(client, admin, predict, model) -> None:
    assert_error(client.get("/models/model_nope", headers=predict), 404, contains="model_nope")
    assert_error(client.get("/models/model_nope/artifact", headers=admin), 404, contains="model_nope")
    for path in ("/models", f"/models/{model['id']}", f"/models/{model['id']}/artifact"):
        assert_error(client.get(path), 401)
        assert_error(client.get(path, headers={"Authorization": "Bearer wrong"}), 401)
        assert client.get(path, headers=predict).status_code == 200
