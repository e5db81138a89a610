"""POST/GET /bases through HTTP: dims read from the file, bin edges, bad files refused with nothing stored."""

from __future__ import annotations

import hashlib

import torch

from app.db import repositories as repo
from app.services.bases import load_state
from tests.api.conftest import assert_error, snapshot, upload
from tests.fixtures import DIMS, base_state, write_pth, write_safetensors


def test_register_base_reads_dims_and_default_edges(client, admin, world):
    r = client.post("/bases", headers=admin, files=upload(world.base), data={"name": "tiny", "encoder": "uni2-h"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("base_")
    assert body["dims"] == {"in_dim": 16, "hidden_dim": 8, "attn_dim": 4, "n_bins": 4, "dropout": 0.25}
    assert body["bin_edges"] == [0.0, 365.0, 730.0, 1095.0, 1460.0]
    assert body["sha256"] == hashlib.sha256(world.base.read_bytes()).hexdigest()
    assert body["encoder"] == "uni2-h" and body["name"] == "tiny"
    got = client.get(f"/bases/{body['id']}", headers=admin).json()
    assert got == body
    listing = client.get("/bases", headers=admin).json()
    assert listing["total"] == 1 and [b["id"] for b in listing["items"]] == [body["id"]]


def test_register_base_from_reference_pth_with_bin_width(client, admin, tmp_path, ctx):
    pth = write_pth(tmp_path / "null_model.pth", base_state(seed=3))
    r = client.post(
        "/bases",
        headers=admin,
        files=upload(pth),
        data={"name": "ref", "encoder": "uni2-h", "bin_width_days": "30", "n_bins": "4"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["bin_edges"] == [0.0, 30.0, 60.0, 90.0, 120.0]
    with ctx.session() as sess:
        row = repo.get_base(sess, base_id=body["id"])
    assert row.artifact_key != row.sha256  # the .pth was converted to safetensors
    stored = load_state(ctx, row.artifact_key)
    expected = base_state(seed=3)
    assert set(stored) == set(expected)
    assert all(torch.equal(stored[k], expected[k]) for k in expected)


def test_n_bins_mismatch_is_400(client, admin, world, ctx):
    before = snapshot(ctx)
    r = client.post(
        "/bases", headers=admin, files=upload(world.base), data={"name": "x", "encoder": "e", "n_bins": "32"}
    )
    assert_error(r, 400, "invalid_input", contains=("n_bins = 32", "4 outputs"))
    assert snapshot(ctx) == before


def test_base_with_nan_refused(client, admin, tmp_path, ctx):
    state = base_state()
    state["attention_net.attention_c.weight"][0, 1] = float("nan")
    path = write_safetensors(tmp_path / "nan.safetensors", state)
    before = snapshot(ctx)
    r = client.post("/bases", headers=admin, files=upload(path), data={"name": "x", "encoder": "e"})
    assert_error(r, 422, "incompatible_checkpoint", contains=("attention_net.attention_c.weight", "non-finite"))
    assert snapshot(ctx) == before


def test_base_missing_key_refused(client, admin, tmp_path, ctx):
    state = base_state()
    del state["pred_head.bias"]
    path = write_safetensors(tmp_path / "partial.safetensors", state)
    before = snapshot(ctx)
    r = client.post("/bases", headers=admin, files=upload(path), data={"name": "x", "encoder": "e"})
    assert_error(r, 422, "bad_checkpoint", contains="pred_head.bias")
    assert snapshot(ctx) == before


def test_base_extra_key_refused(client, admin, tmp_path, ctx):
    state = base_state()
    state["classifier.weight"] = torch.zeros(2, 2)
    path = write_safetensors(tmp_path / "extra.safetensors", state)
    r = client.post("/bases", headers=admin, files=upload(path), data={"name": "x", "encoder": "e"})
    assert_error(r, 422, "bad_checkpoint", contains="classifier.weight")
    assert snapshot(ctx)[0]["bases"] == 0


def test_garbage_pth_and_garbage_safetensors_refused(client, admin, tmp_path, ctx):
    before = snapshot(ctx)
    for name in ("junk.pth", "junk.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"this is not a checkpoint at all" * 10)
        r = client.post("/bases", headers=admin, files=upload(path), data={"name": "x", "encoder": "e"})
        err = assert_error(r, 422, "bad_checkpoint")
        assert name in err["message"]
    assert snapshot(ctx) == before


def test_unsupported_suffix_refused(client, admin, tmp_path, ctx):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 64)
    r = client.post("/bases", headers=admin, files=upload(path), data={"name": "x", "encoder": "e"})
    assert_error(r, 400, "invalid_input", contains=("weights.bin", ".safetensors", ".pth"))
    assert snapshot(ctx)[1] == 0


def test_missing_form_field_is_422_validation(client, admin, world):
    r = client.post("/bases", headers=admin, files=upload(world.base), data={"name": "x"})
    err = assert_error(r, 422, "validation_error", contains="encoder")
    assert any(p["loc"][-1] == "encoder" for p in err["details"])


def test_unknown_base_is_404(client, admin):
    r = client.get("/bases/base_nope", headers=admin)
    assert_error(r, 404, "not_found", contains="base_nope")


def test_dims_follow_the_file(client, admin, tmp_path):
    from dataclasses import replace

    state = base_state(replace(DIMS, in_dim=24, n_bins=6))
    path = write_safetensors(tmp_path / "d24.safetensors", state)
    r = client.post("/bases", headers=admin, files=upload(path), data={"name": "d24", "encoder": "e"})
    assert r.status_code == 201, r.text
    assert r.json()["dims"]["in_dim"] == 24 and len(r.json()["bin_edges"]) == 7


def test_the_same_family_registered_twice_returns_the_existing_base(client, admin, world, ctx):
    def post(**data):
        return client.post("/bases", headers=admin, files=upload(world.base), data={"name": "tiny", **data})

    first = post(encoder="uni2-h")
    assert first.status_code == 201, first.text
    objects = ctx.store.count_objects()
    again = post(encoder="uni2-h")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["location"] == f"/bases/{first.json()['id']}"
    assert ctx.store.count_objects() == objects
    # other bin edges or another encoder make another family
    wider = post(encoder="uni2-h", bin_width_days="30")
    other = post(encoder="conch")
    assert wider.status_code == other.status_code == 201
    assert len({first.json()["id"], wider.json()["id"], other.json()["id"]}) == 3
    assert client.get("/bases", headers=admin).json()["total"] == 3


def test_a_nan_bin_width_is_called_not_finite(client, admin, world):
    r = client.post("/bases", headers=admin, files=upload(world.base),
                    data={"name": "x", "encoder": "e", "bin_width_days": "nan"})  # fmt: skip
    assert_error(r, 422, contains="finite")
