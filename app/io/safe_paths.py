"""Confining server-side paths to a root directory (STEPH_DATA_ROOT, or a cohort's own directory).

    confined(root, path, what=…) -> Path     `path` with every link resolved; PathEscapeError when it ends
                                             outside `root`, loops, or has a component the OS refuses
    excerpt(text, limit=40) -> str           a short, printable excerpt of untrusted text for error messages

Links are allowed as long as they stay inside the root. Checks run when a cohort is registered AND again right
before a job or a validation reads each file, so a file replaced by an outside link after registration is
refused too. (A link swapped in between the check and the open() is not caught: keep the data root writable
only by the people who may register cohorts.)
"""

from __future__ import annotations

import os
from pathlib import Path

from app.io.errors import CohortError

MAX_COMPONENT = 255  # NAME_MAX on Linux and macOS
MAX_PATH = 4096  # PATH_MAX on Linux


class PathEscapeError(CohortError):
    """A server-side path leaves its root (through a link or '..'), loops, or is not a valid path (422)."""


def excerpt(text: str, limit: int = 40) -> str:
    """`text` with control characters replaced by '?' and cut to `limit` characters ('…' appended)."""
    clean = "".join(c if c.isprintable() else "?" for c in str(text))
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def check_path_text(path: str | os.PathLike[str], *, what: str) -> None:
    """PathEscapeError for a NUL byte, a component over 255 bytes or a path over 4096 bytes."""
    text = os.fspath(path)
    if "\x00" in text:
        raise PathEscapeError(f"{what}: the path contains a NUL byte; give a plain directory path", file_name=what)
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise PathEscapeError(f"{what}: the path is longer than {MAX_PATH} bytes; use a shorter path", file_name=what)
    for part in Path(text).parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
            raise PathEscapeError(
                f"{what}: a path component is longer than {MAX_COMPONENT} bytes ({excerpt(part, 24)!r}); rename it",
                file_name=what,
            )


def confined(root: Path, path: Path, *, what: str) -> Path:
    """`path` fully resolved (links followed); it must lie inside the resolved `root`.

    Raises PathEscapeError naming `what` (a display name, never a server path) when the resolved path is
    outside `root`, when resolving loops, or when the OS refuses the path (too long, permission denied).
    """
    check_path_text(path, what=what)
    try:
        real_root = Path(os.path.realpath(root))
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError):
        raise PathEscapeError(
            f"{what}: the path cannot be resolved (a link loop, or a path the system refuses); fix the links",
            file_name=what,
        ) from None
    if resolved != real_root and not resolved.is_relative_to(real_root):
        raise PathEscapeError(
            f"{what}: the path links outside the allowed directory (the data root or the cohort directory); "
            "copy the file into the cohort directory instead of linking to it",
            file_name=what,
        )
    return resolved


def is_file(path: Path) -> bool:
    """Path.is_file() that answers False instead of raising (loops, names too long, permissions)."""
    try:
        return path.is_file()
    except (OSError, RuntimeError, ValueError):
        return False


def is_dir(path: Path) -> bool:
    """Path.is_dir() that answers False instead of raising (loops, names too long, permissions)."""
    try:
        return path.is_dir()
    except (OSError, RuntimeError, ValueError):
        return False
