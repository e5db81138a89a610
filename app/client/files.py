"""Local file helpers for uploads: multipart parts (re-opened on every retry) and zipping a cohort folder."""

from __future__ import annotations

import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any


def file_part(stack: ExitStack, path: Path) -> tuple[str, Any, str]:
    """A multipart file part (name, open file, content type); the file is closed when `stack` closes."""
    return (path.name, stack.enter_context(path.open("rb")), "application/octet-stream")


def zip_directory(directory: Path, dest: Path) -> Path:
    """Zip `directory`'s files (paths relative to it, sorted) into `dest`; returns `dest`."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory).as_posix())
    return dest
