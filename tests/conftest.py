"""Shared fixtures. Keep everything tiny: D = 16, hidden 8, attention 4, 4 bins, bags of 1–64 patches."""

import os

import pytest

# issue 7: the service's default STEPH_INFERENCE_DTYPE is "auto" (bfloat16 on CPUs with native bf16). Tests compare
# predictions with float32 forwards, so they run in float32 unless a test sets another dtype itself.
os.environ.setdefault("STEPH_INFERENCE_DTYPE", "float32")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """STEPH_HOME in a temp dir for code that reads the process settings (`steph …` commands); the cached
    settings are cleared before and after."""
    from app.settings import get_settings

    monkeypatch.setenv("STEPH_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


@pytest.fixture
def migrated_home(home):
    """`home` whose database is at the newest migration (what `steph migrate` leaves): for commands that refuse
    to start on an unmigrated database (`steph worker`, `steph serve` in celery mode)."""
    from app.db.migrate import upgrade
    from app.settings import get_settings

    upgrade(get_settings().database_url)
    return home
