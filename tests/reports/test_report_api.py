"""HTTP: GET /models/{id}/report (self-contained HTML), figures as PNG/SVG, the plotted numbers as JSON."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import assert_error
from tests.workers.api_helpers import register_cohort, run_job


@pytest.fixture
def model(client, admin, world, family) -> dict:
    cohort = register_cohort(client, admin, world, family["base"]["id"])
    job = run_job(client, admin, family, cohort["id"])
    return client.get(f"/models/{job['model_id']}", headers=admin).json()


def test_report_numbers_match_the_job(client, predict, model) -> None:
    r = client.get(f"/models/{model['id']}/report/data", headers=predict)
    assert r.status_code == 200, r.text
    body = r.json()
    data, meta = body["data"], body["meta"]
    n = len(data["test"]["time"])
    assert n == model["metrics"]["comparison"]["patients"]
    assert len(data["merged"]["risk"]) == len(data["reference"]["risk"]) == n
    # the same paired bootstrap (seed, n_boot) as the job's own comparison
    assert data["comparison"] == pytest.approx(model["metrics"]["comparison"])
    assert len(data["bootstrap"]) == data["comparison"]["n_boot"]
    assert len(data["per_bag_sources"]) == n and all(len(rows) == 2 for rows in data["per_bag_sources"])
    assert set(data["source_names"]) == {"luad", "kirc"}
    steps = meta["training"]["steps"]
    assert len(steps) == model["metrics"]["train"]["steps"] and meta["training"]["epochs"] == pytest.approx(
        model["metrics"]["train"]["history"]
    )
    assert meta["model"]["target"] == "brca" and meta["provenance"]["cohort_summary"]


def test_report_html_is_self_contained(client, predict, model) -> None:
    r = client.get(f"/models/{model['id']}/report", headers=predict, params={"groups": 3})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    figures = re.findall(r'data-figure="([a-z-]+)"', html)
    assert {"km", "calibration", "comparison", "sources", "training", "patient"} <= set(figures)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]+)"', html))
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html), "the report must not load anything external"
    assert "intermediate risk" in html  # tertiles
    assert model["id"] in html and "verdict" in html


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_figure_routes(client, predict, model, fmt, magic) -> None:
    r = client.get(f"/models/{model['id']}/report/figures/km.{fmt}", headers=predict)
    assert r.status_code == 200, r.text
    assert magic in r.content[:400]
    assert r.headers["content-type"].startswith({"png": "image/png", "svg": "image/svg+xml"}[fmt])


def test_report_errors(client, predict, model) -> None:
    assert_error(client.get(f"/models/{model['id']}/report"), 401)
    assert_error(client.get("/models/model_nope/report", headers=predict), 404, contains="model_nope")
    assert_error(client.get(f"/models/{model['id']}/report/figures/nope.png", headers=predict), 404, contains="km")
    assert_error(client.get(f"/models/{model['id']}/report/figures/km.gif", headers=predict), 404, contains="svg")
    bad = client.get(f"/models/{model['id']}/report", headers=predict, params={"groups": 7})
    assert_error(bad, 422, contains="tertiles")
    missing = client.get(f"/models/{model['id']}/report", headers=predict, params={"patient": "nobody"})
    assert_error(missing, 404, contains="nobody")


def test_another_cohorts_labels_need_an_admin_key(client, admin, predict, model) -> None:
    """cohort_id reports on another cohort, i.e. reveals its outcome labels: 403 for a predict key, and the
    answer is the same whether or not the cohort exists."""
    cohort_id = client.get("/cohorts", headers=admin).json()["items"][0]["id"]
    for ref in (cohort_id, "coh_nope"):
        for path in ("report/data", "report", "report/figures/km.png"):
            r = client.get(f"/models/{model['id']}/{path}", headers=predict, params={"cohort_id": ref})
            assert_error(r, 403, contains="admin key")
    r = client.get(f"/models/{model['id']}/report/data", headers=admin, params={"cohort_id": cohort_id})
    assert r.status_code == 200 and r.json()["data"]["test"]["time"]


def test_matplotlib_is_not_imported_by_the_api_until_a_figure_is_drawn() -> None:
    import subprocess
    import sys

    code = "import sys, app.main; app.main.create_app(); assert 'matplotlib' not in sys.modules, 'imported eagerly'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_report_shows_the_promotion_gate_and_autos_candidates(client, admin, predict, world, family) -> None:
    """Issue 12 in the report: the gate's status and estimate for a gated STEPH merge; for auto, every candidate's
    inner-CV estimate with the winner marked."""
    import html as html_lib

    cohort = register_cohort(client, admin, world, family["base"]["id"])
    from tests.workers.api_helpers import FAST

    # auto with a relevance threshold every source passes, so that the inner CV runs and its table is drawn
    auto_params = {"epochs": FAST.get("epochs", 1), "relevance_z": -10.0}
    for method, params in (("steph", {**FAST, "gate": "fast"}), ("auto", auto_params)):
        job = run_job(client, admin, family, cohort["id"], method=method, params=params)
        model = client.get(f"/models/{job['model_id']}", headers=admin).json()
        page = client.get(f"/models/{model['id']}/report", headers=predict)
        assert page.status_code == 200, page.text
        text = html_lib.unescape(page.text)
        status = re.search(r'<td id="promotion-status">([a-z_]+)</td>', text)
        assert status and status.group(1) == model["promotion_status"] != "unchecked"
        est = model["promotion"]["estimate"]
        assert f"{est['difference']:+.4f}" in text
        if method == "auto":
            evidence = model["metrics"]["notes"]["auto"]
            table = text.split('<table id="auto">', 1)[1].split("</table>", 1)[0]
            assert table.count("<tr") == 1 + len(evidence["candidates"])
            winner_row = re.search(r'<tr class="winner"><td>([^<]+)</td>', table)
            assert winner_row and winner_row.group(1) == evidence["winner"]
            for label, c in evidence["candidates"].items():
                assert label in table and f"{c['difference']:+.4f}" in table
            rel = evidence["relevance"]  # the pre-check's numbers, as measured
            shown = re.search(r'<td id="relevance-c">([^<]+)</td>', text)
            assert shown and shown.group(1).startswith(f"{rel['c']:.4f} ± {rel['se']:.4f}")
            assert f"z {rel['z']:+.2f} (threshold -10.00)" in shown.group(1)
            assert "passed: the merge candidates were tried" in text
            for name, c in rel["per_source"].items():
                assert f'<td class="muted">{name}</td><td>{c:.4f}</td>' in text
        else:
            assert '<table id="auto">' not in text
            rel = model["metrics"]["notes"]["relevance"]  # STEPH's β rule: measured, drawn with its verdict
            verdict = re.search(r'<td id="relevance-verdict">([^<]+)</td>', text)
            assert verdict and verdict.group(1).startswith("passed" if rel["passed"] else "not passed")
            assert f"β = {rel['beta_used']:g}" in verdict.group(1) or not rel["passed"]
