"""POST /predict with curve_image=png|svg: each patient's survival curve as a base64 image, on request only."""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import assert_error
from tests.fixtures import write_bag
from tests.workers.api_helpers import register_cohort, run_job


@pytest.fixture
def model_id(client, admin, world, family) -> str:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    return run_job(client, admin, family, cohort["id"])["model_id"]


def _post(client, headers, model_id, path, **form):
    files = [("files", (path.name, path.read_bytes(), "application/octet-stream"))]
    return client.post("/predict", headers=headers, data={"model_id": model_id, **form}, files=files)


def test_predict_curve_image(client, predict, model_id, tmp_path) -> None:
    bag = write_bag(tmp_path / "caseA.h5", 10, 16, seed=1)
    plain = _post(client, predict, model_id, bag)
    assert plain.status_code == 200 and plain.json()["results"][0]["curve_image"] is None

    r = _post(client, predict, model_id, bag, curve_image="svg")
    assert r.status_code == 200, r.text
    patient = r.json()["results"][0]
    image = patient["curve_image"]
    assert image["format"] == "svg" and image["media_type"] == "image/svg+xml"
    svg = base64.b64decode(image["data"]).decode()
    assert "<svg" in svg and f"caseA: predicted survival (risk {patient['risk']:.3f})" in svg
    assert patient["risk"] == pytest.approx(plain.json()["results"][0]["risk"])

    png = _post(client, predict, model_id, bag, curve_image="png").json()["results"][0]["curve_image"]
    assert base64.b64decode(png["data"])[:4] == b"\x89PNG" and png["media_type"] == "image/png"
    assert_error(_post(client, predict, model_id, bag, curve_image="gif"), 422)
