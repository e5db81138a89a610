"""HTTP: the model registry — names, versions, aliases (moved atomically, history), references in /predict."""

from __future__ import annotations

import pytest

from app.db.models import Model, utcnow
from app.db.repositories import list_api_keys, new_id
from app.services.registry import resolve_model_ref
from tests.api.conftest import assert_error
from tests.workers.api_helpers import register_cohort, run_job


def fake_model(ctx, family: dict) -> str:
    """A models row (no artifact: enough for the registry, not for /predict)."""
    with ctx.session() as s:
        row = Model(
            id=new_id("model"),
            method="steph",
            base_id=family["base"]["id"],
            target_checkpoint_id=family["checkpoints"]["brca"]["id"],
            params={},
            sources=[],
            provenance={},
            artifact_sha256="0" * 64,
            artifact_key="0" * 64,
            created_at=utcnow(),
        )
        s.add(row)
    return row.id


@pytest.fixture
def three(ctx, family) -> list[str]:
    return [fake_model(ctx, family) for _ in range(3)]


def test_versions_number_up_and_aliases_move_with_history(client, admin, predict, ctx, three) -> None:
    r = client.post("/registered-models", headers=admin, json={"name": "brca", "description": "d", "tags": {"a": "1"}})
    assert r.status_code == 201 and r.json()["versions"] == [], r.text
    assert_error(client.post("/registered-models", headers=admin, json={"name": "brca"}), 409, contains="exists")
    versions = []
    for i, mid in enumerate(three):
        body = {"model_id": mid, "aliases": ["candidate"] if i == 0 else []}
        r = client.post("/registered-models/brca/versions", headers=admin, json=body)
        assert r.status_code == 201, r.text
        versions.append(r.json())
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["aliases"] == ["candidate"] and versions[0]["created_by"] == "bootstrap admin"

    r = client.put("/registered-models/brca/aliases/champion", headers=admin, json={"version": 2})
    assert r.status_code == 200 and r.json()["previous_version"] is None and r.json()["model_id"] == three[1]
    r = client.put("/registered-models/brca/aliases/champion", headers=admin, json={"version": 3})
    assert r.json()["previous_version"] == 2
    got_alias = client.get("/registered-models/brca/aliases/champion", headers=admin).json()
    assert r.json()["updated_at"] and r.json()["updated_at"] == got_alias["updated_at"]  # was null in the PUT
    assert_error(client.put("/registered-models/brca/aliases/champion", headers=admin, json={"version": 9}), 404)
    assert_error(client.put("/registered-models/brca/aliases/champion", headers=predict, json={"version": 1}), 403)

    got = client.get("/registered-models/brca", headers=predict).json()
    assert got["aliases"] == {"candidate": 1, "champion": 3} and got["tags"] == {"a": "1"}
    assert [v["aliases"] for v in got["versions"]] == [["candidate"], [], ["champion"]]

    hist = client.get("/registered-models/brca/alias-history", headers=predict, params={"alias": "champion"}).json()
    assert [(e["from_version"], e["to_version"]) for e in hist["items"]] == [(None, 2), (2, 3)]
    with ctx.session() as s:
        admin_key_id = next(k.id for k in list_api_keys(s) if k.scope == "admin")
    assert {e["actor_key_id"] for e in hist["items"]} == {admin_key_id}
    assert all(e["actor"] == "bootstrap admin" and e["at"] for e in hist["items"])

    # resolution: every reference form names the right row
    with ctx.session() as s:
        assert resolve_model_ref(s, "brca@champion").id == three[2]
        assert resolve_model_ref(s, "brca/1").id == three[0]
        assert resolve_model_ref(s, "brca/latest").id == three[2]
        assert resolve_model_ref(s, "brca").id == three[2]
        assert resolve_model_ref(s, three[1]).id == three[1]
    r = client.get("/model-refs/resolve", headers=predict, params={"ref": "brca@candidate"})
    assert r.status_code == 200 and r.json()["id"] == three[0]
    assert_error(client.get("/model-refs/resolve", headers=predict, params={"ref": "brca@nope"}), 404, contains="nope")
    assert_error(client.get("/model-refs/resolve", headers=predict, params={"ref": "brca/x"}), 400)

    # delete the alias → recorded with to_version None; the version it held can go afterwards
    assert_error(client.delete("/registered-models/brca/versions/1", headers=admin), 409, contains="candidate")
    assert client.delete("/registered-models/brca/aliases/candidate", headers=admin).status_code == 204
    last = client.get("/registered-models/brca/alias-history", headers=admin).json()["items"][-1]
    assert (last["alias"], last["from_version"], last["to_version"]) == ("candidate", 1, None)
    assert client.delete("/registered-models/brca/versions/1", headers=admin).status_code == 204
    r = client.post("/registered-models/brca/versions", headers=admin, json={"model_id": three[0]})
    assert r.json()["version"] == 4  # numbers are never reused


def test_patch_tags_and_validation(client, admin, three) -> None:
    r = client.post("/registered-models/luad/versions", headers=admin, json={"model_id": three[0], "tags": {"k": "v"}})
    assert r.status_code == 201 and r.json()["ref"] == "luad/1"  # name created on first use
    r = client.patch("/registered-models/luad", headers=admin, json={"tags": {"x": "y"}, "description": "new"})
    assert r.json()["tags"] == {"x": "y"} and r.json()["description"] == "new"
    r = client.patch("/registered-models/luad/versions/1", headers=admin, json={"tags": {"ok": "1"}})
    assert r.json()["tags"] == {"ok": "1"}
    assert_error(client.post("/registered-models", headers=admin, json={"name": "a@b"}), 422)
    assert_error(client.put("/registered-models/luad/aliases/latest", headers=admin, json={"version": 1}), 400)
    assert_error(client.post("/registered-models/luad/versions", headers=admin, json={"model_id": "model_x"}), 404)
    assert client.put("/registered-models/luad/aliases/prod", headers=admin, json={"version": 1}).status_code == 200
    assert_error(client.delete("/registered-models/luad", headers=admin), 409, contains="luad@prod")
    assert client.delete("/registered-models/luad/aliases/prod", headers=admin).status_code == 204
    assert client.delete("/registered-models/luad", headers=admin).status_code == 204
    assert_error(client.get("/registered-models/luad", headers=admin), 404)
    assert client.get(f"/models/{three[0]}", headers=admin).status_code == 200  # the model stays


def test_predict_accepts_alias_and_version(client, admin, predict, world, family) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    job = run_job(client, admin, family, cohort["id"])
    mid = job["model_id"]
    body = {"model_id": mid, "aliases": ["champion"], "allow_not_promoted": True}  # a tiny world: the gate may refuse
    assert client.post("/registered-models/brca/versions", headers=admin, json=body).status_code == 201
    files = [("files", ("p1.npy", _bag_bytes(), "application/octet-stream"))]
    results = {}
    for ref in (mid, "brca@champion", "brca/1"):
        r = client.post("/predict", headers=predict, data={"model_id": ref}, files=files)
        assert r.status_code == 200, r.text
        assert r.json()["model_id"] == mid
        results[ref] = r.json()["results"][0]["risk"]
    assert len(set(results.values())) == 1
    assert_error(client.post("/predict", headers=predict, data={"model_id": "brca@gone"}, files=files), 404)


def _bag_bytes() -> bytes:
    import io

    import numpy as np

    arr = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_an_alias_points_at_a_not_promoted_model_only_when_asked(client, admin, ctx, family) -> None:
    """The promotion gate's `not_promoted` keeps a model out of the aliases clients predict with, unless the admin
    says so explicitly; the refusal names the model and the gate's reason, and nothing moves."""
    good, bad = fake_model(ctx, family), fake_model(ctx, family)
    with ctx.session() as s:
        row = s.get(Model, bad)
        row.promotion_status = "not_promoted"
        row.promotion = {"status": "not_promoted", "reason": "inner-CV difference -0.02 is below the margin 0"}
    for mid in (good, bad):
        assert client.post("/registered-models/brca/versions", headers=admin, json={"model_id": mid}).status_code == 201
    assert client.put("/registered-models/brca/aliases/champion", headers=admin, json={"version": 1}).status_code == 200
    r = client.put("/registered-models/brca/aliases/champion", headers=admin, json={"version": 2})
    assert_error(r, 409, contains=(bad, "not promoted", "below the margin", "allow_not_promoted"))
    assert client.get("/registered-models/brca", headers=admin).json()["aliases"] == {"champion": 1}
    body = {"model_id": bad, "aliases": ["candidate"]}
    assert_error(
        client.post("/registered-models/brca/versions", headers=admin, json=body), 409, contains="not promoted"
    )
    assert [v["version"] for v in client.get("/registered-models/brca", headers=admin).json()["versions"]] == [1, 2]
    r = client.put(
        "/registered-models/brca/aliases/champion", headers=admin, json={"version": 2, "allow_not_promoted": True}
    )
    assert r.status_code == 200 and r.json()["previous_version"] == 1 and r.json()["model_id"] == bad


def test_version_numbers_past_the_integer_column_are_404_not_500(client, admin, predict, three) -> None:
    assert client.post("/registered-models", headers=admin, json={"name": "big"}).status_code == 201
    assert client.post("/registered-models/big/versions", headers=admin, json={"model_id": three[0]}).status_code == 201
    huge = 2**63  # one past what a BIGINT (and SQLite's INTEGER) holds
    for v in (huge, 10**23):
        r = client.get(f"/registered-models/big/versions/{v}", headers=predict)
        assert_error(r, 404, contains=f"no version {v}")
        assert_error(client.patch(f"/registered-models/big/versions/{v}", headers=admin, json={"tags": {}}), 404)
        assert_error(client.delete(f"/registered-models/big/versions/{v}", headers=admin), 404)
        r = client.put("/registered-models/big/aliases/champ", headers=admin, json={"version": v})
        assert_error(r, 404, contains=f"no version {v}")
        assert_error(client.get("/model-refs/resolve", headers=predict, params={"ref": f"big/{v}"}), 404)
        r = client.post("/predict", headers=predict, data={"model_id": f"big/{v}"},
                        files=[("files", ("p.npy", _bag_bytes(), "application/octet-stream"))])  # fmt: skip
        assert_error(r, 404, contains=f"no version {v}")
    assert client.get("/registered-models/big/versions/1", headers=predict).status_code == 200


def test_a_name_keeps_one_feature_size(client, admin, ctx, family, three) -> None:
    from app.db.models import ModelBase

    with ctx.session() as s:
        base = s.get(ModelBase, family["base"]["id"])
        other = ModelBase(id=new_id("base"), name="wide", encoder="other-32", dims={**base.dims, "in_dim": 32},
                          bin_edges=list(base.bin_edges), sha256="1" * 64, artifact_key="1" * 64)  # fmt: skip
        s.add(other)
    wide = fake_model(ctx, family)
    with ctx.session() as s:
        s.get(Model, wide).base_id = other.id
    assert (
        client.post("/registered-models/dims/versions", headers=admin, json={"model_id": three[0]}).status_code == 201
    )
    r = client.post("/registered-models/dims/versions", headers=admin, json={"model_id": wide})
    assert_error(r, 422, contains="reads 32-dimensional features, but the versions of 'dims' read 16")
    assert (
        client.post("/registered-models/dims/versions", headers=admin, json={"model_id": three[1]}).status_code == 201
    )
    assert client.post("/registered-models/wide/versions", headers=admin, json={"model_id": wide}).status_code == 201
    assert [v["version"] for v in client.get("/registered-models/dims", headers=admin).json()["versions"]] == [1, 2]


def test_a_json_body_sent_without_its_content_type_says_so(client, admin, three) -> None:
    assert client.post("/registered-models/ct/versions", headers=admin, json={"model_id": three[0]}).status_code == 201
    r = client.put("/registered-models/ct/aliases/champion", headers={**admin, "Content-Type":
                   "application/x-www-form-urlencoded"}, content=b'{"version": 1}')  # fmt: skip
    assert_error(r, 422, contains="Content-Type: application/json")
    r = client.put("/registered-models/ct/aliases/champion", headers=admin, json={"version": "one"})
    assert "Content-Type" not in r.json()["error"]["message"]  # a real JSON body with a wrong value: no hint


def test_names_differing_only_in_case_are_refused(client, admin, three) -> None:
    assert client.post("/registered-models", headers=admin, json={"name": "Lung"}).status_code == 201
    assert_error(client.post("/registered-models", headers=admin, json={"name": "lung"}), 409, contains="'Lung'")
    r = client.post("/registered-models/LUNG/versions", headers=admin, json={"model_id": three[0]})
    assert_error(r, 409, contains="only in case")
    r = client.post("/registered-models/Lung/versions", headers=admin, json={"model_id": three[0]})
    assert r.status_code == 201


def test_versions_and_alias_history_are_paged_newest_first_on_request(client, admin, predict, three) -> None:
    for model_id in three:  # versions 1..3
        r = client.post("/registered-models/brca/versions", headers=admin, json={"model_id": model_id})
        assert r.status_code == 201, r.text
    for version in (1, 2, 3, 1):  # champion: created at 1, then 1→2, 2→3, 3→1
        r = client.put("/registered-models/brca/aliases/champion", headers=admin, json={"version": version})
        assert r.status_code == 200, r.text
    r = client.put("/registered-models/brca/aliases/candidate", headers=admin, json={"version": 2})
    assert r.status_code == 200, r.text

    url = "/registered-models/brca/versions"
    r = client.get(url, headers=predict)
    assert [v["version"] for v in r.json()] == [1, 2, 3] and r.headers["X-Total-Count"] == "3"  # unchanged default
    r = client.get(url, headers=predict, params={"order": "desc", "limit": 2})
    assert [v["version"] for v in r.json()] == [3, 2] and r.headers["X-Total-Count"] == "3"
    r = client.get(url, headers=predict, params={"order": "desc", "limit": 2, "offset": 2})
    assert [v["version"] for v in r.json()] == [1]
    assert client.get(url, headers=predict, params={"offset": 5}).json() == []

    url = "/registered-models/brca/alias-history"
    everything = client.get(url, headers=predict).json()
    assert everything["total"] == 5 and everything["limit"] is None and len(everything["items"]) == 5
    moves = [(e["alias"], e["from_version"], e["to_version"]) for e in everything["items"]]
    assert moves == [("champion", None, 1), ("champion", 1, 2), ("champion", 2, 3), ("champion", 3, 1),
                     ("candidate", None, 2)]  # fmt: skip
    newest = client.get(url, headers=predict, params={"order": "desc", "limit": 2}).json()
    assert newest["total"] == 5 and newest["limit"] == 2
    assert [(e["alias"], e["to_version"]) for e in newest["items"]] == [("candidate", 2), ("champion", 1)]
    page = client.get(url, headers=predict, params={"alias": "champion", "limit": 2, "offset": 1}).json()
    assert page["total"] == 4 and [(e["from_version"], e["to_version"]) for e in page["items"]] == [(1, 2), (2, 3)]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"order": "newest"}):
        assert_error(client.get(url, headers=predict, params=bad), 422)
        assert_error(client.get("/registered-models/brca/versions", headers=predict, params=bad), 422)
