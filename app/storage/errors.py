"""Store errors, and the translation of operating-system write failures into them.

    StoreError          a missing or corrupt object, a malformed key (500: the operator restores a backup)
    StoreFull           no space left / quota exceeded while writing (507 Insufficient Storage)
    StoreReadOnly       read-only file system or no write permission on the store (503)
    StoreUnavailable    the object store cannot be reached or refuses the credentials (503)

Messages say what to do and never contain server paths.
"""

from __future__ import annotations

import errno

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


class StoreError(RuntimeError):
    """The store is missing an object, holds a corrupt one, or was given a malformed key."""


class StoreFull(StoreError):
    """The store's file system (or bucket quota) has no room for the write (HTTP 507)."""


class StoreReadOnly(StoreError):
    """The store cannot be written: read-only file system or missing permissions (HTTP 503)."""


class StoreUnavailable(StoreError):
    """The object store cannot be reached, or it refuses the configured credentials (HTTP 503)."""


def storage_error(exc: BaseException, *, permissions: bool = False) -> StoreError | None:
    """The StoreError for an OSError that means "the disk is full / read-only", else None.

    ENOSPC, EDQUOT, EFBIG → StoreFull; EROFS → StoreReadOnly; EACCES / EPERM → StoreReadOnly only when
    `permissions` (the failing call wrote inside the store: elsewhere a permission error means something else).
    """
    if not isinstance(exc, OSError) or isinstance(exc, StoreError):
        return None
    code = exc.errno
    if code in _FULL:
        return StoreFull(
            "the artifact store has no space left (the disk or its quota is full); nothing was stored. "
            "Free space on the store's volume (or raise its quota), then send the request again"
        )
    if code in _READ_ONLY or (permissions and code in _DENIED):
        why = "is mounted read-only" if code in _READ_ONLY else "is not writable by the service"
        return StoreReadOnly(
            f"the artifact store {why}; nothing was stored. Mount the store's volume read-write "
            "(STEPH_STORE_ROOT) for the service user, then send the request again"
        )
    return None


def reraise_storage(exc: OSError) -> None:
    """Raise the StoreError for `exc` (from `exc`) when it is a full/read-only/denied write; else return."""
    mapped = storage_error(exc, permissions=True)
    if mapped is not None:
        raise mapped from exc
