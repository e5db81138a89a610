"""Child process of app.io.lmdb_bags: reads an untrusted LMDB where a crash cannot hurt the server.

    python -I -c "…main(sys.argv)" FD     a fork server: preloads torch once, then for every request on the
                                           Unix socket FD (JSON args + one passed socket) forks a reader that
                                           runs serve(channel, path, subdir, memory_mb, name)

A corrupt data.mdb can make LMDB touch pages past the end of the mapped file (SIGBUS) or loop; here that kills
only this process. It dies with its parent, opens the LMDB read-only, caps its address space at (what is mapped
+ MEMORY_MB), then answers requests (JSON messages on `conn`):

    {"op": "keys"}                                     -> {"ok": true, "keys": [...]}
    {"op": "get", "key": K, "expected_dim": D|null, "max_patches": N|null, "max_bytes": B}
        -> {"ok": true, "shape": [N, D]}, then one message of N*D*4 raw float32 bytes (validated: finite, D, N,
           decoded by the restricted unpickler)
    any failure                                        -> {"error": "<message naming the file and the fix>"}

The first message it sends is {"ok": true} once the LMDB is open (or {"error": ...}).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
from typing import Any

from app.io._channel import Channel

MAX_KEYS = 10_000_000


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: stdin EOF still ends the loop
        pass


def _limit_memory(memory_mb: int) -> None:
    with open("/proc/self/statm") as fh:
        vm = int(fh.read().split()[0]) * resource.getpagesize()
    limit = vm + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _send(conn: Any, msg: dict[str, Any], payload: memoryview | None = None) -> None:
    conn.send_bytes(json.dumps(msg).encode())
    if payload is not None:
        conn.send_bytes(payload)


class Reader:
    """Requests against one open LMDB (see the module docstring)."""

    def __init__(self, env: Any, name: str) -> None:
        self.env, self.name = env, name

    def keys(self) -> list[str]:
        with self.env.begin() as txn:
            raw = txn.get(b"__keys__")
            if raw is None:
                out = []
                for k in txn.cursor().iternext(keys=True, values=False):
                    if k != b"__keys__":
                        out.append(bytes(k).decode("utf-8", "replace"))
                    if len(out) > MAX_KEYS:
                        raise ValueError(f"more than {MAX_KEYS} keys")
                return out
        ids = self.decode(raw, "key '__keys__'")
        if not isinstance(ids, list | tuple) or not all(isinstance(i, str | bytes) for i in ids):
            raise _Refused(f"{self.name}: '__keys__' must be a list of slide ids")
        return [i.decode("utf-8", "replace") if isinstance(i, bytes) else i for i in ids]

    def decode(self, raw: bytes, what: str) -> Any:
        from app.io.safe_unpickle import UnsafePickleError, restricted_loads

        try:
            return restricted_loads(raw)
        except UnsafePickleError as exc:
            raise _Refused(
                f"{self.name}: {what}: {exc} — values must be pickled tensors only; rebuild the LMDB from plain tensors"
            ) from None
        except Exception as exc:  # noqa: BLE001 - garbage of any kind is a clean refusal
            detail = f"{type(exc).__name__}: {exc}"[:200]
            raise _Refused(f"{self.name}: {what} is not a valid pickled tensor ({detail}); rebuild the LMDB") from None

    def get(self, req: dict[str, Any]) -> tuple[dict[str, Any], memoryview]:
        from app.io._bag_formats import RawBag
        from app.io.bags import validate_raw_bag

        key = str(req["key"])
        with self.env.begin() as txn:
            raw = txn.get(key.encode("utf-8"))
            if raw is None:
                raise _Refused(f"{self.name}: no slide {key!r} in the LMDB; check the pathology_id in the labels")
            if len(raw) > int(req["max_bytes"]):
                raise _Refused(
                    f"{self.name}: slide {key!r} takes {len(raw)} bytes, more than the per-request limit of "
                    f"{req['max_bytes']} (STEPH_REQUEST_MEMORY_MB); subsample the patches"
                )
            raw = bytes(raw)
        value = self.decode(raw, f"slide {key!r}")
        del raw
        bag = validate_raw_bag(
            RawBag(value, None), f"{self.name}[{key}]", req.get("expected_dim"), req.get("max_patches")
        )
        features = bag.features.contiguous()
        return {"ok": True, "shape": list(features.shape)}, memoryview(features.numpy().data).cast("B")


class _Refused(Exception):
    """A clean, user-facing refusal (the message is sent as is)."""


def _handle(reader: Reader, req: dict[str, Any], conn: Any) -> None:
    from app.io.errors import InputFileError

    try:
        if req.get("op") == "keys":
            _send(conn, {"ok": True, "keys": reader.keys()})
        else:
            msg, payload = reader.get(req)
            _send(conn, msg, payload)
    except (_Refused, InputFileError) as exc:
        _send(conn, {"error": str(exc)})
    except MemoryError:
        _send(conn, {"error": f"{reader.name}: a value does not fit in the reader's memory limit; subsample it"})
    except Exception as exc:  # noqa: BLE001 - lmdb.Error and friends: a corrupt database
        detail = f"{type(exc).__name__}: {exc}"[:200]
        _send(conn, {"error": f"{reader.name}: the LMDB is corrupt ({detail}); rebuild it"})


def serve(conn: Any, path: str, subdir: bool, memory_mb: int, name: str) -> None:
    """The child's main loop (see the module docstring); returns when the parent closes its end."""
    _die_with_parent()
    try:
        import lmdb
        import torch

        torch.set_num_threads(1)
        env = lmdb.open(path, readonly=True, lock=False, subdir=subdir, readahead=False, max_readers=4)
        _limit_memory(memory_mb)
    except Exception as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {exc}".replace(path, name)[:200]
        _send(conn, {"error": f"{name}: not a readable LMDB ({detail}); pass the LMDB directory (holding data.mdb)"})
        return
    _send(conn, {"ok": True})
    reader = Reader(env, name)
    while True:
        try:
            req = json.loads(conn.recv_bytes())
        except (EOFError, OSError, ValueError, TimeoutError):
            return
        _handle(reader, req, conn)


def fork_server(fd: int) -> None:
    """Fork one reader per request received on socket `fd`; exit when the parent closes it or dies (the kernel
    closes a dead process's sockets). No PR_SET_PDEATHSIG here: it fires when the *thread* that started this
    server exits, and the API starts it from any worker thread. Readers do use it (this server is one thread)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # readers are reaped automatically
    ctl = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 1)
        except OSError:
            return
        if not msg:
            return
        if len(fds) != 1:
            continue
        if os.fork() == 0:  # the reader
            code = 0
            try:
                ctl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                args = json.loads(msg)
                serve(Channel(socket.socket(fileno=fds[0])), args["path"], bool(args["subdir"]),
                      int(args["memory_mb"]), str(args["name"]))  # fmt: skip
            except BaseException:  # noqa: BLE001 - the parent sees EOF and reports a crash
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])


def _preload() -> None:
    """The heavy imports, once in the fork server (readers inherit them)."""
    import lmdb  # noqa: F401
    import torch  # noqa: F401

    import app.io.bags  # noqa: F401
    import app.io.safe_unpickle  # noqa: F401


def main(argv: list[str]) -> None:
    """Entry point of the fork server: `main([prog, FD])`."""
    _preload()
    fork_server(int(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
