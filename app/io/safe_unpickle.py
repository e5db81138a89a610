"""A restricted unpickler for pickles that should hold only tensors, arrays and plain containers.

`pickle.dumps(tensor)` (torch 2.x) produces, besides plain containers:
    torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
    torch.storage._load_from_bytes(b)      -> internally torch.load(b, weights_only=False) (!)
    collections.OrderedDict                 (the empty backward-hooks dict)
`_load_from_bytes` is re-implemented here with `torch.load(weights_only=True)`, so no pickle reached from a
value can run code. Pickled numpy arrays (`numpy._core.multiarray._reconstruct`, `numpy.ndarray`,
`numpy.dtype`) are allowed too. Any other global raises `UnsafePickleError("refusing to unpickle mod.name")`
before anything is called.
"""

from __future__ import annotations

import io
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
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, bool(requires_grad), OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or hooks:
        raise UnsafePickleError("refusing to unpickle a parameter that is not a plain tensor")
    return data.detach()


class _NdarrayMarker:
    """Stands in for the `numpy.ndarray` global: only _reconstruct may use it (not callable)."""


_NDARRAY = _NdarrayMarker()


def _reconstruct_ndarray(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not _NDARRAY:
        raise UnsafePickleError(f"refusing to rebuild an array of class {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"refusing to unpickle numpy dtype {spec!r}")
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.hasobject:
        raise UnsafePickleError(f"refusing to unpickle numpy dtype {spec!r} (Python objects)")
    return dtype


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy", "ndarray"): _NDARRAY,
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
    return RestrictedUnpickler(io.BytesIO(data)).load()
