"""HTTP: the two fast ways to score (issue 7) — POST /predict/bag (one bag as the raw body) and POST /predict/paths
(bags already under STEPH_DATA_ROOT) give the same answers as multipart POST /predict, and refuse bad input with
the right status without leaving temp files or touching anything stored."""

from __future__ import annotations

import shutil

import pytest

from tests.api.conftest import assert_error, snapshot
from tests.api.test_predict import files, tmp_entries

RAW = {"Content-Type": "application/octet-stream"}


def _multipart(client, predict, model_id, name, data, **form):
    r = client.post("/predict", headers=predict, data={"model_id": model_id, **form}, files=files((name, data)))
    assert r.status_code == 200, r.text
    return r.json()


def test_raw_body_scores_like_multipart(client, predict, model_id, bags) -> None:
    a = bags["a"].read_bytes()
    want = _multipart(client, predict, model_id, "caseA.h5", a, top_patches="2")
    r = client.post(
        "/predict/bag",
        params={"model_id": model_id, "filename": "caseA.h5", "top_patches": 2},
        content=a,
        headers={**predict, **RAW},
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["model_id"] == model_id and got["method"] == want["method"] == "steph"
    (res,) = got["results"]
    (ref,) = want["results"]
    assert res["patient_id"] == "caseA" and res["files"] == ["caseA.h5"] and res["n_patches"] == 10
    assert res["risk"] == pytest.approx(ref["risk"], abs=1e-6)
    assert res["survival"] == ref["survival"] and res["top_patches"] == ref["top_patches"]
    r = client.post(
        "/predict/bag",
        params={"model_id": model_id, "filename": "caseA.h5", "patient_id": "P7", "curve_image": "svg"},
        content=a,
        headers={**predict, **RAW},
    )
    (res,) = r.json()["results"]
    assert res["patient_id"] == "P7" and res["curve_image"]["format"] == "svg"
    assert tmp_entries(client) == []


@pytest.mark.parametrize(
    ("params", "body", "headers", "status", "needles"),
    [
        ({"filename": "caseA.h5"}, b"", RAW, 422, ("empty",)),
        ({"filename": "slide.txt"}, b"not features", RAW, 422, ("slide.txt",)),
        ({"filename": "wide.h5"}, "wide", RAW, 422, ("wide.h5", "18")),
        ({"filename": "nanbag.h5"}, "nan", RAW, 422, ("nanbag.h5", "nan")),
        ({"filename": "caseA.h5"}, "a", {"Content-Type": "multipart/form-data; boundary=x"}, 415, ("POST /predict",)),
        ({"filename": "caseA.h5", "model_id": "model_nope"}, "a", RAW, 404, ("model_nope",)),
        ({"filename": "caseA.h5", "top_patches": 5000}, "a", RAW, 422, ("top_patches",)),
    ],
)
def test_raw_body_bad_input(client, predict, model_id, bags, params, body, headers, status, needles) -> None:
    data = {"a": bags["a"].read_bytes(), "wide": bags["wide"].read_bytes(), "nan": bags["nan"].read_bytes()}
    content = data[body] if isinstance(body, str) else body
    before = snapshot(client.app.state.ctx)
    r = client.post(
        "/predict/bag", params={"model_id": model_id, **params}, content=content, headers={**predict, **headers}
    )
    assert_error(r, status, contains=needles)
    assert snapshot(client.app.state.ctx) == before and tmp_entries(client) == []


def test_raw_body_size_limit_and_auth(client, predict, model_id, bags) -> None:
    ctx = client.app.state.ctx
    a = bags["a"].read_bytes()
    old = ctx.settings.max_upload_mb
    ctx.settings.max_upload_mb = (len(a) - 1) / 2**20
    try:
        r = client.post("/predict/bag", params={"model_id": model_id}, content=a, headers={**predict, **RAW})
        assert_error(r, 413, contains="STEPH_MAX_UPLOAD_MB")
    finally:
        ctx.settings.max_upload_mb = old
    assert tmp_entries(client) == []
    r = client.post("/predict/bag", params={"model_id": model_id}, content=a, headers=RAW)
    assert r.status_code == 401


def test_paths_are_off_by_default_then_confined_to_the_data_root(client, predict, model_id, bags, tmp_path) -> None:
    ctx = client.app.state.ctx
    root = ctx.settings.data_root
    (root / "slides").mkdir(parents=True, exist_ok=True)
    shutil.copy(bags["a"], root / "slides" / "caseA.h5")
    shutil.copy(bags["b"], root / "slides" / "caseB.h5")
    body = {"model_id": model_id, "paths": ["slides/caseA.h5"]}
    assert_error(client.post("/predict/paths", headers=predict, json=body), 403, contains="STEPH_PREDICT_PATHS")
    ctx.settings.predict_paths = True
    try:
        r = client.post("/predict/paths", headers=predict, json=body)
        assert r.status_code == 200, r.text
        (res,) = r.json()["results"]
        (ref,) = _multipart(client, predict, model_id, "caseA.h5", bags["a"].read_bytes())["results"]
        assert res["patient_id"] == "caseA" and res["files"] == ["caseA.h5"]
        assert res["risk"] == pytest.approx(ref["risk"], abs=1e-6)
        both = {
            "model_id": model_id,
            "paths": [str(root / "slides" / "caseA.h5"), "slides/caseB.h5"],
            "patient_id": "P",
        }
        (pooled,) = client.post("/predict/paths", headers=predict, json=both).json()["results"]
        assert pooled["patient_id"] == "P" and pooled["n_patches"] == 16
        before = snapshot(ctx)
        outside = tmp_path / "outside.h5"
        shutil.copy(bags["a"], outside)
        (root / "slides" / "link.h5").symlink_to(outside)
        for paths, status, needle in [
            ([str(outside)], 422, "data root"),  # one file is wrong (422), not the key or the server (403)
            (["../outside.h5"], 422, "data root"),
            (["slides/link.h5"], 422, "data root"),  # a link out of the root is followed, then refused
            (["slides/missing.h5"], 422, "missing.h5"),
            (["slides"], 422, "slides"),
        ]:
            r = client.post("/predict/paths", headers=predict, json={"model_id": model_id, "paths": paths})
            err = assert_error(r, status, contains=(needle,))
            assert str(tmp_path) not in err["message"]  # no server paths echoed back
        r = client.post("/predict/paths", headers=predict, json={"model_id": model_id, "paths": []})
        assert r.status_code == 422
        assert snapshot(ctx) == before
        ctx.settings.data_root = None
        assert_error(client.post("/predict/paths", headers=predict, json=body), 403, contains="STEPH_DATA_ROOT")
    finally:
        ctx.settings.predict_paths = False
        ctx.settings.data_root = root
