"""The registry under concurrent changes, on SQLite (the embedded default) and PostgreSQL (the API serves each
request on its own thread): every change of a name takes the name's write lock first (registry_versions.lock_name)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.services import registry_versions as ops
from app.services.errors import Conflict, NotFound
from app.services.registry import Actor, resolve_model_ref
from tests.api.test_postgres import pg_server, pg_url  # noqa: F401 - fixtures
from tests.workers.world import BOTH_DATABASES, add_fake_family, ctx_on

ACTOR = Actor(key_id=None, name="test")


@pytest.fixture(params=BOTH_DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path: Path):
    ctx = ctx_on(request, tmp_path)
    add_fake_family(ctx, models=40)
    yield ctx
    ctx.close()


def together(*calls: Callable[[], object]) -> list[object]:
    """Run the calls on threads released at once; each result or the exception it raised."""
    barrier, out = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_first_registrations_of_a_new_name_all_get_a_version(ctx) -> None:
    calls = [lambda i=i: ops.register_version(ctx=ctx, name="new", model_ref=f"model_{i}", actor=ACTOR)
             for i in range(8)]  # fmt: skip
    results = together(*calls)
    assert all(isinstance(r, dict) for r in results), results  # was 409 "changed concurrently" for most
    assert sorted(r["version"] for r in results) == list(range(1, 9))


def test_concurrent_alias_moves_keep_a_continuous_history(ctx) -> None:
    for i in range(4):
        ops.register_version(ctx=ctx, name="brca", model_ref=f"model_{i}", actor=ACTOR)
    answers: list[tuple[int | None, int]] = []
    lock = threading.Lock()

    def mover(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12):
            v = rng.randint(1, 4)
            out = ops.set_alias(ctx=ctx, name="brca", alias="champion", version=v, actor=ACTOR)
            with lock:
                answers.append((out["previous_version"], v))

    together(*[lambda k=k: mover(k) for k in range(4)])
    history, _ = ops.alias_history(ctx=ctx, name="brca", alias="champion")
    chain = [(e["from_version"], e["to_version"]) for e in history]
    assert chain[0][0] is None
    for (_, to), (frm, _) in zip(chain, chain[1:], strict=False):
        assert frm == to, chain  # each move starts where the previous one ended
    moves = [a for a in answers if a[0] != a[1]]  # a move to the version it already had records nothing
    assert sorted(chain, key=str) == sorted(moves, key=str)


def test_an_alias_never_points_at_a_deleted_version(ctx) -> None:
    ops.register_version(ctx=ctx, name="race", model_ref="model_0", actor=ACTOR, aliases=["champion"])
    for i in range(1, 16):
        v = ops.register_version(ctx=ctx, name="race", model_ref=f"model_{i}", actor=ACTOR)["version"]
        moved, deleted = together(
            lambda v=v: ops.set_alias(ctx=ctx, name="race", alias="champion", version=v, actor=ACTOR),
            lambda v=v: ops.delete_version(ctx=ctx, name="race", version=v),
        )
        # exactly one wins: moved then the delete refused (409), or deleted then the move finds no version (404)
        move_first = isinstance(moved, dict) and isinstance(deleted, Conflict)
        delete_first = isinstance(moved, NotFound) and deleted is None
        assert move_first or delete_first, (moved, deleted)
        with ctx.session() as s:
            resolve_model_ref(s, "race@champion")  # the alias resolves: its version exists


def test_deleting_a_name_while_a_version_is_registered_is_never_a_500(ctx) -> None:
    for i in range(10):
        name = f"gone-{i}"
        ops.register_version(ctx=ctx, name=name, model_ref="model_0", actor=ACTOR)
        registered, deleted = together(
            lambda n=name: ops.register_version(ctx=ctx, name=n, model_ref="model_1", actor=ACTOR),
            lambda n=name: ops.delete_registered_model(ctx=ctx, name=n),
        )
        assert isinstance(registered, dict) and deleted is None, (registered, deleted)
        # either order is fine: deleted first (the version made the name anew: version 1) or after (nothing left)
        listed = [r for r in ops_list(ctx) if r == name]
        assert listed in ([], [name])


def ops_list(ctx) -> list[str]:
    from sqlalchemy import select

    from app.db.models import RegisteredModel

    with ctx.session() as s:
        return list(s.scalars(select(RegisteredModel.name)))
