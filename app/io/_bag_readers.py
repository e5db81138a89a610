"""Per-format bag readers (internal): `peek` reads only a file's header, `read` its data after the checks.

    peek(path, name) -> BagHeader     declared shapes/dtypes, load_bytes; stored sizes checked against the file
    read(path, name, header) -> RawBag  the arrays, as stored (app.io.bags converts and validates them)

Sizes that a file declares are never trusted: uncompressed data must be inside the file (.npy, .h5 contiguous
and chunked, .safetensors offsets, .pt records — see app.io._pt_format); compressed .h5 data must be written
(no fill-value chunks) and expand at most MAX_H5_EXPANSION times.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.io._bag_formats import BagHeader, RawBag, _h5_dataset, _missing_key, _truncated
from app.io._pt_format import load_pt, peek_pt
from app.io.errors import BagFormatError

MAX_H5_EXPANSION = 100  # real patch features compress ~1.1-2x; a 100x "compression" is a bomb


def _np_dtype_name(dtype: np.dtype) -> str:
    return "bool" if dtype.kind == "b" else str(np.dtype(dtype.str.replace(">", "<")).name)


def _h5_check_storage(ds: Any, path: Path, name: str, key: str, ratio: int | None) -> None:
    """Declared bytes must be stored in the file (uncompressed) or written and not a bomb (compressed)."""
    import h5py

    dcpl = ds.id.get_create_plist()
    declared = int(ds.size) * ds.dtype.itemsize
    if dcpl.get_layout() == h5py.h5d.COMPACT or not declared:
        return  # compact: the data is inside the object header
    stored = int(ds.id.get_storage_size())
    if dcpl.get_nfilters() > 0:
        if stored == 0 or (ratio is not None and declared > stored * ratio):
            raise BagFormatError(
                f"{name}: dataset `{key}` declares {declared} bytes but stores only {stored} compressed "
                f"(unwritten chunks or a >{ratio or 1}x expansion); re-export the bag",
                file_name=name,
            )
        return
    offset = ds.id.get_offset() if ds.chunks is None else 0
    file_size = os.path.getsize(path)
    if stored < declared or offset is None or (ds.chunks is None and offset + declared > file_size):
        raise _truncated(name, declared, min(stored, max(file_size - (offset or 0), 0)))


def peek_h5(path: Path, name: str) -> BagHeader:
    import h5py  # noqa: F401  (h5py errors surface here, not at verify)

    with h5py.File(path, "r") as f:
        ds = _h5_dataset(f, "features", name)
        if ds is None:
            raise _missing_key(name, list(f.keys()))
        shape, dtype = tuple(int(s) for s in ds.shape), ds.dtype
        load = math.prod(shape) * dtype.itemsize
        cds = _h5_dataset(f, "coords", name)
        coords_shape = None
        if cds is not None:
            if cds.dtype.kind not in "fiu":
                raise BagFormatError(f"{name}: `coords` must be an [N, 2] integer array", file_name=name)
            coords_shape = tuple(int(s) for s in cds.shape)
            load += math.prod(coords_shape) * cds.dtype.itemsize
    return BagHeader("h5", shape, dtype.kind, _np_dtype_name(dtype), coords_shape, load)


def verify_h5(path: Path, name: str, header: BagHeader) -> None:
    """After check_header: the declared data is really stored (see _h5_check_storage)."""
    import h5py

    with h5py.File(path, "r") as f:
        _h5_check_storage(_h5_dataset(f, "features", name), path, name, "features", MAX_H5_EXPANSION)
        if header.coords_shape is not None:
            _h5_check_storage(_h5_dataset(f, "coords", name), path, name, "coords", None)


def read_h5(path: Path, name: str, header: BagHeader) -> RawBag:
    import h5py

    with h5py.File(path, "r") as f:
        features = _h5_dataset(f, "features", name)[()]
        coords = None
        if header.coords_shape is not None:
            coords = _h5_dataset(f, "coords", name)[()]
    return RawBag(features, coords)


def _npy_header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """(shape, dtype, data offset, fortran order) of a .npy file, from its header only."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise BagFormatError(f"{name}: unsupported .npy version {version}; re-save with np.save", file_name=name)
        return tuple(int(s) for s in shape), dtype, fh.tell(), bool(fortran)


def peek_npy(path: Path, name: str) -> BagHeader:
    shape, dtype, offset, _ = _npy_header(path, name)
    if dtype.hasobject:
        raise BagFormatError(
            f"{name}: refusing to load a pickled object array (pickles can run code); save a float array "
            "instead: np.save(path, features.astype(np.float32))",
            file_name=name,
        )
    declared = math.prod(shape) * dtype.itemsize
    actual = os.path.getsize(path) - offset
    if actual < declared:
        raise _truncated(name, declared, actual)
    return BagHeader("npy", shape, dtype.kind, _np_dtype_name(dtype), None, declared)


def read_npy(path: Path, name: str, header: BagHeader) -> RawBag:
    return RawBag(np.load(path, allow_pickle=False), None)


_ST = {"F64": ("f", "float64"), "F32": ("f", "float32"), "F16": ("f", "float16"), "BF16": ("f", "bfloat16"),
       "I64": ("i", "int64"), "I32": ("i", "int32"), "I16": ("i", "int16"), "I8": ("i", "int8"),
       "U8": ("u", "uint8"), "U16": ("u", "uint16"), "U32": ("u", "uint32"), "U64": ("u", "uint64"),
       "BOOL": ("b", "bool")}  # fmt: skip


def peek_safetensors(path: Path, name: str) -> BagHeader:
    from safetensors import safe_open

    from app.io._bag_formats import DTYPE_SIZES

    with safe_open(str(path), framework="pt", device="cpu") as f:  # validates offsets against the file size
        keys = list(f.keys())
        if "features" not in keys:
            raise _missing_key(name, keys)
        sl = f.get_slice("features")
        kind, dtype = _ST.get(sl.get_dtype(), ("?", sl.get_dtype().lower()))
        shape = tuple(int(s) for s in sl.get_shape())
        load = math.prod(shape) * DTYPE_SIZES.get(dtype, 1)
        coords_shape = None
        if "coords" in keys:
            cs = f.get_slice("coords")
            ckind, cdtype = _ST.get(cs.get_dtype(), ("?", "?"))
            if ckind not in "fiu":
                raise BagFormatError(f"{name}: `coords` must be an [N, 2] integer array", file_name=name)
            coords_shape = tuple(int(s) for s in cs.get_shape())
            load += math.prod(coords_shape) * DTYPE_SIZES.get(cdtype, 8)
    return BagHeader("safetensors", shape, kind, dtype, coords_shape, load)


def read_safetensors(path: Path, name: str, header: BagHeader) -> RawBag:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        features = f.get_tensor("features")
        coords = f.get_tensor("coords") if header.coords_shape is not None else None
    return RawBag(features, coords)


def _torch_kind(dtype: Any) -> tuple[str, str]:
    name = str(dtype).removeprefix("torch.")
    if dtype.is_complex:
        return "c", name
    return ("f" if dtype.is_floating_point else "b" if name == "bool" else "u" if name == "uint8" else "i"), name


def peek_pt_bag(path: Path, name: str) -> BagHeader:
    h = peek_pt(path, name)
    kind, dtype = _torch_kind(h.features.dtype)
    coords_shape = None
    if h.coords is not None:
        if _torch_kind(h.coords.dtype)[0] not in "fiu":
            raise BagFormatError(f"{name}: `coords` must be an [N, 2] integer array", file_name=name)
        coords_shape = h.coords.size
    return BagHeader("pt", h.features.size, kind, dtype, coords_shape, h.load_bytes, h)


def read_pt(path: Path, name: str, header: BagHeader) -> RawBag:
    features, coords = load_pt(path, header.extra)
    return RawBag(features, coords)


def read_h5_into(path: Path, name: str, header: BagHeader, out: np.ndarray) -> Any:
    """Features straight into `out` [N, D] (HDF5 converts the dtype chunk by chunk: no full-size temporary);
    returns the coords array (or None)."""
    import h5py

    with h5py.File(path, "r") as f:
        ds = _h5_dataset(f, "features", name)
        ds.read_direct(out.reshape(header.shape))
        return _h5_dataset(f, "coords", name)[()] if header.coords_shape is not None else None


def read_npy_into(path: Path, name: str, header: BagHeader, out: np.ndarray) -> Any:
    """Features read into `out` [N, D] in row chunks (plain reads, no memory map: a file that shrinks meanwhile
    is an error, not a SIGBUS); Fortran-ordered files are loaded whole, then copied. .npy has no coords."""
    shape, dtype, offset, fortran = _npy_header(path, name)
    if fortran:
        out[...] = np.load(path, allow_pickle=False).reshape(out.shape)
        return None
    flat = out.reshape(-1, out.shape[-1])
    rows_per_chunk = max(1, (8 << 20) // max(flat.shape[1] * dtype.itemsize, 1))
    with open(path, "rb") as fh:
        fh.seek(offset)
        for start in range(0, flat.shape[0], rows_per_chunk):
            rows = min(rows_per_chunk, flat.shape[0] - start)
            chunk = np.fromfile(fh, dtype=dtype, count=rows * flat.shape[1])
            if chunk.size != rows * flat.shape[1]:
                raise _truncated(name, math.prod(shape) * dtype.itemsize, offset + start * flat.shape[1])
            flat[start : start + rows] = chunk.reshape(rows, flat.shape[1])
    return None


INTO_READERS: dict[str, Callable[[Path, str, BagHeader, np.ndarray], Any]] = {"h5": read_h5_into, "npy": read_npy_into}
PEEKERS: dict[str, Callable[[Path, str], BagHeader]] = {
    "h5": peek_h5,
    "npy": peek_npy,
    "pt": peek_pt_bag,
    "safetensors": peek_safetensors,
}
VERIFIERS: dict[str, Callable[[Path, str, BagHeader], None]] = {"h5": verify_h5}
READERS: dict[str, Callable[[Path, str, BagHeader], RawBag]] = {
    "h5": read_h5,
    "npy": read_npy,
    "pt": read_pt,
    "safetensors": read_safetensors,
}
