"""`steph serve --workers N`: N uvicorn processes of app.main:create_app, start-up done once beforehand."""

from __future__ import annotations

import pytest
import uvicorn

from app.cli import main
from app.settings import get_settings


def test_workers_need_the_celery_queue(home, capsys, monkeypatch):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    assert main(["serve", "--workers", "2"]) == 2
    assert "STEPH_QUEUE=celery" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--workers", "0"])


def test_workers_start_uvicorn_with_the_app_factory_after_the_one_time_start_up(home, monkeypatch):
    monkeypatch.setenv("STEPH_QUEUE", "celery")
    monkeypatch.setenv("STEPH_AUTO_MIGRATE", "true")
    get_settings.cache_clear()
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append((a, k)))
    assert main(["serve", "--workers", "3", "--port", "8123"]) == 0
    ((args, kwargs),) = calls
    assert args == ("app.main:create_app",) and kwargs["factory"] is True and kwargs["workers"] == 3
    assert kwargs["port"] == 8123
    assert (home / "admin.key").read_text().startswith("steph_admin_")  # created once, before the workers


@pytest.mark.parametrize("command", [["worker"], ["serve"], ["serve", "--workers", "2"]])
def test_an_unmigrated_database_stops_the_start_with_what_to_run(home, capsys, monkeypatch, command):
    """Celery mode does not migrate at start-up: an empty (or older) database is refused in one line naming
    `steph migrate`, instead of a traceback, a worker whose reaper fails forever, or an API that answers 500s."""
    import workers.celery_app as celery_app

    monkeypatch.setenv("STEPH_QUEUE", "celery")
    get_settings.cache_clear()
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    monkeypatch.setattr(celery_app, "run_worker", lambda *a, **k: pytest.fail("the worker must not start"))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "has no STEPH tables" in err and "run `steph migrate`" in err and "Traceback" not in err
