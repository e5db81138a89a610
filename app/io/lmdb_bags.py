"""Read the reference code's per-cancer LMDB of bags (SPEC §4), never in the server process.

Layout: key = slide id (utf-8), value = pickle of a torch tensor [1, N, D] (or [N, D]);
key `__keys__` = pickle of the list of slide ids. A corrupt data.mdb can crash whoever maps it (SIGBUS), so
the LMDB is opened only by a child process (app.io._lmdb_child) with an address-space limit, which decodes
values with `safe_unpickle.restricted_loads`, validates them and streams float32 [N, D] back. A crash, a
timeout or a refusal there becomes a BagFormatError (422) here; the server and its embedded jobs live on.
"""

from __future__ import annotations

import json
import os
import select
import signal
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

from app.io.errors import BagFormatError, display_name_of
from app.io.limits import check_request_bytes, process_budget, request_limit_bytes

KEYS_KEY = b"__keys__"
START_TIMEOUT_S = 60.0
MAX_CRASHES = 2  # a child that crashed this often marks the LMDB as unreadable


class _Child:
    """One reader process and its pipes; `request` sends a JSON line and returns (reply, payload reader)."""

    def __init__(self, path: Path, name: str, memory_mb: int) -> None:
        cmd = [sys.executable, "-I", "-m", "app.io._lmdb_child", str(path), "1" if path.is_dir() else "0",
               str(memory_mb), name]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0
        )
        self.pending = b""

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")

    def _chunk(self, deadline: float, size: int) -> bytes:
        assert self.proc.stdout is not None
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
            raise TimeoutError
        data = os.read(self.proc.stdout.fileno(), size)
        if not data:
            raise EOFError
        return data

    def line(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.pending:
            if len(self.pending) > 2**26:
                raise EOFError
            self.pending += self._chunk(deadline, 1 << 16)
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def read_into(self, out: memoryview, deadline: float) -> None:
        got = min(len(self.pending), len(out))
        out[:got] = self.pending[:got]
        self.pending = self.pending[got:]
        while got < len(out):
            data = self._chunk(deadline, min(len(out) - got, 1 << 22))
            out[got : got + len(data)] = data
            got += len(data)

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


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
        self._finalizer = weakref.finalize(self, _stop, child.proc)
        try:
            reply = child.line(time.monotonic() + START_TIMEOUT_S)
        except (EOFError, TimeoutError, ValueError):
            reply = {"error": self._crash_text(child, "opening it")}
        if "error" in reply:
            child.stop()
            raise BagFormatError(str(reply["error"]), file_name=self.name)
        self._child = child
        return child

    def _crash_text(self, child: _Child, doing: str) -> str:
        child.stop()
        code = child.proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
        return (
            f"{self.name}: the LMDB is corrupt or not an LMDB: reading it crashed the reader while {doing} "
            f"({how}); rebuild the LMDB (the server is unaffected)"
        )

    def _call(self, msg: dict[str, Any], doing: str) -> tuple[_Child, dict[str, Any], float]:
        """Send one request (restarting a crashed child) -> (child, reply, deadline); BagFormatError on failure."""
        if self._broken:
            raise BagFormatError(self._broken, file_name=self.name)
        child = self._child if self._child is not None and self._child.proc.poll() is None else self._start()
        deadline = time.monotonic() + self.timeout_s
        try:
            child.send(msg)
            reply = child.line(deadline)
        except (EOFError, BrokenPipeError, ValueError, TimeoutError) as exc:
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
                    child.read_into(memoryview(out.numpy()).cast("B"), deadline)
                except (EOFError, TimeoutError) as exc:
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
