"""Model checkpoints: read `.safetensors` (native) and reference `.pth` files; write safetensors atomically.

A `.pth` is a pickle: it is never loaded in this process. A child process (`_pth_child.py`, run as
`python -I`) caps its address space (RLIMIT_AS = its size after importing torch + memory_mb) and its CPU time
(RLIMIT_CPU ≈ timeout_s), dies with this process (a pipe watchdog: it exits, removing its output — and the
upload when `remove_if_orphaned` — as soon as this process is gone), runs
torch.load(weights_only=True, map_location="cpu"), accepts {"model": state_dict} (or {"state_dict": …}, or
a bare dict of tensors) and writes safetensors to a temp file that this process then reads. The child is
killed after timeout_s. Formats are recognised by content, so store files without a suffix work.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor

from app.domain.task_vectors import StateDict
from app.io.errors import CheckpointFormatError, display_name_of, scrub_paths

log = logging.getLogger(__name__)
CHILD_SCRIPT = Path(__file__).with_name("_pth_child.py")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt")
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


def checkpoint_kind(path: Path) -> str | None:
    """'safetensors' or 'pickle' from the first bytes; None when neither."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 2**27:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pickle"
    return None


def read_checkpoint(path: str | os.PathLike[str], *, display_name: str | None = None, timeout_s: float = 60,
                    memory_mb: int = 4096, remove_if_orphaned: bool = False) -> StateDict:  # fmt: skip
    """A checkpoint file -> {key: tensor} (CPU). Raises CheckpointFormatError naming the file and the fix.

    remove_if_orphaned: `path` is a temp upload; the .pth child deletes it if this process dies meanwhile."""
    path = Path(path)
    name = display_name_of(path, display_name)
    if not path.is_file():
        raise CheckpointFormatError(f"{name}: checkpoint file not found; upload it again", file_name=name)
    kind = checkpoint_kind(path)
    if kind == "safetensors":
        return _read_safetensors(path, name)
    if kind == "pickle":
        return _convert_pth(path, name, timeout_s, memory_mb, remove_if_orphaned)
    suffix = path.suffix.lower() or Path(display_name or "").suffix.lower()
    what = "not a valid safetensors file" if suffix == ".safetensors" else f"not a checkpoint (suffix {suffix!r})"
    raise CheckpointFormatError(
        f"{name}: {what}; supported are {', '.join(CHECKPOINT_SUFFIXES)} (safetensors, or a torch.save of "
        "{'model': state_dict})",
        file_name=name,
    )


def _read_safetensors(path: Path, name: str) -> StateDict:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and friends on truncated/garbled files
        raise CheckpointFormatError(
            f"{name}: cannot read the safetensors file — it is truncated or corrupt "
            f"({scrub_paths(f'{type(exc).__name__}: {exc}', path, name)}); re-export or re-upload it",
            file_name=name,
        ) from None
    if not state:
        raise CheckpointFormatError(f"{name}: the checkpoint holds no tensors", file_name=name)
    return state


def _convert_pth(
    path: Path, name: str, timeout_s: float, memory_mb: int, remove_if_orphaned: bool = False
) -> StateDict:
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="steph-pth-") as tmp:
        dst = Path(tmp) / "state.safetensors"
        result = _run_child(path, dst, name, timeout_s, memory_mb, remove_if_orphaned)
        if not result.get("ok"):
            raise _child_error(result, path, name, memory_mb)
        return load_file(str(dst), device="cpu")


def _run_child(path: Path, dst: Path, name: str, timeout_s: float, memory_mb: int, remove_src: bool = False) -> dict:
    """Run the child; only this process holds the pipe's write end, so the child sees EOF when it dies."""
    watch_r, watch_w = os.pipe()
    cpu_s = max(1, math.ceil(timeout_s)) + 5
    cmd = [sys.executable, "-I", str(CHILD_SCRIPT), str(path.resolve()), str(dst), str(int(memory_mb)),
           str(cpu_s), str(watch_r), "1" if remove_src else "0"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=dst.parent,
                              env={**os.environ, **_CHILD_ENV}, pass_fds=(watch_r,))  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CheckpointFormatError(
            f"{name}: conversion took longer than {timeout_s:g} s and was stopped; the file is too large or "
            "malformed — convert it to .safetensors yourself or raise the time limit",
            file_name=name,
        ) from None
    finally:
        os.close(watch_r)
        os.close(watch_w)
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        log.warning("pth conversion of %s crashed (rc=%s): %s", name, proc.returncode, proc.stderr[-2000:])
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return {
            "error": "memory" if proc.returncode < 0 else "crash",
            "detail": f"the loader stopped with {how}",
        }


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unsafe_detail(detail: str) -> str:
    """What torch's weights-only loader refused, without its terminal colours and without its advice to load
    the file with weights_only=False (i.e. to run whatever code it holds): the class it met, when it names one."""
    text = _ANSI.sub("", detail)
    found = _GLOBAL.search(text)
    if found:
        return f"it holds an object of type {found.group(1)}"
    return text.split(". This file can still be loaded")[0].split("\n")[0].strip()  # (the class is not named)


def _child_error(result: dict, path: Path, name: str, memory_mb: int) -> CheckpointFormatError:
    kind = result.get("error")
    raw = str(result.get("detail", "")).replace(str(path.resolve()), name)
    detail = scrub_paths(_unsafe_detail(raw) if kind == "unsafe" else raw, path, name)
    if kind == "unsafe":
        msg = (
            f"refusing to load: the checkpoint holds Python objects other than tensors, which could run code "
            f"({detail}); re-save only the weights: torch.save({{'model': model.state_dict()}}, path)"
        )
    elif kind == "memory":
        msg = (
            f"loading the checkpoint needs more than the {memory_mb} MB memory limit ({detail}); "
            "convert it to .safetensors yourself or raise the limit"
        )
    elif kind == "layout":
        msg = f"{detail}; the file must hold {{'model': state_dict}} or a dict of tensors"
    else:
        msg = f"cannot read the checkpoint — it is truncated or not a torch file ({detail}); re-export it"
    return CheckpointFormatError(f"{name}: {msg}", file_name=name)


def write_checkpoint(path: str | os.PathLike[str], state: dict[str, Tensor],
                     metadata: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write `state` as safetensors atomically: a temp file in the same directory, fsync, os.replace.

    Non-string metadata values are stored as JSON. Tensors are moved to CPU and made contiguous; tensors
    sharing storage are cloned. Returns the path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors, seen = {}, set()
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        tensors[key] = value.clone() if ptr in seen and value.numel() else value
        seen.add(ptr)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta or None)
        with open(tmp, "rb+") as fh:
            _sort_metadata(fh)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _sort_metadata(fh: Any) -> None:
    """Rewrite a just-written safetensors header with its metadata keys sorted, in place: the writer stores
    metadata in hash order, different on every run, so the same tensors and metadata gave different file bytes
    (and sha256) each time. Same JSON, same length; left as written if that cannot be guaranteed."""
    fh.seek(0)
    size = int.from_bytes(fh.read(8), "little")
    raw = fh.read(size)
    header = json.loads(raw)
    if not isinstance(header.get("__metadata__"), dict):
        return
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    out = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(out) != len(raw.rstrip(b" ")):
        return
    fh.seek(8)
    fh.write(out + b" " * (size - len(out)))
    fh.flush()


def import_reference_checkpoint(pth_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *,
                                display_name: str | None = None, timeout_s: float = 60,
                                memory_mb: int = 4096) -> StateDict:  # fmt: skip
    """Convert a reference ABMIL `.pth` ({"model": state_dict}) to safetensors at `out_path`.

    Checks the ABMIL layout (SPEC §2) — CheckpointFormatError naming the missing key otherwise.
    """
    from app.domain.mil import infer_dims

    name = display_name_of(pth_path, display_name)
    state = read_checkpoint(pth_path, display_name=name, timeout_s=timeout_s, memory_mb=memory_mb)
    try:
        dims = infer_dims(state)
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: {exc.args[0]}", file_name=name) from None
    write_checkpoint(out_path, state, {"format": "abmil-state-dict", "dims": json.dumps(dims.to_dict())})
    return state
