"""A restricted unpickler for pickles that should hold only tensors, arrays and plain containers.

`pickle.dumps(tensor)` (torch 2.x) produces, besides plain containers:
    torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
    torch.storage._load_from_bytes(b)      -> internally torch.load(b, weights_only=False) (!)
    collections.OrderedDict                 (the empty backward-hooks dict)
`_load_from_bytes` is re-implemented here with `torch.load(weights_only=True)` after the payload's declared
storage sizes were checked against its length, so no pickle reached from a value can run code or allocate more
than it holds; a tensor view may not hold more elements than its storage (no stride-0 amplification).
Pickled numpy arrays (`numpy._core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`, protocol-5
`_frombuffer`) are allowed too, rebuilt only from their own bytes (an array whose data is missing or of the
wrong length is refused: no uninitialised memory). Any other global raises
`UnsafePickleError("refusing to unpickle mod.name")` before anything is called.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (it could run code)."""


def _load_from_bytes(data: Any) -> Any:
    """Safe replacement of torch.storage._load_from_bytes: weights_only torch.load of a storage."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError(f"storage payload must be bytes, got {type(data).__name__}")
    from app.io._pt_format import peek_pt_stream
    from app.io.errors import BagFormatError

    try:  # declared storage sizes checked against the payload before torch.load allocates them
        peek_pt_stream(bytes(data), "storage payload")
    except BagFormatError as exc:
        raise UnsafePickleError(str(exc)) from None
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError(f"storage payload holds a {type(storage).__name__}, not a tensor storage")
    return storage


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> torch.Tensor:  # fmt: skip
    """torch._utils._rebuild_tensor_v2 with argument checks (no hooks, real storage, in-bounds view)."""
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError(f"tensor storage is a {type(storage).__name__}, not a storage")
    if hooks:
        raise UnsafePickleError("refusing to unpickle a tensor with backward hooks")
    _check_view(storage, offset, size, stride)
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, bool(requires_grad), OrderedDict())


def _check_view(storage: Any, offset: Any, size: Any, stride: Any) -> None:
    """The view must hold no more elements than its storage and stay inside it (no stride-0 amplification)."""
    ints = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if ints is None or len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in ints):
        raise UnsafePickleError("malformed tensor header (offset, size, stride)")
    untyped = storage._untyped_storage if isinstance(storage, torch.storage.TypedStorage) else storage
    available = untyped.nbytes() // max(_element_size(storage), 1)
    numel = math.prod(size)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) if numel else 0
    if numel and (numel > available - offset or last >= available):
        raise UnsafePickleError(
            f"a tensor of shape {list(size)} repeats or overruns the {available} values of its storage"
        )


def _element_size(storage: Any) -> int:
    if isinstance(storage, torch.storage.TypedStorage):
        return torch.empty((), dtype=storage._dtype).element_size()
    return 1


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or hooks:
        raise UnsafePickleError("refusing to unpickle a parameter that is not a plain tensor")
    return data.detach()


class _NdarrayMarker:
    """Stands in for the `numpy.ndarray` global: only _reconstruct may use it (not callable)."""


_NDARRAY = _NdarrayMarker()


class _PendingArray:
    """What `numpy._core.multiarray._reconstruct` returns: no memory yet. The pickle's BUILD step calls
    __setstate__((version, shape, dtype, fortran, rawdata)), which builds the array from `rawdata` after checking
    that it holds exactly shape × itemsize bytes. An array whose state never arrives is refused (`resolve`)."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or self.array is not None:
            raise UnsafePickleError("malformed numpy array state")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """A numpy array copied from `raw`, which must hold exactly prod(shape) × itemsize bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "fiub":
        raise UnsafePickleError(f"refusing to unpickle a numpy array of dtype {dtype!r}")
    dtype = np.dtype(dtype.str)
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape) or order not in "CF":
        raise UnsafePickleError("malformed numpy array shape")
    if isinstance(raw, str):  # protocol 2 pickles carry bytes as latin-1 text
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes | bytearray) or len(raw) != math.prod(shape) * dtype.itemsize:
        raise UnsafePickleError(
            f"numpy array data does not match its shape {list(shape)} and dtype {dtype} (refusing to use "
            "uninitialised memory)"
        )
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order=order).copy()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy._core.numeric._frombuffer (protocol-5 array pickles), with the length checked."""
    return _array_from_bytes(buf.raw() if isinstance(buf, pickle.PickleBuffer) else buf, dtype, shape, order)


def _reconstruct_ndarray(cls: Any, shape: Any, dtype_code: Any) -> _PendingArray:
    if cls is not _NDARRAY:
        raise UnsafePickleError(f"refusing to rebuild an array of class {cls!r}")
    return _PendingArray()


def resolve(value: Any, depth: int = 0) -> Any:
    """`value` with every pending numpy array replaced by its built array; UnsafePickleError for one whose data
    never arrived. Walks lists, tuples and dicts (at most 32 levels)."""
    if depth > 32:
        raise UnsafePickleError("the pickle nests containers too deeply")
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise UnsafePickleError("a numpy array without its data (refusing to use uninitialised memory)")
        return value.array
    if isinstance(value, list | tuple):
        items = [resolve(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: resolve(v, depth + 1) for k, v in value.items()}
    return value


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"refusing to unpickle numpy dtype {spec!r}")
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.hasobject:
        raise UnsafePickleError(f"refusing to unpickle numpy dtype {spec!r} (Python objects)")
    return dtype


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles use it for bytes: only str -> bytes in latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode of anything but latin-1 text")
    return text.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy", "ndarray"): _NDARRAY,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "dtype"): _numpy_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only ALLOWED_GLOBALS (safe wrappers) and no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to unpickle {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing to unpickle a persistent id (not a plain pickle)")


def restricted_loads(data: bytes) -> Any:
    """Unpickle `data` allowing only tensors, numpy arrays and builtin containers/scalars.

    Raises UnsafePickleError for any other global, pickle.UnpicklingError / EOFError etc. for garbage.
    """
    return resolve(RestrictedUnpickler(io.BytesIO(data)).load())
