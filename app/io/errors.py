"""Errors raised by the file readers in app.io.

Every reader raises a subclass of `InputFileError` (a ValueError) whose message names the file (its display
name only, never a server path), what is wrong with it and how to fix it. `.file_name` (alias `.path_name`)
holds that display name so the API can report it in a structured way.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

_ABS_PATH = re.compile(r"(?:[A-Za-z]:)?[/\\](?:[^\s'\",()/\\]+[/\\])+([^\s'\",()/\\]*)")


def display_name_of(path: str | os.PathLike[str] | None, display_name: str | None = None) -> str:
    """The name to show to users: `display_name` when given, else the file's base name (never a full path)."""
    if display_name:
        return safe_name(display_name)
    if path is None:
        return "<input>"
    return PurePath(os.fspath(path)).name or "<input>"


def safe_name(name: str) -> str:
    """`name` unless it is an absolute path, in which case only its last component (hides server paths)."""
    name = str(name)
    if os.path.isabs(name):
        return PurePath(name).name or "<input>"
    return name


def scrub_paths(text: str, path: str | os.PathLike[str] | None = None, name: str = "", limit: int = 300) -> str:
    """`text` (e.g. a library's error message) with `path` replaced by `name` and every other absolute path
    reduced to its base name, cut to `limit` characters — safe to show to API users."""
    if path is not None:
        text = text.replace(os.fspath(path), name)
    text = _ABS_PATH.sub(r"\1", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputFileError(ValueError):
    """A user-supplied file is unusable. `str(exc)` names the file, the problem and the fix.

    InputFileError(message, file_name=None) — `path_name=` is accepted as an alias of `file_name`.
    """

    def __init__(self, message: str, *, file_name: str | None = None, path_name: str | None = None) -> None:
        super().__init__(message)
        name = file_name if file_name is not None else path_name
        self.file_name: str = safe_name(name) if name is not None else ""

    @property
    def path_name(self) -> str:
        return self.file_name

    @property
    def message(self) -> str:
        return str(self)


class BagFormatError(InputFileError):
    """A feature bag (.h5/.hdf5/.pt/.npy/.safetensors or LMDB value) cannot be used."""


class CheckpointFormatError(InputFileError):
    """A model checkpoint (.safetensors or reference .pth) cannot be read."""


class LabelError(InputFileError):
    """A labels or splits CSV is malformed (the message names the line and column)."""


class CohortError(InputFileError):
    """A cohort directory is inconsistent (missing bags, unknown patients in splits, bad bags...)."""


class ArtifactError(InputFileError):
    """A model artifact is unreadable, corrupt or does not match its expected sha256."""
