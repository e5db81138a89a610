"""`steph worker` hands its arguments, in order, to `celery worker`; other commands still reject unknown ones."""

from __future__ import annotations

import pytest

import workers.celery_app
from app import cli


def test_worker_arguments_reach_celery_in_order(monkeypatch: pytest.MonkeyPatch, migrated_home) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(workers.celery_app, "run_worker", lambda argv: seen.append(list(argv)) or 0)
    assert cli.main(["worker", "--hostname", "gpu1@%h", "--loglevel", "DEBUG"]) == 0
    assert seen == [["--hostname", "gpu1@%h", "--loglevel", "DEBUG"]]


def test_other_commands_reject_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--model", "m.safetensors", "--cohort", "c", "--hostname", "x"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --hostname x" in capsys.readouterr().err
