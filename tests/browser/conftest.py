"""A real `steph serve` (the client tests' session fixture: tiny synthetic world registered, one STEPH job run)
and headless Chromium driven by Playwright.

Chromium is Debian's `chromium` package (`make test` installs it like redis-server); Playwright only drives it
(executable_path) — no `playwright install`, nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.client.conftest import live  # noqa: F401

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str | None:
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile (--user-data-dir in a temp dir). Module-scoped: Playwright's sync
    API keeps an event loop running in the main thread while it is open, which would break every later test that
    calls asyncio.run()."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("Debian's chromium is not installed (make system-packages installs it)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=exe, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900}, device_scale_factor=1,
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()
