"""Class 3 (issue 8): server-side cohort paths stay inside STEPH_DATA_ROOT — at registration and again when a
job reads them — and error bodies never echo outside file contents. Through the real API (TestClient)."""

from __future__ import annotations

import shutil

import pytest

from tests.api.conftest import admin, assert_error, client, ctx, family, settings, snapshot, world  # noqa: F401
from tests.fixtures import write_cohort
from tests.workers.api_helpers import FAST, job_body, wait_job


def _post_path(client, admin, base_id: str, path: str):  # noqa: F811
    return client.post("/cohorts", headers=admin, json={"name": "c", "base_id": base_id, "path": path})


@pytest.fixture
def secret(tmp_path):
    """A file outside the data root whose content must never reach a response (like admin.key)."""
    path = tmp_path / "outside" / "secret.key"
    path.parent.mkdir()
    path.write_text("steph_admin_TOPSECRETVALUE0123456789\n")
    return path


@pytest.mark.parametrize("target", ["labels.csv", "splits.csv", "bags", "bags/S001.h5"])
def test_links_out_of_the_data_root_are_refused_without_echo(client, admin, family, settings, ctx, secret, target):  # noqa: F811
    cohort = write_cohort(settings.data_root / "brca")
    victim = cohort / target
    outside = secret if target != "bags" else secret.parent
    if target == "bags":
        write_cohort(secret.parent / "copy")  # a real cohort's bags outside: valid data, wrong place
        outside = secret.parent / "copy" / "bags"
    shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    victim.symlink_to(outside)
    before = snapshot(ctx)
    err = assert_error(_post_path(client, admin, family["base"]["id"], "brca"), 422, contains="outside")
    assert "TOPSECRET" not in str(err) and "steph_admin" not in str(err)
    assert str(settings.data_root) not in str(err) and str(secret.parent) not in str(err)
    assert snapshot(ctx) == before


def test_etc_passwd_as_splits_is_refused_without_its_first_line(client, admin, family, settings, ctx):  # noqa: F811
    cohort = write_cohort(settings.data_root / "brca")
    (cohort / "splits.csv").unlink()
    (cohort / "splits.csv").symlink_to("/etc/passwd")
    err = assert_error(_post_path(client, admin, family["base"]["id"], "brca"), 422, contains="splits.csv")
    assert "root:" not in err["message"] and "/bin/" not in err["message"]


def test_loops_and_long_names_are_clean_4xx(client, admin, family, settings, ctx):  # noqa: F811
    root = settings.data_root
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    before = snapshot(ctx)
    for path in ("loop_a", "loop_a/x", "x" * 300, "a/" + "y" * 5000, "ok/" + "z" * 256 + "/w"):
        r = _post_path(client, admin, family["base"]["id"], path)
        assert 400 <= r.status_code < 500, (path[:20], r.status_code, r.text)
        assert_error(r, r.status_code)
    cohort = write_cohort(root / "inner")
    (cohort / "labels.csv").unlink()
    (cohort / "labels.csv").symlink_to(cohort / "labels.csv")  # a link to itself
    assert_error(_post_path(client, admin, family["base"]["id"], "inner"), 422)
    assert snapshot(ctx) == before


def test_inside_file_errors_show_a_short_sanitised_excerpt(client, admin, family, settings, ctx):  # noqa: F811
    cohort = write_cohort(settings.data_root / "brca")
    (cohort / "labels.csv").write_text("A" * 500 + "\x1b[31m,pathology_id,t,e\nP1,S1,10,1\n")
    err = assert_error(_post_path(client, admin, family["base"]["id"], "brca"), 422, contains="patient_id")
    assert "A" * 61 not in err["message"] and "AAAA" in err["message"] and "\x1b" not in err["message"]


def test_links_inside_the_data_root_still_work(client, admin, family, settings):  # noqa: F811
    real = write_cohort(settings.data_root / "real")
    other = settings.data_root / "linked"
    other.mkdir()
    (other / "labels.csv").symlink_to(real / "labels.csv")
    (other / "splits.csv").symlink_to(real / "splits.csv")
    (other / "bags").symlink_to(real / "bags")
    r = _post_path(client, admin, family["base"]["id"], "linked")
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["patients"] == 8


def test_a_registered_dir_replaced_by_an_outside_link_fails_the_job(client, admin, family, settings, tmp_path):  # noqa: F811
    cohort = write_cohort(settings.data_root / "brca")
    r = _post_path(client, admin, family["base"]["id"], "brca")
    assert r.status_code == 201, r.text
    outside = write_cohort(tmp_path / "outside-data", seed=7)  # valid data: only the place is wrong
    shutil.rmtree(cohort)
    cohort.symlink_to(outside)
    body = job_body(family, r.json()["id"], params={**FAST, "gate": "off"})  # 5 train patients: no gate can run
    job = client.post("/merge-jobs", headers=admin, json=body)
    assert job.status_code == 202, job.text
    done = wait_job(client, admin, job.json()["id"])
    assert done["status"] == "failed" and done["model_id"] is None
    assert "outside" in done["error"] and str(tmp_path) not in done["error"]
