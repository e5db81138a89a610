"""The /ui pages over HTTP (TestClient): login cookie, scopes, lists, the merge form with CSRF, live progress JSON,
the model page and its report behind the same key."""

from __future__ import annotations

import html
import re

from tests.workers.api_helpers import FAST, register_cohort, wait_job


def _login(client, headers: dict) -> None:
    key = headers["Authorization"].split(" ", 1)[1]
    r = client.post("/ui/login", data={"key": key}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/ui" in cookie


def test_ui_pages_are_not_cached_so_back_after_logout_shows_nothing(client, admin, world, family) -> None:
    """A shared workstation: after logout, the browser's Back must not show the previous user's pages."""
    _login(client, admin)
    for url in ("/ui", "/ui/models", "/ui/jobs", "/ui/login"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", url
    r = client.post("/ui/logout", follow_redirects=False)
    assert r.headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/health/live").headers.get("cache-control", "")  # only the UI


def test_login_required_and_bad_key(client) -> None:
    r = client.get("/ui/jobs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    r = client.post("/ui/login", data={"key": "steph_admin_wrong"})
    assert r.status_code == 200 and "not valid" in r.text and "set-cookie" not in r.headers
    assert "steph_admin_wrong" not in r.text  # the key is never echoed


def test_admin_flow_start_job_follow_to_model_and_report(client, admin, world, family) -> None:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    _login(client, admin)
    for page, marker in [("/ui", "Recent models"), ("/ui/bases", family["base"]["id"]),
                         ("/ui/checkpoints", "luad"), ("/ui/cohorts", cohort["id"])]:  # fmt: skip
        r = client.get(page)
        assert r.status_code == 200 and marker in r.text, page
    form = client.get("/ui/jobs/new").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
    ckpts = family["checkpoints"]
    data = {
        "method": "steph", "base_id": family["base"]["id"], "target_checkpoint_id": ckpts["brca"]["id"],
        "cohort_id": cohort["id"], "params": '{"epochs": 1, "accum": 2, "topk": 2, "hyper_hidden": 8}',
        "source_checkpoint_ids": [ckpts["luad"]["id"], ckpts["kirc"]["id"]],
    }  # fmt: skip
    refused = client.post("/ui/jobs", data={**data, "csrf": "0" * 32}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    bad = client.post("/ui/jobs", data={**data, "params": "{epochs", "csrf": csrf})
    assert bad.status_code == 422 and "not valid JSON" in bad.text
    assert "{epochs</textarea>" in bad.text  # the form comes back as it was sent, not reset
    assert f'value="{ckpts["luad"]["id"]}" id="src-{ckpts["luad"]["id"]}" checked' in bad.text
    assert re.search(rf'<option value="{ckpts["brca"]["id"]}" selected>', bad.text)
    r = client.post("/ui/jobs", data={**data, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/jobs/job_")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    job = wait_job(client, admin, job_id)
    assert job["status"] == "succeeded" and job["params"]["topk"] == FAST["topk"]
    progress = client.get(f"/ui/jobs/{job_id}/progress").json()
    assert progress["status"] == "succeeded" and progress["percent"] == 100 and progress["model_id"] == job["model_id"]
    page = client.get(f"/ui/jobs/{job_id}").text
    assert f"/ui/models/{job['model_id']}" in page
    assert f'<td id="job-promotion"><b>{job["promotion"]["status"]}</b>' in page  # the gate, on the job page
    assert f'<td class="promotion">{job["promotion"]["status"]}</td>' in client.get("/ui/jobs").text
    model_page = client.get(f"/ui/models/{job['model_id']}")
    assert model_page.status_code == 200 and 'data-figure="km"' in model_page.text
    model = client.get(f"/models/{job['model_id']}", headers=admin).json()
    assert re.search(rf'<td id="promotion-status"><b>{model["promotion_status"]}</b>', model_page.text)  # the gate
    rel = model["metrics"]["notes"]["relevance"]  # STEPH's β rule: the sources' relevance, as measured
    shown = re.search(r'<td id="relevance">([^<]+)<b>([a-z ]+)</b>', html.unescape(model_page.text))
    assert shown and f"C {rel['c']:.3f} ± {rel['se']:.3f} (z {rel['z']:+.2f}" in shown.group(1)
    assert shown.group(2) == ("passed" if rel["passed"] else "not passed")
    fig = client.get(f"/ui/models/{job['model_id']}/figures/km.png")
    assert fig.status_code == 200 and fig.content[:4] == b"\x89PNG"
    report = client.get(f"/ui/models/{job['model_id']}/report")
    assert report.status_code == 200 and 'data-figure="calibration"' in report.text
    assert "default-src 'none'" in report.headers["content-security-policy"]


def test_predict_key_sees_models_not_admin_pages(client, predict) -> None:
    _login(client, predict)
    assert client.get("/ui/models").status_code == 200
    r = client.get("/ui/jobs")
    assert r.status_code == 403 and "admin key" in r.text
    assert client.get("/ui/jobs/job_x/progress").status_code == 401
    form = {"method": "steph", "base_id": "b", "target_checkpoint_id": "c", "cohort_id": "h", "params": "{}"}
    key = predict["Authorization"].split(" ", 1)[1]
    from app.api.routes.ui import csrf_token

    refused = client.post("/ui/jobs", data={**form, "csrf": csrf_token(key)})
    assert refused.status_code == 403 and "admin key" in refused.text
    missing = client.get("/ui/models/model_nope")
    assert missing.status_code == 404 and "model_nope" in missing.text
    out = client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/ui/models", follow_redirects=False).status_code == 303


def test_models_show_registry_names_and_aliases(client, admin, world, family) -> None:
    from tests.workers.api_helpers import run_job

    cohort = register_cohort(client, admin, world, family["base"]["id"])
    model_id = run_job(client, admin, family, cohort["id"])["model_id"]
    assert client.post("/registered-models", headers=admin, json={"name": "brca-survival"}).status_code == 201
    r = client.post("/registered-models/brca-survival/versions", headers=admin, json={"model_id": model_id})
    assert r.status_code == 201, r.text
    body = {"version": 1, "allow_not_promoted": True}  # a tiny world: the promotion gate may refuse the model
    r = client.put("/registered-models/brca-survival/aliases/champion", headers=admin, json=body)
    assert r.status_code in (200, 201), r.text
    _login(client, admin)
    assert "brca-survival v1 (champion)" in client.get("/ui/models").text
    assert "brca-survival v1 (champion)" in client.get(f"/ui/models/{model_id}").text
    report = client.get(f"/ui/models/{model_id}/report").text
    assert "Model report: brca-survival v1 (champion)" in report


def test_a_link_from_another_site_keeps_the_session_and_cross_site_posts_are_refused(client, admin) -> None:
    """Without its cookie (a browser sends none on some cross-site requests) a page redirects to the login
    without dropping the session; another site's POST to login or logout is refused."""
    key = admin["Authorization"].split(" ", 1)[1]
    client.cookies.clear()
    r = client.get("/ui/models", follow_redirects=False)
    assert r.status_code == 303 and "set-cookie" not in r.headers  # nothing cleared
    client.cookies.set("steph_ui_key", "steph_admin_revoked")
    r = client.get("/ui/models", follow_redirects=False)
    assert r.status_code == 303 and 'steph_ui_key=""' in r.headers["set-cookie"]  # an invalid key is cleared
    client.cookies.clear()
    evil = {"Origin": "http://evil.example"}
    r = client.post("/ui/login", data={"key": key}, headers=evil, follow_redirects=False)
    assert r.status_code == 403 and "another site" in r.text and "set-cookie" not in r.headers
    r = client.post("/ui/logout", headers={"Referer": "http://evil.example/page"}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    same = {"Origin": "http://testserver"}
    assert client.post("/ui/login", data={"key": key}, headers=same, follow_redirects=False).status_code == 303
    r = client.post("/ui/logout", headers=same, follow_redirects=False)
    assert r.status_code == 303 and 'steph_ui_key=""' in r.headers["set-cookie"]


def test_the_model_page_without_held_out_patients_and_with_bad_choices(client, admin, world, family, tmp_path) -> None:
    from tests.workers.api_helpers import register_cohort_without_test_split, run_job

    cohort = register_cohort_without_test_split(client, admin, family["base"]["id"], tmp_path)  # nothing held out
    job = run_job(client, admin, family, cohort["id"], method="average", params={"epochs": 1, "accum": 4})
    _login(client, admin)
    page = client.get(f"/ui/models/{job['model_id']}")
    assert page.status_code == 200 and 'id="no-held-out"' in page.text and "test split" in page.text
    assert job["model_id"] in page.text and 'data-figure="km"' not in page.text  # the rest of the page is there
    assert f"/ui/models/{job['model_id']}/report" not in client.get("/ui/models").text  # no link that can only fail
    client.delete(f"/models/{job['model_id']}", headers=admin)
    assert ">deleted<" in client.get(f"/ui/jobs/{job['id']}").text  # not "not yet"

    cohort = register_cohort(client, admin, world, family["base"]["id"])
    good = run_job(client, admin, family, cohort["id"], method="average", params={"epochs": 1, "accum": 4})["model_id"]
    assert client.get(f"/ui/models/{good}?groups=3").status_code == 200
    assert f"/ui/models/{good}/report" in client.get("/ui/models").text
    for query, needle in (("groups=5", "groups must be 2"), ("groups=0", "groups must be 2"),
                          ("patient=nobody", "'nobody' is not among"), ("groups=abc", "groups")):  # fmt: skip
        pages = [f"/ui/models/{good}?{query}"] + ([f"/ui/models/{good}/report?{query}"] if "groups" in query else [])
        for page_url in pages:
            r = client.get(page_url)
            assert r.status_code == 422 and needle in html.unescape(r.text), page_url
            assert r.headers["content-type"].startswith("text/html"), page_url  # the UI's page, never API JSON
    report = client.get(f"/ui/models/{job['model_id']}/report")  # deleted above: the UI's page, not JSON
    assert report.status_code == 404 and report.headers["content-type"].startswith("text/html")
