"""Uploads: streamed to a generated temp path in the store, with a size cap.

Nothing user-supplied becomes part of a path: the client's file name is used only for its suffix (checked
against an allow-list) and in messages.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from app.services.errors import InvalidInput, PayloadTooLarge

CHUNK = 1 << 20


def mib(n_bytes: float) -> str:
    """A byte count as MiB for messages: 1024, 0.05, 0.001."""
    return f"{round(n_bytes / 2**20, 3):g}"


def too_large(limit_bytes: int, setting: str = "STEPH_MAX_UPLOAD_MB", what: str = "upload") -> PayloadTooLarge:
    """The 413 error naming the cap and the setting that raises it."""
    return PayloadTooLarge(
        f"the {what} is larger than the {mib(limit_bytes)} MiB limit; send a smaller file or raise {setting}"
    )


def display_name(filename: str | None, default: str = "upload") -> str:
    """The client's file name reduced to its last component, for messages only (max 200 chars)."""
    name = PurePath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable()).strip()  # no NUL, newlines or other control characters
    return (name or default)[:200]


def allowed_suffix(filename: str | None, allowed: tuple[str, ...], *, what: str) -> str:
    """The lower-case suffix of `filename` among `allowed` (longest match first, e.g. '.tar.gz')."""
    name = display_name(filename).lower()
    for suffix in sorted(allowed, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise InvalidInput(
        f"{what} {display_name(filename)!r} has an unsupported file type; use one of {', '.join(allowed)}"
    )


@dataclass(frozen=True)
class SavedUpload:
    path: Path
    size: int
    sha256: str  # of the uploaded bytes
    filename: str  # display name (last component of the client's name)


async def save_upload(
    upload: Any,
    dest: Path,
    *,
    limit_bytes: int,
    filename: str | None = None,
    setting: str = "STEPH_MAX_UPLOAD_MB",
) -> SavedUpload:
    """Copy an uploaded file (`read(n)`, sync or async) to `dest` in 1 MiB chunks, hashing it on the way.

    Raises PayloadTooLarge past `limit_bytes` and InvalidInput for an empty file; `dest` is removed on
    failure.
    """
    written = 0
    digest = hashlib.sha256()
    try:
        with open(dest, "wb") as out:
            while True:
                chunk = upload.read(CHUNK)
                if inspect.isawaitable(chunk):
                    chunk = await chunk
                if not chunk:
                    break
                written += len(chunk)
                if written > limit_bytes:
                    raise too_large(limit_bytes, setting)
                out.write(chunk)
                digest.update(chunk)
        if written == 0:
            raise InvalidInput("the uploaded file is empty; attach the file in the multipart field 'file'")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return SavedUpload(dest, written, digest.hexdigest(), display_name(filename))
