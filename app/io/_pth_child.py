"""Child process of app.io.checkpoints: convert an untrusted .pth to safetensors under resource limits.

    python -I _pth_child.py SRC DST MEMORY_MB [CPU_S WATCH_FD REMOVE_SRC]

Dies with its parent: when WATCH_FD (the read end of a pipe whose write end only the parent holds) reaches
end-of-file — the parent exited or was killed — a watchdog thread removes DST (and SRC when REMOVE_SRC is 1,
i.e. SRC is the parent's upload temp file) and exits at once. RLIMIT_CPU = CPU_S (+5 s hard) is the
backstop when the watchdog cannot run. Imports torch, then caps its own address space (RLIMIT_AS) at
(current size + MEMORY_MB), runs
torch.load(SRC, weights_only=True, map_location="cpu"), extracts the state dict ({"model": sd},
{"state_dict": sd} or a bare dict of tensors) and writes it to DST as safetensors. Prints one JSON line:
{"ok": true, "tensors": n} or {"error": kind, "detail": text} with kind in unsafe|memory|corrupt|layout.
Standalone on purpose (imports no app code), so the parent can run it with `python -I`.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import sys
import threading
from typing import Any

MEMORY_HINTS = ("can't allocate memory", "out of memory", "cannot allocate memory", "std::bad_alloc")


def _vm_bytes() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[0])
    return pages * resource.getpagesize()


def _limit_memory(memory_mb: int) -> None:
    try:
        base = _vm_bytes()
    except OSError:  # no /proc (not Linux): only cap what can be measured
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    limit = base + memory_mb * 2**20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _state_dict(obj: Any, torch: Any) -> dict[str, Any]:
    """The tensors of a reference checkpoint; ValueError naming the offending key otherwise."""
    if not isinstance(obj, dict):
        raise ValueError(f"the file holds a {type(obj).__name__}, not a dict; save model.state_dict()")
    where = ""
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj, where = obj[key], key
            break
    else:
        if not any(isinstance(v, torch.Tensor) for v in obj.values()):
            keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
            raise ValueError(f"no 'model' state dict and no tensors (top-level keys: {keys})")
    for key, value in obj.items():
        shown = f"{where}[{key!r}]" if where else repr(key)
        if not isinstance(key, str):
            raise ValueError(f"key {shown} is not a string")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{shown} is not a tensor (it is a {type(value).__name__!r})")
    if not obj:
        raise ValueError(f"the state dict{' under ' + repr(where) if where else ''} is empty")
    if all(k.startswith("module.") for k in obj):  # saved from nn.DataParallel
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _unshared(state: dict[str, Any]) -> dict[str, Any]:
    """Contiguous tensors, cloning any that share storage (safetensors refuses shared tensors)."""
    out, seen = {}, set()
    for key, value in state.items():
        value = value.detach().contiguous()
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen and value.numel() else value
        seen.add(ptr)
    return out


def _classify(exc: BaseException) -> str:
    if isinstance(exc, MemoryError) or any(h in str(exc).lower() for h in MEMORY_HINTS):
        return "memory"
    if isinstance(exc, pickle.UnpicklingError):
        return "unsafe"
    return "corrupt"


def convert(src: str, dst: str, memory_mb: int) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    _limit_memory(memory_mb)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
        return {"error": _classify(exc), "detail": f"{type(exc).__name__}: {exc}"[:2000]}
    try:
        state = _unshared(_state_dict(obj, torch))
        save_file(state, dst)
    except ValueError as exc:
        return {"error": "layout", "detail": str(exc)}
    except BaseException as exc:  # noqa: BLE001
        return {"error": _classify(exc), "detail": f"{type(exc).__name__}: {exc}"[:2000]}
    return {"ok": True, "tensors": len(state)}


def _orphaned(watch_fd: int, paths: list[str]) -> None:
    """Block until the parent's end of the pipe closes, then remove `paths` and exit (status 70)."""
    try:
        while os.read(watch_fd, 1):
            pass
    except OSError:
        pass
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
    if len(paths) > 0:
        try:
            os.rmdir(os.path.dirname(paths[0]))  # the parent's private temp dir holding DST
        except OSError:
            pass
    os._exit(70)


def _die_with_parent(cpu_s: int, watch_fd: int, src: str, dst: str, remove_src: bool) -> None:
    if cpu_s > 0:
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        limit = cpu_s + 5 if hard == resource.RLIM_INFINITY else min(cpu_s + 5, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (min(cpu_s, limit), limit))
    if watch_fd >= 0:
        paths = [dst, src] if remove_src else [dst]
        threading.Thread(target=_orphaned, args=(watch_fd, paths), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 7):
        print(json.dumps({"error": "usage", "detail": "usage: _pth_child.py SRC DST MEMORY_MB [CPU_S FD RM]"}))
        return 2
    if len(argv) == 7:
        _die_with_parent(int(argv[4]), int(argv[5]), argv[1], argv[2], argv[6] == "1")
    result = convert(argv[1], argv[2], int(argv[3]))
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
