"""Service fixtures: a migrated SQLite database and a store in a temp dir (no HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.migrate import upgrade
from app.services.context import ServiceContext, build_context
from app.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(home=tmp_path / "home", data_root=tmp_path / "data", device="cpu")


@pytest.fixture
def ctx(settings: Settings) -> Iterator[ServiceContext]:
    upgrade(settings.database_url)
    context = build_context(settings)
    yield context
    context.close()
