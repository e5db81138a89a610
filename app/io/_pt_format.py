""".pt bags (torch.save zip or legacy format): every declared size is checked before torch.load allocates.

`peek_pt` walks the file's pickle with `_PeekUnpickler`, which builds no tensor: storages become StorageRef
(dtype, element count, record) and `_rebuild_tensor_v2` calls become TensorRef (offset, size, stride). Checked:
  - only dense tensors (sparse, quantized, nested and other rebuild functions are refused with a message);
  - a view never holds more elements than its storage (a stride-0 view of 1 KB cannot become 1 GB);
  - every storage record is stored uncompressed (torch.save never compresses), lies inside the file and is
    exactly as large as the pickle says; legacy files hold the bytes they declare;
  - the pickle itself is small (MAX_PICKLE_BYTES).
`torch.load(weights_only=True)` then allocates only the storages that passed (PtHeader.load_bytes).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from app.io.errors import BagFormatError

MAX_PICKLE_BYTES = 4 * 2**20
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}  # fmt: skip
_DTYPE_NAMES = {str(d).removeprefix("torch."): d for d in _STORAGES.values()}


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


@dataclass(frozen=True)
class TensorRef:
    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype


@dataclass(frozen=True)
class PtHeader:
    features: TensorRef
    coords: TensorRef | None
    load_bytes: int  # bytes torch.load allocates: every storage the pickle references


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _PeekUnpickler(pickle.Unpickler):
    """Records storages and tensor views; resolves only the globals torch.save emits for dense tensors."""

    def __init__(self, file: IO[bytes], name: str) -> None:
        super().__init__(file)
        self.name = name
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *_: data
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module in ("torch", "torch.storage") and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if module == "torch" and name == "Size":
            return tuple
        if module == "torch" and name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
        if (module, name) == ("_codecs", "encode"):
            return lambda text, enc="latin1": str(text).encode(str(enc))
        low = name.lower()
        kind = "sparse" if "sparse" in low else "quantized" if "qtensor" in low or "qint" in low else None
        if module.startswith("torch") and kind:
            raise BagFormatError(
                f"{self.name}: the features are a {kind} tensor; save a dense float tensor: "
                "torch.save({'features': t.to_dense().float()}, path)",
                file_name=self.name,
            )
        raise BagFormatError(
            f"{self.name}: refusing to load {module}.{name}: the file holds Python objects other than dense "
            "tensors; save only tensors: torch.save({'features': t}, path)",
            file_name=self.name,
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        ok = isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0:
            raise BagFormatError(f"{self.name}: a tensor storage record is malformed; re-save it", file_name=self.name)
        if len(pid) == 6 and pid[5] is not None:
            raise BagFormatError(f"{self.name}: storage views are not supported; re-save the bag", file_name=self.name)
        ref = StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]))
        if self.storages.setdefault(ref.key, ref) != ref:
            raise BagFormatError(f"{self.name}: storage {ref.key!r} is declared twice; re-save it", file_name=self.name)
        return ref

    def _tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
        ints = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
        if not isinstance(storage, StorageRef) or ints is None or not all(type(v) is int and v >= 0 for v in ints):
            raise BagFormatError(f"{self.name}: a tensor header is malformed; re-save the bag", file_name=self.name)
        ref = TensorRef(storage, offset, tuple(size), tuple(stride))
        _check_view(ref, self.name)
        return ref


def _check_view(ref: TensorRef, name: str) -> None:
    """A view must stay inside its storage and hold no more elements than it (no stride-0 amplification)."""
    if len(ref.size) != len(ref.stride):
        raise BagFormatError(f"{name}: a tensor header is malformed; re-save the bag", file_name=name)
    numel = math.prod(ref.size)
    last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride, strict=True)) if numel else 0
    if numel and (last >= ref.storage.numel or numel > ref.storage.numel - ref.offset):
        raise BagFormatError(
            f"{name}: a tensor of shape {list(ref.size)} is a view that repeats the {ref.storage.numel} value(s) of "
            "its storage (overlapping or zero strides, or out of bounds); save a plain tensor: t.contiguous().clone()",
            file_name=name,
        )


class _ReadOnly:
    """A file seen through read()/readline() only, at most MAX_PICKLE_BYTES of it: a pickle that declares a
    huge bytes object is refused before the read allocates it (the C unpickler's readinto() path is avoided)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.left = fh, MAX_PICKLE_BYTES

    def _take(self, n: int) -> None:
        if n > self.left:
            raise ValueError(f"the pickle is larger than {MAX_PICKLE_BYTES} bytes")
        self.left -= n

    def read(self, n: int = -1) -> bytes:
        self._take(self.left + 1 if n is None or n < 0 else n)
        return self.fh.read(n)

    def readline(self, limit: int = -1) -> bytes:
        line = self.fh.readline(self.left + 1 if limit is None or limit < 0 else min(limit, self.left + 1))
        self._take(len(line))
        return line


def _load_pickle(data: bytes | IO[bytes], name: str) -> tuple[Any, dict[str, StorageRef]]:
    up = _PeekUnpickler(_ReadOnly(io.BytesIO(data) if isinstance(data, bytes) else data), name)  # type: ignore[arg-type]
    try:
        return up.load(), up.storages
    except BagFormatError:
        raise
    except Exception as exc:  # garbage, truncation, absurd opcodes: a clean error, never a crash
        raise BagFormatError(
            f"{name}: cannot read the file as torch — it is truncated, corrupt or not a torch.save file "
            f"({type(exc).__name__}: {str(exc)[:120]}); re-export or re-upload it",
            file_name=name,
        ) from None


def _zip_storages(path: Path, name: str) -> tuple[Any, dict[str, StorageRef]]:
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if not infos or len(set(names)) != len(names):
            raise BagFormatError(f"{name}: the archive has no or duplicate records; re-save the bag", file_name=name)
        prefix = names[0].split("/", 1)[0]
        by_name = {i.filename: i for i in infos}
        pkl = by_name.get(f"{prefix}/data.pkl")
        if pkl is None or pkl.compress_type != zipfile.ZIP_STORED or pkl.file_size > MAX_PICKLE_BYTES:
            raise BagFormatError(
                f"{name}: not a torch.save file (no small, uncompressed data.pkl); save with torch.save",
                file_name=name,
            )
        obj, storages = _load_pickle(zf.read(pkl), name)
    for ref in storages.values():
        rec = by_name.get(f"{prefix}/data/{ref.key}")
        if rec is None or rec.compress_type != zipfile.ZIP_STORED:
            raise BagFormatError(
                f"{name}: tensor record {ref.key!r} is missing or compressed (torch.save never compresses); "
                "re-save the bag with torch.save",
                file_name=name,
            )
        if rec.file_size != ref.nbytes or rec.header_offset + rec.file_size > size:
            raise BagFormatError(
                f"{name}: tensor record {ref.key!r} holds {rec.file_size} bytes but its header declares "
                f"{ref.nbytes} (or it lies past the end of the file); re-save the bag",
                file_name=name,
            )
    return obj, storages


def _legacy_storages(fh: IO[bytes], name: str, size: int) -> tuple[Any, dict[str, StorageRef]]:
    magic, _, _ = (_load_pickle(fh, name)[0] for _ in range(3))
    if magic != LEGACY_MAGIC:
        raise BagFormatError(f"{name}: not a torch.save file; save the bag with torch.save", file_name=name)
    obj, storages = _load_pickle(fh, name)
    keys = _load_pickle(fh, name)[0]
    left = size - fh.tell()
    declared = sum(r.nbytes + 8 for r in storages.values())
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages) or declared > left:
        raise BagFormatError(
            f"{name}: the file declares {declared} bytes of tensor data but holds {max(left, 0)}; re-save the bag",
            file_name=name,
        )
    return obj, storages


def peek_pt_stream(data: bytes, name: str) -> dict[str, StorageRef]:
    """The storages a torch.save byte string would allocate, checked (see the module docstring)."""
    if data[:4] == b"PK\x03\x04":
        raise BagFormatError(f"{name}: refusing a zip-format payload (tensor pickles hold legacy ones)", file_name=name)
    return _legacy_storages(io.BytesIO(data), name, len(data))[1]


def peek_pt(path: Path, name: str) -> PtHeader:
    """The .pt file's features/coords tensor headers and what loading it would allocate; nothing is loaded."""
    if zipfile.is_zipfile(path):
        obj, storages = _zip_storages(path, name)
    else:
        with open(path, "rb") as fh:
            obj, storages = _legacy_storages(fh, name, os.path.getsize(path))
    if isinstance(obj, dict):
        if "features" not in obj:
            shown = ", ".join(repr(str(k)) for k in list(obj)[:10]) or "none"
            raise BagFormatError(
                f"{name}: no `features` entry (the file holds: {shown}); store the patch features under the key "
                "'features' (TRIDENT/CLAM layout)",
                file_name=name,
            )
        features, coords = obj["features"], obj.get("coords")
    else:
        features, coords = obj, None
    for what, ref in (("features", features), ("coords", coords)):
        if ref is not None and not isinstance(ref, TensorRef):
            raise BagFormatError(
                f"{name}: {what} are a {type(ref).__name__}, not a tensor; store a float tensor [N, D]",
                file_name=name,
            )
    return PtHeader(features, coords, sum(r.nbytes for r in storages.values()))


def load_pt(path: Path, header: PtHeader) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch.load(weights_only=True) after `peek_pt` passed -> (features, coords | None) as loaded."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        return obj["features"], obj.get("coords")
    return obj, None
