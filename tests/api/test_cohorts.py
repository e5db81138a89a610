"""POST/GET /cohorts: zip / tar.gz extracted safely, server paths under the data root, validation."""

from __future__ import annotations

import shutil
import tarfile
import zipfile

import pytest

from tests.api.conftest import assert_error, snapshot, upload
from tests.fixtures import tar_with_member, write_cohort, zip_dir


def _post_archive(client, admin, path, base_id, name="brca cohort"):
    return client.post("/cohorts", headers=admin, files=upload(path), data={"name": name, "base_id": base_id})


@pytest.mark.parametrize("archive", ["cohort_zip", "cohort_tar"])
def test_upload_archive_registers_summary(client, admin, family, world, ctx, archive):
    r = _post_archive(client, admin, getattr(world, archive), family["base"]["id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/cohorts/{body['id']}"
    summary = body["summary"]
    assert summary["patients"] == 8 and summary["slides"] == 8 and summary["events"] == 4
    assert summary["splits"]["train"] == 5 and summary["splits"]["test"] == 3
    assert 3 <= summary["patches"]["min"] <= summary["patches"]["median"] <= summary["patches"]["max"] <= 40
    assert body["source"] == "upload" and "location" not in body
    assert (ctx.store.cohort_dir(body["id"]) / "labels.csv").is_file()
    assert client.get(f"/cohorts/{body['id']}", headers=admin).json() == body
    assert client.get("/cohorts", headers=admin).json()["total"] == 1


def test_server_path_under_data_root(client, admin, family, settings, ctx):
    write_cohort(settings.data_root / "brca", n_patients=8)
    r = client.post("/cohorts", headers=admin, json={"name": "brca", "base_id": family["base"]["id"], "path": "brca"})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "path" and r.json()["summary"]["patients"] == 8
    assert ctx.store.count_cohorts() == 0  # used in place, not copied
    r2 = client.post(
        "/cohorts",
        headers=admin,
        json={"name": "abs", "base_id": family["base"]["id"], "path": str(settings.data_root / "brca")},
    )
    assert r2.status_code == 201, r2.text


def test_server_path_outside_data_root_is_403(client, admin, family, settings, tmp_path, ctx):
    outside = write_cohort(tmp_path / "elsewhere")
    (settings.data_root / "link").symlink_to(outside)
    before = snapshot(ctx)
    for path in (str(outside), "../elsewhere", "link"):
        r = client.post("/cohorts", headers=admin, json={"name": "x", "base_id": family["base"]["id"], "path": path})
        assert_error(r, 403, "forbidden", contains=("outside", "STEPH_DATA_ROOT"))
    assert snapshot(ctx) == before


def test_server_path_disabled_without_data_root(tmp_path, world):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(home=tmp_path / "h", data_root=None)
    with TestClient(create_app(settings)) as c:
        admin = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        r = c.post("/cohorts", headers=admin, json={"name": "x", "base_id": "base_x", "path": "/data"})
        # the base is checked first: an unknown base is 404 before the path is looked at
        assert_error(r, 404, "not_found")
        base = c.post("/bases", headers=admin, files=upload(world.base), data={"name": "b", "encoder": "e"}).json()
        r = c.post("/cohorts", headers=admin, json={"name": "x", "base_id": base["id"], "path": "/data"})
        assert_error(r, 403, "forbidden", contains="STEPH_DATA_ROOT")


def test_path_not_a_directory_is_400(client, admin, family, settings):
    r = client.post("/cohorts", headers=admin, json={"name": "x", "base_id": family["base"]["id"], "path": "nope"})
    assert_error(r, 400, "invalid_input", contains="not a directory")


def test_wrong_dimension_bags_are_422_listing_problems(client, admin, family, tmp_path, ctx):
    bad = write_cohort(tmp_path / "bad", bad_dim_slides=2)
    archive = zip_dir(bad, tmp_path / "bad.zip")
    before = snapshot(ctx)
    r = _post_archive(client, admin, archive, family["base"]["id"])
    err = assert_error(r, 422, "bad_cohort", contains=("S000", "S001", "17", "16"))
    assert "problem" in err["message"]
    assert snapshot(ctx) == before
    assert list(ctx.store.tmp_dir().iterdir()) == []  # extraction dir and upload removed


def test_nan_bag_and_missing_labels_are_422(client, admin, family, tmp_path, ctx):
    from tests.fixtures import write_bag

    nan = write_cohort(tmp_path / "nan", n_patients=4)
    write_bag(nan / "bags" / "S002.h5", 5, 16, seed=1, nan=True)
    no_labels = write_cohort(tmp_path / "nolabels", n_patients=4)
    (no_labels / "labels.csv").unlink()
    before = snapshot(ctx)
    r = _post_archive(client, admin, zip_dir(nan, tmp_path / "nan.zip"), family["base"]["id"])
    assert_error(r, 422, contains=("S002",))
    r = _post_archive(client, admin, zip_dir(no_labels, tmp_path / "nl.zip"), family["base"]["id"])
    assert_error(r, 422, contains="labels.csv")
    assert snapshot(ctx) == before


def test_garbage_archive_is_422(client, admin, family, tmp_path, ctx):
    before = snapshot(ctx)
    for name in ("junk.zip", "junk.tar.gz", "junk.tar"):
        path = tmp_path / name
        path.write_bytes(b"definitely not an archive" * 20)
        r = _post_archive(client, admin, path, family["base"]["id"])
        assert_error(r, 422, "unprocessable_input", contains="not a readable")
    assert snapshot(ctx) == before


@pytest.mark.parametrize(
    "member, kind, linkname, contains",
    [
        ("../evil.txt", tarfile.REGTYPE, "", "'..'"),
        ("/etc/evil.txt", tarfile.REGTYPE, "", "absolute"),
        ("cohort/labels.csv", tarfile.SYMTYPE, "/etc/passwd", "link"),
        ("cohort/hard", tarfile.LNKTYPE, "cohort/x", "link"),
        ("cohort/dev", tarfile.CHRTYPE, "", "device"),
    ],
)
def test_unsafe_tar_members_refused(client, admin, family, tmp_path, ctx, member, kind, linkname, contains):
    archive = tar_with_member(tmp_path / "evil.tar.gz", member, kind=kind, linkname=linkname)
    before = snapshot(ctx)
    r = _post_archive(client, admin, archive, family["base"]["id"])
    assert_error(r, 422, "unsafe_archive", contains=contains)
    assert snapshot(ctx) == before
    assert not (tmp_path / "evil.txt").exists() and not (ctx.store.root / "evil.txt").exists()


def test_zip_path_traversal_refused(client, admin, family, tmp_path, ctx):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cohort/labels.csv", "patient_id,pathology_id,t,e\n")
        zf.writestr("../../outside.txt", "gotcha")
    before = snapshot(ctx)
    r = _post_archive(client, admin, archive, family["base"]["id"])
    assert_error(r, 422, "unsafe_archive", contains="'..'")
    assert snapshot(ctx) == before
    assert not (ctx.store.root.parent / "outside.txt").exists()


def test_zip_bomb_capped_by_uncompressed_size(tmp_path, world):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(home=tmp_path / "h", max_archive_mb=0.05, max_archive_files=50)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cohort/zeros.bin", b"\0" * 2_000_000)  # ~2 KB compressed, 2 MB expanded
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(60):
            zf.writestr(f"cohort/f{i}.txt", "x")
    with TestClient(create_app(settings)) as c:
        admin = {"Authorization": f"Bearer {settings.admin_key_path.read_text().strip()}"}
        base = c.post("/bases", headers=admin, files=upload(world.base), data={"name": "b", "encoder": "e"}).json()
        ctx = c.app.state.ctx
        before = snapshot(ctx)
        assert_error(
            _post_archive(c, admin, bomb, base["id"]),
            413,
            "payload_too_large",
            contains=("0.05 MiB", "STEPH_MAX_ARCHIVE_MB"),
        )
        assert_error(
            _post_archive(c, admin, many, base["id"]),
            413,
            "payload_too_large",
            contains=("50 files", "STEPH_MAX_ARCHIVE_FILES"),
        )
        assert snapshot(ctx) == before
        assert list(ctx.store.tmp_dir().iterdir()) == []


def test_bad_requests(client, admin, family, world, tmp_path):
    base_id = family["base"]["id"]
    r = client.post("/cohorts", headers={**admin, "Content-Type": "text/plain"}, content=b"hello")
    assert_error(r, 400, "invalid_input", contains="multipart/form-data")
    r = client.post("/cohorts", headers=admin, json={"name": "x", "base_id": base_id})
    assert_error(r, 400, "invalid_input", contains="path")
    r = client.post("/cohorts", headers=admin, data={"name": "x", "base_id": base_id}, files={"other": ("a.txt", b"x")})
    assert_error(r, 400, "invalid_input", contains="'file'")
    copy = tmp_path / "cohort.rar"
    shutil.copy(world.cohort_zip, copy)
    assert_error(_post_archive(client, admin, copy, base_id), 400, "invalid_input", contains=".zip")
    assert_error(client.get("/cohorts/coh_missing", headers=admin), 404, "not_found", contains="coh_missing")


def test_upload_of_a_cohort_whose_bags_are_one_reference_lmdb(client, admin, family, tmp_path):
    """The reference code's layout: labels.csv + splits.csv + bags.lmdb/ (pickled tensors, read safely)."""
    import pickle

    import lmdb

    from app.io.bags import read_bag

    src = write_cohort(tmp_path / "files", n_patients=8)
    root = tmp_path / "ref"
    root.mkdir()
    for name in ("labels.csv", "splits.csv"):
        shutil.copy(src / name, root / name)
    env = lmdb.open(str(root / "bags.lmdb"), map_size=2**24)
    with env.begin(write=True) as txn:
        ids = []
        for bag in sorted((src / "bags").iterdir()):
            ids.append(bag.stem)
            txn.put(bag.stem.encode(), pickle.dumps(read_bag(bag).features.unsqueeze(0)))
        txn.put(b"__keys__", pickle.dumps(ids))
    env.close()
    r = _post_archive(client, admin, zip_dir(root, tmp_path / "ref.zip"), family["base"]["id"], name="ref")
    assert r.status_code == 201, r.text
    from_files = _post_archive(client, admin, zip_dir(src, tmp_path / "f.zip"), family["base"]["id"]).json()
    assert r.json()["summary"]["patches"] == from_files["summary"]["patches"]
    assert r.json()["summary"]["patients"] == 8


def test_an_uploaded_archive_keeps_only_the_bags_its_labels_name(client, admin, family, settings, tmp_path, ctx):
    """An archive of a whole slide folder for a few labelled patients: the extra bags are not kept in the store
    (the summary says so); a cohort registered by path (the user's own directory) is never pruned."""
    from tests.fixtures import write_bag

    directory = write_cohort(tmp_path / "cohort", n_patients=8, seed=3)
    for i in range(3):
        write_bag(directory / "bags" / f"EXTRA{i}.h5", 5, 16, seed=50 + i)
    r = _post_archive(client, admin, zip_dir(directory, tmp_path / "c.zip"), family["base"]["id"])
    assert r.status_code == 201, r.text
    kept = sorted(p.name for p in (ctx.store.cohort_dir(r.json()["id"]) / "bags").iterdir())
    assert kept == [f"S{i:03d}.h5" for i in range(8)]
    warnings = r.json()["summary"]["warnings"]
    assert any("3 bag file(s) that labels.csv does not name were not kept" in w for w in warnings)
    shutil.copytree(directory, settings.data_root / "mine")
    r = client.post("/cohorts", headers=admin, json={"name": "mine", "base_id": family["base"]["id"], "path": "mine"})
    assert r.status_code == 201, r.text
    assert (settings.data_root / "mine" / "bags" / "EXTRA0.h5").is_file()  # the user's directory is untouched
    assert any("3 bag(s) are not referenced" in w for w in r.json()["summary"]["warnings"])
