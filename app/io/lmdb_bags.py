"""Read the reference code's per-cancer LMDB of bags (SPEC §4), never in the server process.

Layout: key = slide id (utf-8), value = pickle of a torch tensor [1, N, D] (or [N, D]);
key `__keys__` = pickle of the list of slide ids. A corrupt data.mdb can crash whoever maps it (SIGBUS), so
the LMDB is opened only by a child process (app.io._lmdb_child, forked from a small server process that
preloads torch once) with an address-space limit, which decodes
values with `safe_unpickle.restricted_loads`, validates them and streams float32 [N, D] back. A crash, a
timeout or a refusal there becomes a BagFormatError (422) here; the server and its embedded jobs live on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor

from app.io._channel import Channel
from app.io.errors import BagFormatError, display_name_of
from app.io.limits import check_request_bytes, process_budget, request_limit_bytes

KEYS_KEY = b"__keys__"
START_TIMEOUT_S = 60.0
MAX_CRASHES = 2  # a child that crashed this often marks the LMDB as unreadable


class _ForkServer:
    """`python -I` running app.io._lmdb_child.main(FD): preloads torch once, forks one reader per LMDB (~0.1 s each)."""

    def __init__(self) -> None:
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = str(Path(__file__).resolve().parents[2])  # the directory holding `app`, importable under -I too
        boot = f"import sys; sys.path.insert(0, {root!r}); from app.io._lmdb_child import main; main(sys.argv)"
        cmd = [sys.executable, "-I", "-c", boot, str(theirs.fileno())]
        self.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self.pid = os.getpid()  # a forked API worker starts its own server
        theirs.close()

    def fork(self, args: dict[str, Any]) -> socket.socket:
        """A connected socket to a new reader started with `args` (OSError when the server is gone)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self.ctl, [json.dumps(args).encode()], [theirs.fileno()])
        finally:
            theirs.close()
        return mine


_SERVER: _ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def _fork_reader(args: dict[str, Any]) -> socket.socket:
    global _SERVER
    with _SERVER_LOCK:
        for _ in range(2):
            if _SERVER is None or _SERVER.pid != os.getpid() or _SERVER.proc.poll() is not None:
                _SERVER = _ForkServer()
            try:
                return _SERVER.fork(args)
            except OSError:
                _SERVER = None
        raise OSError("the LMDB reader server cannot be started")


class _Child:
    """One reader process (app.io._lmdb_child.serve) and the parent's end of its socket."""

    def __init__(self, path: Path, name: str, memory_mb: int) -> None:
        args = {"path": str(path), "subdir": path.is_dir(), "memory_mb": memory_mb, "name": name}
        self.conn = Channel(_fork_reader(args))

    def send(self, msg: dict[str, Any]) -> None:
        self.conn.send_bytes(json.dumps(msg).encode())

    def line(self, deadline: float) -> dict[str, Any]:
        reply = json.loads(self.conn.recv_bytes(deadline))
        if not isinstance(reply, dict):
            raise ValueError("malformed reply")
        return reply

    def read_into(self, out: memoryview, deadline: float) -> None:
        self.conn.recv_bytes_into(out, deadline)

    def stop(self) -> None:
        _stop(self.conn)


def _stop(conn: Channel) -> None:
    """Closing our end makes the reader's recv fail and the reader exit (a stuck one dies with the server)."""
    conn.close()


class LmdbBags:
    """An LMDB of bags read through a contained child process. Context manager; `keys()`, `get(slide_id)`."""

    def __init__(self, path: str | os.PathLike[str], *, display_name: str | None = None,
                 timeout_s: float | None = None) -> None:  # fmt: skip
        self.path = Path(path)
        self.name = display_name_of(self.path, display_name)
        if not self.path.exists():
            raise BagFormatError(f"{self.name}: LMDB not found; upload it or fix the path", file_name=self.name)
        self.timeout_s = timeout_s if timeout_s is not None else _setting("lmdb_timeout_s", 120.0)
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._keys: list[str] | None = None
        self._crashes = 0
        self._broken: str | None = None
        with self._lock:
            self._start()

    def _start(self) -> _Child:
        memory_mb = 3 * request_limit_bytes() // 2**20 + 512
        child = _Child(self.path, self.name, memory_mb)
        self._finalizer = weakref.finalize(self, _stop, child.conn)
        try:
            reply = child.line(time.monotonic() + START_TIMEOUT_S)
        except (EOFError, OSError, TimeoutError, ValueError):
            reply = {"error": self._crash_text(child, "opening it")}
        if "error" in reply:
            child.stop()
            raise BagFormatError(str(reply["error"]), file_name=self.name)
        self._child = child
        return child

    def _crash_text(self, child: _Child, doing: str) -> str:
        child.stop()
        return (
            f"{self.name}: the LMDB is corrupt or not an LMDB: reading it crashed the reader while {doing}; "
            "rebuild the LMDB (the server is unaffected)"
        )

    def _call(self, msg: dict[str, Any], doing: str) -> tuple[_Child, dict[str, Any], float]:
        """Send one request (restarting a crashed child) -> (child, reply, deadline); BagFormatError on failure."""
        if self._broken:
            raise BagFormatError(self._broken, file_name=self.name)
        child = self._child if self._child is not None else self._start()
        deadline = time.monotonic() + self.timeout_s
        try:
            child.send(msg)
            reply = child.line(deadline)
        except (EOFError, OSError, ValueError, TimeoutError) as exc:
            self._fail(child, doing, isinstance(exc, TimeoutError))
        if "error" in reply:
            raise BagFormatError(str(reply["error"]), file_name=self.name)
        return child, reply, deadline

    def _fail(self, child: _Child, doing: str, timed_out: bool) -> NoReturn:
        self._child = None
        if timed_out:
            child.stop()
            text = (f"{self.name}: reading it took longer than {self.timeout_s:g} s while {doing} "
                    "(STEPH_LMDB_TIMEOUT_S); the LMDB may be corrupt — rebuild it")  # fmt: skip
        else:
            text = self._crash_text(child, doing)
        self._crashes += 1
        if self._crashes >= MAX_CRASHES:
            self._broken = text
        raise BagFormatError(text, file_name=self.name)

    def __enter__(self) -> LmdbBags:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._child is not None:
                self._child.stop()
                self._child = None

    def keys(self) -> list[str]:
        """Slide ids: the `__keys__` list when present, else every key of the database."""
        with self._lock:
            if self._keys is None:
                _, reply, _ = self._call({"op": "keys"}, "listing its keys")
                self._keys = [str(k) for k in reply["keys"]]
            return list(self._keys)

    def get(self, slide_id: str, *, expected_dim: int | None = None, max_patches: int | None = None) -> Tensor:
        """The bag of `slide_id` as float32 [N, D] (a stored [1, N, D] is squeezed), validated in the child."""
        limit = request_limit_bytes()
        msg = {"op": "get", "key": slide_id, "expected_dim": expected_dim, "max_patches": max_patches,
               "max_bytes": limit}  # fmt: skip
        with self._lock:
            child, reply, deadline = self._call(msg, f"reading slide {slide_id!r}")
            shape = reply.get("shape")
            if not (isinstance(shape, list) and len(shape) == 2 and all(type(s) is int and s > 0 for s in shape)):
                self._fail(child, f"reading slide {slide_id!r}", False)
            n_bytes = shape[0] * shape[1] * 4
            budget = process_budget()
            try:
                check_request_bytes(n_bytes, limit, f"{self.name}[{slide_id}]")
                budget.reserve(n_bytes, what=f"{self.name}[{slide_id}]")
            except BaseException:  # the payload is still in the pipe: drop this child, a fresh one starts next
                self._child = None
                child.stop()
                raise
            try:
                out = torch.empty(shape, dtype=torch.float32)
                try:
                    child.read_into(memoryview(out.numpy().data).cast("B"), deadline)
                except (EOFError, OSError, TimeoutError) as exc:
                    self._fail(child, f"reading slide {slide_id!r}", isinstance(exc, TimeoutError))
            finally:
                budget.release(n_bytes)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def _setting(name: str, default: float) -> float:
    from app.settings import get_settings

    return float(getattr(get_settings(), name, default))


def read_lmdb_bags(
    path: str | os.PathLike[str], *, expected_dim: int | None = None, display_name: str | None = None
) -> dict[str, Tensor]:
    """Every bag of a reference LMDB -> {slide_id: float32 [N, D]} (in `__keys__` order)."""
    with LmdbBags(path, display_name=display_name) as db:
        return {sid: db.get(sid, expected_dim=expected_dim) for sid in db.keys()}


def read_lmdb_bag(
    path: str | os.PathLike[str], slide_id: str, *, expected_dim: int | None = None,
    display_name: str | None = None,
) -> Tensor:  # fmt: skip
    """One bag of a reference LMDB -> float32 [N, D]."""
    with LmdbBags(path, display_name=display_name) as db:
        return db.get(slide_id, expected_dim=expected_dim)
