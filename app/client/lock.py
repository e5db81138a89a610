"""One `score` run per output file: an exclusive, non-blocking `fcntl.flock` on a sibling `<output>.lock`.

The lock is taken before anything is read and held until the run ends, on every path (success, error, Ctrl-C;
a killed process loses it with its file descriptors). The lock file is removed on release; a run that locked a
file another run had just removed notices (the path no longer names the file it locked) and tries again, so two
runs never both believe they hold the lock. Platforms without `fcntl` (Windows) run without the lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.client.outputs import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class OutputLocked(OutputError):
    """Another steph-client run holds the lock on this output (exit code 2)."""


def lock_path(path: Path) -> Path:
    """The lock file of an output: `<output>.lock` next to it (symbolic links resolved)."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".lock")


def _acquire(lock: Path, path: Path, what: str) -> int:
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {lock} for {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLocked(
                f"another steph-client run is writing {what} {path} (it holds {lock}); "
                "this run stops without changing it: let that run finish, then run again to resume"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one


@contextmanager
def exclusive(path: Path, what: str = "the output") -> Iterator[None]:
    """Hold the lock of `path` for the block; OutputLocked at once when another run holds it."""
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    lock = lock_path(path)
    fd = _acquire(lock, path, what)
    try:
        yield
    finally:
        try:
            os.unlink(lock)  # while still holding it: see the module docstring
        except OSError:
            pass
        os.close(fd)
