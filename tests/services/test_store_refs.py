"""Deleting a row's store object vs registering a row that shares it (app.services.store_refs), on SQLite and
PostgreSQL: the object a committed row references is never missing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.services.store_refs import delete_unreferenced, ensure_stored, lock_objects
from app.storage.errors import StoreError
from tests.api.test_postgres import pg_server, pg_url  # noqa: F401 - fixtures
from tests.workers.world import BOTH_DATABASES, add_fake_family, ctx_on, fake_model

DATA = b"the bytes of one model artifact"


@pytest.fixture(params=BOTH_DATABASES)
def ctx(request: pytest.FixtureRequest, tmp_path: Path):
    ctx = ctx_on(request, tmp_path)
    add_fake_family(ctx)
    yield ctx
    ctx.close()


def test_a_delete_waits_for_a_registration_holding_the_object(ctx) -> None:
    """The race of a DELETE of model A with POST /models of the same bytes for model B: the delete re-checks the
    references under the object's lock, so it sees B's row once B commits, and keeps the object."""
    key = ctx.store.put_bytes(DATA)
    ready, done = threading.Event(), {}

    def register_b() -> None:
        with ctx.session() as s:
            ensure_stored(ctx, s, key, lambda: ctx.store.put_bytes(DATA))
            ready.set()
            time.sleep(0.5)  # the delete below runs now, while B's row is not yet committed
            s.add(fake_model("model_b", key))
        done["at"] = time.monotonic()

    writer = threading.Thread(target=register_b)
    writer.start()
    assert ready.wait(10)
    gone = delete_unreferenced(ctx, key)  # A's row is already gone: only B (uncommitted) will reference the key
    returned = time.monotonic()
    writer.join(10)
    assert gone == [] and ctx.store.exists(key)  # without the lock: deleted, and B pointed at nothing
    assert returned >= done["at"]  # it waited for B's transaction
    assert delete_unreferenced(ctx, key) == []  # B still references it


def test_a_registration_stores_the_object_again_after_a_delete_removed_it(ctx) -> None:
    key = ctx.store.put_bytes(DATA)  # stored by the registration, before its row's transaction
    assert delete_unreferenced(ctx, key) == [key] and not ctx.store.exists(key)  # a concurrent delete got there
    with ctx.session() as s:
        ensure_stored(ctx, s, key, lambda: ctx.store.put_bytes(DATA))
        s.add(fake_model("model_b", key))
    assert ctx.store.exists(key) and ctx.store.read_verified(key) == DATA
    with pytest.raises(StoreError, match="could not be stored again"):
        ctx.store.delete(key)
        with ctx.session() as s:
            ensure_stored(ctx, s, key, lambda: ctx.store.put_bytes(b"other bytes"))  # a restore that fails


def test_referenced_objects_are_kept_and_keys_lock_in_one_order(ctx) -> None:
    keep, drop = ctx.store.put_bytes(DATA), ctx.store.put_bytes(b"unreferenced")
    with ctx.session() as s:
        s.add(fake_model("model_a", keep))
    assert delete_unreferenced(ctx, keep, drop, drop, "") == [drop]
    assert ctx.store.exists(keep) and not ctx.store.exists(drop)
    with ctx.session() as s:
        lock_objects(s, [])  # nothing to lock: no statement
        lock_objects(s, [drop, keep, drop])


def _saved(path: Path) -> Any:
    import hashlib

    from app.services.uploads import SavedUpload

    data = path.read_bytes()
    return SavedUpload(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), filename=path.name)


def test_a_checkpoint_delete_and_a_registration_of_its_bytes_never_deadlock(ctx, tmp_path) -> None:
    """The registration locked its two objects in (artifact, task vector) order while a delete locks keys sorted:
    with the artifact's key sorting after the task vector's, PostgreSQL aborted one side (DeadlockDetected, a 500).
    Both now lock sorted: the delete of checkpoint P on one base and the registration of P's bytes on another
    both succeed, and both objects stay (the new row references them)."""
    from app.services.bases import register_base
    from app.services.checkpoints import delete_checkpoint, register_checkpoint
    from tests.fixtures import base_state, checkpoint_state, write_safetensors

    base_file = write_safetensors(tmp_path / "base.safetensors", base_state())
    b2, _ = register_base(ctx, upload=_saved(base_file), name="b2", encoder="enc-b2")
    b3, _ = register_base(ctx, upload=_saved(base_file), name="b3", encoder="enc-b3")
    for seed in range(50):  # bytes whose artifact key sorts after their task-vector key (the deadlocking order)
        path = write_safetensors(tmp_path / f"c{seed}.safetensors", checkpoint_state(base_state(), seed=seed))
        first, _ = register_checkpoint(ctx, upload=_saved(path), cancer="cesc", base_id=b2.id)
        if first.artifact_key > first.task_vector_key:
            break
        delete_checkpoint(ctx, checkpoint_id=first.id)
    real_exists = ctx.store.exists

    def slow_exists(key: str) -> bool:  # the registration holds a lock here while the delete asks for both
        if key == first.artifact_key and threading.current_thread().name == "post":
            time.sleep(0.5)
        return real_exists(key)

    ctx.store.exists = slow_exists
    results: dict[str, Any] = {}

    def post() -> None:
        try:
            results["post"] = register_checkpoint(ctx, upload=_saved(path), cancer="cesc", base_id=b3.id)[0].id
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results["post"] = exc

    def delete() -> None:
        time.sleep(0.25)
        try:
            delete_checkpoint(ctx, checkpoint_id=first.id)
            results["delete"] = "ok"
        except Exception as exc:  # noqa: BLE001
            results["delete"] = exc

    threads = [threading.Thread(target=post, name="post"), threading.Thread(target=delete, name="delete")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results["delete"] == "ok" and isinstance(results["post"], str), results
    assert real_exists(first.artifact_key) and real_exists(first.task_vector_key)
