"""The web UI in a real browser: log in with the key, start a merge job from the form, watch its live progress,
follow it to its model, open the report; every figure must load and no page may log a JavaScript error.

Screenshots go to the test's temp dir; with STEPH_UPDATE_SCREENSHOTS=1 they also replace docs/screenshots/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ALL_IMAGES_LOADED = "Array.from(document.images).map(i => [i.dataset.figure || i.alt, i.complete && i.naturalWidth])"


class PageWatch:
    """Collects console errors, uncaught exceptions and failed requests of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))

    def check(self) -> None:
        assert not self.errors, self.errors


def _figures_ok(page, expected: set[str]) -> None:
    loaded = dict(page.evaluate(ALL_IMAGES_LOADED))
    missing = {name for name in expected if not loaded.get(name)}
    assert not missing, f"figures missing or not loaded: {missing} (page has {loaded})"


def _shot(page, out: Path, name: str, publish: bool = True, **kw) -> None:
    """Screenshot to the test's temp dir; UI pages also to docs/screenshots/ with STEPH_UPDATE_SCREENSHOTS=1 (the
    report screenshots there come from `steph report` on a larger synthetic world: see the README's section
    "Reports, the web UI and local validation plots")."""
    path = out / f"{name}.png"
    page.screenshot(path=str(path), **kw)
    assert path.stat().st_size > 5_000
    if publish and os.environ.get("STEPH_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, REPO / "docs" / "screenshots" / path.name)


def test_ui_job_to_model_to_report(browser, live, tmp_path) -> None:
    page = browser.new_page()
    watch = PageWatch(page)
    page.goto(f"{live.url}/ui")
    assert page.url.endswith("/ui/login")
    page.fill("#key", "steph_admin_not_a_key")
    page.click("#login")
    assert "not valid" in page.inner_text("#login-error")
    page.fill("#key", live.admin_key)
    page.click("#login")
    page.wait_for_url(f"{live.url}/ui")
    assert live.admin_key not in page.url and live.admin_key not in page.content()
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the key
    _shot(page, tmp_path, "ui-overview")

    page.click("text=Start a merge")
    page.select_option("#method", "steph")
    page.select_option("#target", live.checkpoint_ids["BLCA"])
    for cancer in ("BRCA", "CESC"):
        page.check(f"#src-{live.checkpoint_ids[cancer]}")
    page.select_option("#cohort_id", live.cohort_id)
    page.fill("#params", '{"epochs": 3, "accum": 4, "lr": 0.001}')
    _shot(page, tmp_path, "ui-new-job")
    page.click("#submit-job")
    page.wait_for_url("**/ui/jobs/job_*")
    # live progress: the page polls the job and turns the status into "succeeded" with a link to the model
    page.wait_for_selector("#job .status-succeeded", timeout=90_000)
    page.wait_for_selector("#job a.model-link", timeout=10_000)
    assert "done" in page.inner_text("#job .text")
    _shot(page, tmp_path, "ui-job")
    page.click("#job a.model-link")
    page.wait_for_url("**/ui/models/model_*")
    page.wait_for_load_state("networkidle")
    _figures_ok(page, {"km", "patient", "comparison"})
    _shot(page, tmp_path, "ui-model", full_page=True)

    page.click("#open-report")
    page.wait_for_url("**/report*")
    page.wait_for_load_state("networkidle")
    _figures_ok(page, {"km", "calibration", "time-metrics", "comparison", "sources", "training", "patient"})
    assert page.inner_text("#verdict") in ("better", "worse", "inconclusive")
    _shot(page, tmp_path, "report-top", publish=False)
    for name in ("km", "sources"):
        path = tmp_path / f"report-{name}.png"
        page.locator(f"#fig-{name}").screenshot(path=str(path))
        assert path.stat().st_size > 5_000
    watch.check()


def test_predict_key_ui_and_no_js_errors(browser, live) -> None:
    page = browser.new_page()
    watch = PageWatch(page)
    page.context.clear_cookies()  # a fresh session (the first test logged in with the admin key)
    page.goto(f"{live.url}/ui/login")
    page.fill("#key", live.predict_key)
    page.click("#login")
    page.wait_for_url(f"{live.url}/ui")
    assert page.locator("text=Merge jobs").count() == 0  # admin pages are not offered to a predict key
    page.goto(f"{live.url}/ui/models/{live.model_id}")
    page.wait_for_load_state("networkidle")
    _figures_ok(page, {"km", "patient", "comparison"})
    page.click("#logout")
    page.wait_for_url("**/ui/login")
    page.goto(f"{live.url}/ui/models")
    assert page.url.endswith("/ui/login")  # logged out: the cookie is gone
    watch.check()


def test_long_names_wrap_instead_of_widening_the_page(browser, live) -> None:
    """A 100-character registry name (no spaces) used to widen the models page to 2 700 px at a 1 280 px window."""
    import httpx

    name = "x" * 100
    r = httpx.post(f"{live.url}/registered-models/{name}/versions", json={"model_id": live.model_id,
                   "allow_not_promoted": True}, headers={"Authorization": f"Bearer {live.admin_key}"})  # fmt: skip
    assert r.status_code == 201, r.text
    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 800})
    page.context.clear_cookies()
    page.goto(f"{live.url}/ui/login")
    page.fill("#key", live.predict_key)
    page.click("#login")
    page.wait_for_url(f"{live.url}/ui")
    page.goto(f"{live.url}/ui/models")
    assert name in page.content()
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
