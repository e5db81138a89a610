"""Store objects and the rows that reference them: storing and deleting one content-addressed object, safely.

Objects are named by their sha256, so two rows can share one (a model uploaded twice for two targets, the same
checkpoint bytes under two bases). Deleting a row removes its object once no row references it, and registering a
row stores its object before the row commits. Without care the two interleave badly: a delete finds no reference
and removes the object while a registration of the same bytes, which found the object already there, is about to
commit its row — which then points at nothing (every prediction on it a 500, until someone uploads the bytes
again). Both sides therefore take the object's lock in the transaction that checks references or commits the row:

- `delete_unreferenced`: lock, re-check references, delete — one transaction;
- `ensure_stored`: in the transaction that inserts the referencing row: lock, check the object is (still) there,
  store it again if a delete removed it meanwhile; the row commits with the lock held.

Whichever comes second sees the other's result. PostgreSQL: a transaction-scoped advisory lock per key (other keys
are not blocked). SQLite: its database write lock (one writer at a time anyway), taken by a no-op write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.storage.errors import StoreError


def lock_objects(s: Session, keys: Iterable[str]) -> None:
    """Hold the lock of each store object in `keys` until `s` commits or rolls back."""
    wanted = sorted(set(keys))  # one order for every caller: no deadlock between two multi-key lockers
    if not wanted:
        return
    if s.get_bind().dialect.name == "postgresql":
        for key in wanted:
            lock_id = int.from_bytes(hashlib.sha256(f"steph-object:{key}".encode()).digest()[:8], "big", signed=True)
            s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        return
    repo.take_write_lock(s)  # SQLite: one writer at a time


def delete_unreferenced(ctx: Any, *keys: str) -> list[str]:
    """Delete the objects among `keys` that no row references, under their locks; returns the deleted keys."""
    gone: list[str] = []
    wanted = list(dict.fromkeys(k for k in keys if k))
    if not wanted:
        return gone
    with ctx.session() as s:
        lock_objects(s, wanted)
        for key in wanted:
            if not repo.object_referenced(s, key=key) and ctx.store.delete(key):
                gone.append(key)
    return gone


def ensure_stored(ctx: Any, s: Session, key: str, restore: Callable[[], str]) -> None:
    """Call in the transaction that inserts a row referencing `key`, before it commits: takes the object's lock
    and, when a concurrent delete removed the object since it was stored, stores it again with `restore()`
    (which returns the key it stored)."""
    lock_objects(s, [key])
    if ctx.store.exists(key):
        return
    again = restore()
    if again != key or not ctx.store.exists(key):
        raise StoreError(f"object {key[:12]}… could not be stored again after a concurrent delete; retry the request")
