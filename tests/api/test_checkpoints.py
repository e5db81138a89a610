"""POST/GET/DELETE /checkpoints: τ stored and its norms, dedup by bytes, 409 while used, bad files refused."""

from __future__ import annotations

import hashlib

import pytest
import torch
from fastapi.testclient import TestClient

from app.db import repositories as repo
from app.db.models import MergeJob, Model
from app.services.bases import load_state
from tests.api.conftest import assert_error, snapshot, upload
from tests.fixtures import base_state, checkpoint_state, write_pth, write_safetensors


def test_register_stores_checkpoint_and_task_vector(client, admin, family, world, ctx):
    ck = family["checkpoints"]["brca"]
    assert ck["id"].startswith("ckpt_") and ck["cancer"] == "brca" and ck["base_id"] == family["base"]["id"]
    assert ck["sha256"] == hashlib.sha256(world.checkpoints["brca"].read_bytes()).hexdigest()
    tv_expected = {k: world.checkpoint_states["brca"][k] - world.base_state[k] for k in world.base_state}
    for key, tensor in tv_expected.items():
        assert ck["tv_norms"][key] == pytest.approx(float(torch.linalg.vector_norm(tensor)), rel=1e-5)
    with ctx.session() as s:
        row = repo.get_checkpoint(s, checkpoint_id=ck["id"])
    tv = load_state(ctx, row.task_vector_key)
    assert all(torch.allclose(tv[k], tv_expected[k], atol=1e-7) for k in tv_expected)
    assert row.artifact_key == ck["sha256"]  # a .safetensors upload is stored byte for byte
    assert client.get(f"/checkpoints/{ck['id']}", headers=admin).json() == ck


def test_same_bytes_twice_returns_existing_with_200(client, admin, family, world, ctx):
    before = snapshot(ctx)
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(world.checkpoints["luad"], "renamed.safetensors"),
        data={"cancer": "luad", "base_id": family["base"]["id"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == family["checkpoints"]["luad"]["id"]
    assert snapshot(ctx) == before


def test_reference_pth_checkpoint_is_converted(client, admin, family, tmp_path, world):
    state = checkpoint_state(world.base_state, seed=7)
    pth = write_pth(tmp_path / "coad.pth", state)
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(pth),
        data={
            "cancer": "coad",
            "base_id": family["base"]["id"],
            "name": "COAD v1",
            "description": "from the reference code",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "COAD v1" and body["description"] == "from the reference code"
    assert body["sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
    expected = float(torch.linalg.vector_norm(state["pred_head.bias"] - world.base_state["pred_head.bias"]))
    assert body["tv_norms"]["pred_head.bias"] == pytest.approx(expected, rel=1e-5)


def test_list_filters_by_base_and_cancer(client, admin, family):
    base_id = family["base"]["id"]
    all_ = client.get("/checkpoints", headers=admin, params={"base_id": base_id}).json()
    assert all_["total"] == 3 and {c["cancer"] for c in all_["items"]} == {"brca", "luad", "kirc"}
    one = client.get("/checkpoints", headers=admin, params={"cancer": "kirc"}).json()
    assert [c["id"] for c in one["items"]] == [family["checkpoints"]["kirc"]["id"]]
    none = client.get("/checkpoints", headers=admin, params={"base_id": "base_other"}).json()
    assert none == {"items": [], "total": 0, "limit": 100, "offset": 0}
    page = client.get("/checkpoints", headers=admin, params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 1


@pytest.mark.parametrize(
    "mutate, contains",
    [
        (
            lambda s: s.update({"feat_proj.0.weight": torch.zeros(8, 12)}),
            ("feat_proj.0.weight", "[8, 12]", "[8, 16]"),
        ),
        (
            lambda s: s.pop("attention_net.attention_b.0.bias"),
            ("missing key", "attention_net.attention_b.0.bias"),
        ),
        (lambda s: s.update({"extra.weight": torch.zeros(1)}), ("unexpected key", "extra.weight")),
        (lambda s: s.update({"pred_head.bias": torch.zeros(4, dtype=torch.float64)}), ("dtype", "float64")),
        (
            lambda s: s["pred_head.weight"].__setitem__((0, 0), float("inf")),
            ("pred_head.weight", "non-finite"),
        ),
        (  # finite, but every norm and sum of it overflows float32 (was a 500 after the row was stored)
            lambda s: s.update({k: torch.full_like(v, 1e38) for k, v in s.items()}),
            ("magnitude 1e+38", "limit"),
        ),
    ],
)
def test_incompatible_checkpoint_refused_and_nothing_stored(client, admin, family, tmp_path, ctx, mutate, contains):
    state = checkpoint_state(base_state(), seed=11)
    mutate(state)
    path = write_safetensors(tmp_path / "bad.safetensors", state)
    before = snapshot(ctx)
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(path),
        data={"cancer": "bad", "base_id": family["base"]["id"]},
    )
    assert_error(r, 422, "incompatible_checkpoint", contains=contains)
    assert snapshot(ctx) == before


def test_bad_pth_refused(client, admin, family, tmp_path, ctx):
    path = tmp_path / "evil.pth"
    path.write_bytes(b"\x80\x04garbage that is not a zip nor a pickle")
    before = snapshot(ctx)
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(path),
        data={"cancer": "x", "base_id": family["base"]["id"]},
    )
    assert_error(r, 422, "bad_checkpoint", contains="evil.pth")
    assert snapshot(ctx) == before


def test_unknown_base_404_and_blank_cancer_400(client, admin, world, family, ctx):
    before = snapshot(ctx)
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(world.checkpoints["brca"]),
        data={"cancer": "brca", "base_id": "base_missing"},
    )
    assert_error(r, 404, "not_found", contains="base_missing")
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(world.checkpoints["brca"]),
        data={"cancer": "   ", "base_id": family["base"]["id"]},
    )
    assert_error(r, 400, "invalid_input", contains="cancer")
    assert snapshot(ctx) == before


def test_delete_removes_row_and_objects(client, admin, family, ctx):
    ck = family["checkpoints"]["kirc"]
    rows, objects, _ = snapshot(ctx)
    r = client.delete(f"/checkpoints/{ck['id']}", headers=admin)
    assert r.status_code == 204
    rows2, objects2, _ = snapshot(ctx)
    assert rows2["checkpoints"] == rows["checkpoints"] - 1 and objects2 == objects - 2
    assert_error(client.get(f"/checkpoints/{ck['id']}", headers=admin), 404, "not_found")
    assert_error(client.delete(f"/checkpoints/{ck['id']}", headers=admin), 404, "not_found")


def _add_job(ctx, family, *, status, target, sources):
    with ctx.session() as s:
        cohort = repo.add_cohort(s, base_id=family["base"]["id"], name="c", source="path", location="/x", summary={})
        job = MergeJob(
            id=repo.new_id("job"),
            method="steph",
            base_id=family["base"]["id"],
            target_checkpoint_id=target,
            source_checkpoint_ids=sources,
            cohort_id=cohort.id,
            params={},
            status=status,
        )
        s.add(job)
    return job


@pytest.mark.parametrize("status, blocks", [("queued", True), ("running", True), ("failed", False)])
def test_delete_refused_while_a_job_uses_it(client, admin, family, ctx, status, blocks):
    ids = {c: v["id"] for c, v in family["checkpoints"].items()}
    job = _add_job(ctx, family, status=status, target=ids["brca"], sources=[ids["luad"]])
    r = client.delete(f"/checkpoints/{ids['luad']}", headers=admin)
    if blocks:
        err = assert_error(r, 409, "conflict", contains=(f"{status} job {job.id}",))
        assert err["details"] == {"used_by": [f"{status} job {job.id}"]}
        assert client.get(f"/checkpoints/{ids['luad']}", headers=admin).status_code == 200
    else:
        assert r.status_code == 204


def test_delete_refused_while_a_model_uses_it(client, admin, family, ctx):
    ids = {c: v["id"] for c, v in family["checkpoints"].items()}
    job = _add_job(ctx, family, status="succeeded", target=ids["brca"], sources=[ids["luad"]])
    with ctx.session() as s:
        s.add(
            Model(
                id="mdl_1",
                job_id=job.id,
                method="steph",
                base_id=family["base"]["id"],
                target_checkpoint_id=ids["brca"],
                params={},
                provenance={},
                artifact_sha256="0" * 64,
                artifact_key="0" * 64,
                sources=[{"checkpoint_id": ids["luad"], "cancer": "luad", "sha256": ""}],
            )
        )
    before = snapshot(ctx)
    for cancer in ("brca", "luad"):
        assert_error(
            client.delete(f"/checkpoints/{ids[cancer]}", headers=admin),
            409,
            "conflict",
            contains="model mdl_1",
        )
    assert snapshot(ctx) == before
    assert client.delete(f"/checkpoints/{ids['kirc']}", headers=admin).status_code == 204


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_pth_is_not_executed(client, admin, family, tmp_path, ctx):
    marker = tmp_path / "pwned"
    pth = tmp_path / "exploit.pth"
    torch.save({"model": _Exploit(str(marker))}, pth)
    before = snapshot(ctx)
    r = client.post(
        "/checkpoints",
        headers=admin,
        files=upload(pth),
        data={"cancer": "x", "base_id": family["base"]["id"]},
    )
    assert_error(r, 422, "bad_checkpoint", contains="exploit.pth")
    assert not marker.exists()
    assert snapshot(ctx) == before


def test_database_failure_leaves_no_store_objects(client, admin, family, tmp_path, ctx, monkeypatch):
    state = checkpoint_state(base_state(), seed=21)
    path = write_safetensors(tmp_path / "new.safetensors", state)
    before = snapshot(ctx)

    def fail(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(repo, "add_checkpoint", fail)
    c2 = TestClient(client.app, raise_server_exceptions=False)  # same started app, 500s rendered
    r = c2.post(
        "/checkpoints",
        headers=admin,
        files=upload(path),
        data={"cancer": "new", "base_id": family["base"]["id"]},
    )
    assert_error(r, 500, "internal_error")
    assert snapshot(ctx) == before


def test_checkpoint_trained_from_another_base_refused_and_nothing_stored(client, admin, family, tmp_path, ctx):
    """Same keys, shapes and dtypes, but trained from another initialisation: τ = θ − θ₀ would be noise that
    every merge mixes in silently. Refused with 422 naming the retention and how to fix it; nothing stored."""
    foreign = checkpoint_state(base_state(seed=5), seed=3)  # fine-tuned, but from another init of the family
    path = write_safetensors(tmp_path / "foreign.safetensors", foreign)
    before = snapshot(ctx)
    r = client.post(
        "/checkpoints", headers=admin, files=upload(path), data={"cancer": "coad", "base_id": family["base"]["id"]}
    )
    err = assert_error(r, 422, "incompatible_checkpoint", contains=("foreign.safetensors", "trained from this base"))
    assert "GET /bases" in err["message"] and "STEPH_MIN_BASE_RETENTION" in err["message"]
    assert snapshot(ctx) == before
    # the same file is accepted against the base it was trained from
    own_base = write_safetensors(tmp_path / "base5.safetensors", base_state(seed=5))
    rb = client.post(
        "/bases", headers=admin, files=upload(own_base), data={"name": "family from seed 5", "encoder": "test-16"}
    )
    assert rb.status_code in (200, 201), rb.text
    r = client.post(
        "/checkpoints", headers=admin, files=upload(path), data={"cancer": "coad", "base_id": rb.json()["id"]}
    )
    assert r.status_code == 201, r.text


def test_base_retention_check_can_be_turned_off(tmp_path, world):
    from app.main import create_app
    from app.settings import Settings

    (tmp_path / "data").mkdir()
    settings = Settings(home=tmp_path / "home", data_root=tmp_path / "data", device="cpu", min_base_retention=-1)
    with TestClient(create_app(settings)) as c:
        admin = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        rb = c.post("/bases", headers=admin, files=upload(world.base), data={"name": "tiny", "encoder": "test-16"})
        assert rb.status_code in (200, 201), rb.text
        path = write_safetensors(tmp_path / "foreign.safetensors", checkpoint_state(base_state(seed=5), seed=3))
        r = c.post("/checkpoints", headers=admin, files=upload(path), data={"cancer": "x", "base_id": rb.json()["id"]})
        assert r.status_code == 201, r.text


def test_the_same_weights_are_one_checkpoint_per_base(client, admin, family, world, tmp_path, ctx):
    """The same weights in other bytes (a .pth of a registered .safetensors) are the existing checkpoint (200),
    and registering them under another cancer is a 409 naming it — they used to become a second checkpoint, so
    a job could merge BRCA with itself as a 'source'. Nothing is stored by either."""
    brca = family["checkpoints"]["brca"]
    pth = write_pth(tmp_path / "brca_again.pth", world.checkpoint_states["brca"])
    before = snapshot(ctx)
    data = {"cancer": "brca", "base_id": brca["base_id"]}
    r = client.post("/checkpoints", headers=admin, files=upload(pth), data=data)
    assert r.status_code == 200 and r.json()["id"] == brca["id"], r.text
    assert snapshot(ctx) == before
    for path in (pth, world.checkpoints["brca"]):  # other bytes, and the very same bytes, under another cancer
        r = client.post("/checkpoints", headers=admin, files=upload(path),
                        data={"cancer": "cesc", "base_id": brca["base_id"]})  # fmt: skip
        err = assert_error(r, 409, "conflict", contains=(brca["id"], "for cancer 'brca'", "DELETE /checkpoints/"))
        assert "already registered" in err["message"]
    assert snapshot(ctx) == before


@pytest.mark.parametrize(
    ("make", "contains"),
    [
        (lambda base, tuned: {k: 1e5 * v for k, v in tuned.items()}, "times the size of the base's"),
        (lambda base, tuned: {k: v.clone() for k, v in base.items()}, "identical to its base"),
    ],
)
def test_rescaled_or_untrained_checkpoints_are_refused(client, admin, family, world, tmp_path, ctx, make, contains):
    state = make(world.base_state, checkpoint_state(world.base_state, seed=21))
    path = write_safetensors(tmp_path / "odd.safetensors", state)
    before = snapshot(ctx)
    r = client.post("/checkpoints", headers=admin, files=upload(path),
                    data={"cancer": "odd", "base_id": family["base"]["id"]})  # fmt: skip
    assert_error(r, 422, "incompatible_checkpoint", contains=("odd.safetensors", contains))
    assert snapshot(ctx) == before
