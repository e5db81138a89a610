"""Child process of app.io.lmdb_bags: reads an untrusted LMDB where a crash cannot hurt the server.

    python -I -m app.io._lmdb_child PATH SUBDIR(0|1) MEMORY_MB DISPLAY_NAME

A corrupt data.mdb can make LMDB touch pages past the end of the mapped file (SIGBUS) or loop; here that kills
only this process. It opens the LMDB read-only, caps its address space at (mapped size + MEMORY_MB), dies with
its parent, then answers requests, one JSON line each, on stdin:

    {"op": "keys"}                                     -> {"ok": true, "keys": [...]}
    {"op": "get", "key": K, "expected_dim": D|null, "max_patches": N|null, "max_bytes": B}
        -> {"ok": true, "shape": [N, D]} + N*D*4 raw float32 bytes (validated: finite, D, N; restricted unpickler)
    any failure                                        -> {"error": "<message naming the file and the fix>"}

The first line it writes is {"ok": true} once the LMDB is open (or {"error": ...}).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from typing import IO, Any

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


def _send(out: IO[bytes], msg: dict[str, Any], payload: memoryview | None = None) -> None:
    out.write(json.dumps(msg).encode() + b"\n")
    if payload is not None:
        out.write(payload)
    out.flush()


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
        return {"ok": True, "shape": list(features.shape)}, memoryview(features.numpy()).cast("B")


class _Refused(Exception):
    """A clean, user-facing refusal (the message is sent as is)."""


def _handle(reader: Reader, req: dict[str, Any], out: IO[bytes]) -> None:
    from app.io.errors import InputFileError

    try:
        if req.get("op") == "keys":
            _send(out, {"ok": True, "keys": reader.keys()})
        else:
            msg, payload = reader.get(req)
            _send(out, msg, payload)
    except (_Refused, InputFileError) as exc:
        _send(out, {"error": str(exc)})
    except MemoryError:
        _send(out, {"error": f"{reader.name}: a value does not fit in the reader's memory limit; subsample it"})
    except Exception as exc:  # noqa: BLE001 - lmdb.Error and friends: a corrupt database
        detail = f"{type(exc).__name__}: {exc}"[:200]
        _send(out, {"error": f"{reader.name}: the LMDB is corrupt ({detail}); rebuild it"})


def main(argv: list[str]) -> int:
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    path, subdir, memory_mb, name = argv[1], argv[2] == "1", int(argv[3]), argv[4]
    try:
        import lmdb
        import torch

        torch.set_num_threads(1)
        env = lmdb.open(path, readonly=True, lock=False, subdir=subdir, readahead=False, max_readers=4)
        _limit_memory(memory_mb)
    except Exception as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {exc}".replace(path, name)[:200]
        _send(out, {"error": f"{name}: not a readable LMDB ({detail}); pass the LMDB directory (holding data.mdb)"})
        return 1
    _send(out, {"ok": True})
    reader = Reader(env, name)
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
        except ValueError:
            return 2
        _handle(reader, req, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
