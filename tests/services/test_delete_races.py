"""A delete racing the creation of a row that depends on the deleted one, on SQLite and PostgreSQL
(app.db.repositories.lock_rows): a checkpoint deleted while a job naming it is submitted, a model deleted while it
is registered as a version. One of the two wins cleanly; never both (a job accepted on a deleted input), never a
500 (a foreign-key violation)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.services import merge_jobs as mj
from app.services.errors import Conflict, NotFound
from tests.api.test_postgres import pg_server, pg_url  # noqa: F401 - fixtures
from tests.fixtures import make_tiny_world
from tests.workers.world import BOTH_DATABASES, ctx_on, job_request, register_family


@pytest.fixture(params=BOTH_DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path: Path):
    ctx = ctx_on(request, tmp_path, merge_gate="off")
    yield ctx
    ctx.close()


def _race(first: Any, second: Any, *, pause: float = 0.25) -> dict[str, Any]:
    """Run first() and, `pause` seconds later, second() on threads; each one's result or exception."""
    out: dict[str, Any] = {}

    def run(name: str, fn: Any, delay: float) -> None:
        time.sleep(delay)
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            out[name] = exc

    threads = [threading.Thread(target=run, args=("first", first, 0.0)),
               threading.Thread(target=run, args=("second", second, pause))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_a_checkpoint_deleted_while_a_job_naming_it_is_submitted(ctx, tmp_path, monkeypatch) -> None:
    from app.services.checkpoints import delete_checkpoint

    fam = register_family(ctx, make_tiny_world(tmp_path / "world"))
    source = fam["ckpt"]["luad"]
    real_gate_check = mj._check_gate_can_run

    def slow_gate_check(*args: Any) -> None:  # inside the submission's transaction, after its inputs were read
        time.sleep(0.5)
        real_gate_check(*args)

    monkeypatch.setattr(mj, "_check_gate_can_run", slow_gate_check)
    req = job_request(fam, sources=[source])
    got = _race(lambda: mj.submit_merge_job(ctx=ctx, request=req), lambda: delete_checkpoint(ctx, checkpoint_id=source))
    # the submission locked the checkpoint first: the delete waited and then saw the queued job (was: both won)
    assert isinstance(got["first"], tuple) and got["first"][1] is True, got
    assert isinstance(got["second"], Conflict) and "queued job" in str(got["second"]), got
    # the other order: the delete holds the row; the submission waits and finds it gone
    monkeypatch.setattr(mj, "_check_gate_can_run", real_gate_check)
    other = fam["ckpt"]["kirc"]
    from app.db import repositories as repo
    from app.db.models import Checkpoint

    real_dependents = repo.checkpoint_dependents

    def slow_dependents(s: Any, *, checkpoint: Any) -> list[str]:
        time.sleep(0.5)
        return real_dependents(s, checkpoint=checkpoint)

    monkeypatch.setattr(repo, "checkpoint_dependents", slow_dependents)
    req = job_request(fam, sources=[other])
    got = _race(lambda: delete_checkpoint(ctx, checkpoint_id=other), lambda: mj.submit_merge_job(ctx=ctx, request=req))
    assert got["first"] is None and isinstance(got["second"], NotFound), got
    with ctx.session() as s:
        assert s.get(Checkpoint, other) is None


def test_a_model_deleted_while_it_is_registered_as_a_version(ctx, tmp_path, monkeypatch) -> None:
    """Was a 500 (a foreign-key violation of model_versions) on PostgreSQL."""
    from app.db.models import Model
    from app.services import registry_versions as ops
    from app.services.lifecycle import delete_model
    from app.services.registry import Actor

    fam = register_family(ctx, make_tiny_world(tmp_path / "world"))
    with ctx.session() as s:
        for mid in ("model_a", "model_b"):
            target = fam["ckpt"]["brca"]
            s.add(Model(id=mid, method="steph", base_id=fam["base_id"], target_checkpoint_id=target, params={},
                        sources=[], provenance={}, artifact_sha256="3" * 64, artifact_key="3" * 64))  # fmt: skip
    real = ops.check_case_twin

    def slow_twin_check(s: Any, name: str) -> None:  # inside the registration's transaction, model row locked
        time.sleep(0.5)
        real(s, name)

    monkeypatch.setattr(ops, "check_case_twin", slow_twin_check)
    register = lambda: ops.register_version(ctx=ctx, name="brca", model_ref="model_a", actor=Actor(None, "t"))  # noqa: E731
    got = _race(register, lambda: delete_model(ctx=ctx, model_id="model_a"))
    assert isinstance(got["first"], dict) and got["first"]["version"] == 1, got
    assert isinstance(got["second"], Conflict) and "brca" in str(got["second"]), got  # the documented 409
    monkeypatch.setattr(ops, "check_case_twin", real)
    from app.db import repositories as repo

    real_get = repo.get_model

    def slow_get(s: Any, *, model_id: str) -> Any:  # the delete holds the model row here
        time.sleep(0.5)
        return real_get(s, model_id=model_id)

    monkeypatch.setattr(repo, "get_model", slow_get)
    register_b = lambda: ops.register_version(ctx=ctx, name="luad", model_ref="model_b", actor=Actor(None, "t"))  # noqa: E731
    got = _race(lambda: delete_model(ctx=ctx, model_id="model_b"), register_b)
    assert isinstance(got["first"], dict) and isinstance(got["second"], NotFound), got
