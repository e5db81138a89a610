"""`steph` and `steph-client`: every command has a description and help for every argument; global flags work
before and after the command; `steph worker --help` is ours; `steph gc` and `steph alias` on a temp home."""

from __future__ import annotations

import argparse
import getpass
import json
import os

import pytest

import workers.celery_app
from app import __version__, cli
from app.client import cli as client_cli
from app.db.models import Checkpoint, Model, ModelBase
from app.services import registry_versions as ops
from app.services.context import build_context
from app.services.registry import Actor
from app.settings import Settings, get_settings


def undocumented(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    """Sub-commands without a help line or description, and arguments without help, recursively."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name) or not sub.description:
                    out.append(f"{prefix} {name}")
                out += undocumented(sub, f"{prefix} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and not action.help:
            out.append(f"{prefix} {action.dest}")
    return out


def test_every_command_and_argument_is_documented() -> None:
    assert undocumented(cli.build_parser(), "steph") == []
    assert undocumented(client_cli.build_parser(), "steph-client") == []
    # the walk can fail: an argument without help is reported
    bare = argparse.ArgumentParser()
    bare.add_argument("x")
    assert undocumented(bare, "t") == ["t x"]


def test_worker_help_is_ours_and_double_dash_passes_everything(monkeypatch, capsys, migrated_home) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["worker", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: steph worker" in out and "passed, unchanged and in order, to `celery worker`" in out
    assert "Worker Options" not in out  # Celery's own help text
    seen: list[list[str]] = []
    monkeypatch.setattr(workers.celery_app, "run_worker", lambda argv: seen.append(list(argv)) or 0)
    assert cli.main(["worker", "--", "--help"]) == 0
    assert cli.main(["worker", "--concurrency", "1"]) == 0
    assert seen == [["--help"], ["--concurrency", "1"]]


def test_quiet_works_before_and_after_the_command() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["gc", "--dry-run"]).quiet is False
    assert parser.parse_args(["gc", "--dry-run", "--quiet"]).quiet is True
    assert parser.parse_args(["--quiet", "gc"]).quiet is True
    assert parser.parse_args(["keys", "list", "--quiet"]).quiet is True


def test_client_flags_before_or_after_and_version(capsys) -> None:
    parser = client_cli.build_parser()
    before = parser.parse_args(["--url", "http://a", "-q", "health"])
    after = parser.parse_args(["health", "--url", "http://a", "-q"])
    neither = parser.parse_args(["health"])
    assert (before.url, before.quiet) == (after.url, after.quiet) == ("http://a", True)
    assert (neither.url, neither.quiet) == (None, False)
    with pytest.raises(SystemExit) as exc:
        client_cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"steph-client {__version__}"


def test_gc_dry_run_then_delete(home, capsys) -> None:
    assert cli.main(["migrate"]) == 0
    settings = Settings(home=home, gc_grace_s=0)
    ctx = build_context(settings)
    try:
        orphan = ctx.store.put_bytes(b"orphan bytes")
    finally:
        ctx.close()
    capsys.readouterr()
    os.environ["STEPH_GC_GRACE_S"] = "0"
    try:
        get_settings.cache_clear()
        assert cli.main(["gc", "--dry-run"]) == 0
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        assert [o["key"] for o in report["objects"]] == [orphan] and "would remove 1 store object" in captured.err
        assert ctx.store.exists(orphan)
        assert cli.main(["gc", "--quiet"]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["dry_run"] is False and captured.err == ""
        assert not ctx.store.exists(orphan)
    finally:
        del os.environ["STEPH_GC_GRACE_S"]


def test_alias_command_records_the_cli_user(home, capsys) -> None:
    assert cli.main(["migrate"]) == 0
    ctx = build_context(Settings(home=home))
    try:
        with ctx.session() as s:
            s.add(ModelBase(id="base_1", name="b", encoder="e", dims={}, bin_edges=[], sha256="0" * 64,
                            artifact_key="0" * 64))  # fmt: skip
            s.flush()
            s.add(Checkpoint(id="ckpt_1", base_id="base_1", cancer="brca", name="brca", sha256="1" * 64,
                             artifact_key="1" * 64, task_vector_key="2" * 64, tv_norms={}))  # fmt: skip
            s.flush()
            s.add(Model(id="model_1", method="steph", base_id="base_1", target_checkpoint_id="ckpt_1", params={},
                        sources=[], provenance={}, artifact_sha256="3" * 64, artifact_key="3" * 64))  # fmt: skip
        ops.register_version(ctx=ctx, name="brca", model_ref="model_1", actor=Actor(key_id="key_1", name="ci"))
        capsys.readouterr()
        assert cli.main(["alias", "brca", "champion", "2"]) == 2  # no version 2: a one-line user error
        assert "has no version 2" in capsys.readouterr().err
        assert cli.main(["alias", "brca", "champion", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["model_id"] == "model_1"
        [event], _ = ops.alias_history(ctx=ctx, name="brca")
        assert (event["actor"], event["actor_key_id"]) == (f"cli:{getpass.getuser()}", None)
        assert (event["from_version"], event["to_version"]) == (None, 1)
        assert cli.main(["alias", "brca", "champion", "--delete"]) == 0
        assert [e["to_version"] for e in ops.alias_history(ctx=ctx, name="brca")[0]] == [1, None]
        with ctx.session() as s:  # the promotion gate refused the model: the alias needs the explicit flag
            s.get(Model, "model_1").promotion_status = "not_promoted"
        capsys.readouterr()
        assert cli.main(["alias", "brca", "champion", "1"]) != 0
        err = capsys.readouterr().err
        assert "not promoted" in err and "pass --allow-not-promoted" in err and "allow_not_promoted" not in err
        assert cli.main(["alias", "brca", "champion", "1", "--allow-not-promoted"]) == 0
    finally:
        ctx.close()
