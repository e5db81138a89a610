"""Per-format bag readers used by app.io.bags (internal).

Each reader returns a RawBag of unvalidated arrays/tensors; app.io.bags converts and validates them.
Before reading data, every reader checks the declared shape (rank, D, N, bytes) and, where the format
declares sizes, that the file actually holds that many bytes.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.io.errors import BagFormatError, scrub_paths

SUFFIX_FORMAT = {".h5": "h5", ".hdf5": "h5", ".pt": "pt", ".npy": "npy", ".safetensors": "safetensors"}


@dataclass
class RawBag:
    features: Any  # numpy array or tensor, any real dtype, [N, D] or [1, N, D]
    coords: Any | None = None


def clean_exc(exc: BaseException, path: Path, name: str) -> str:
    """A library exception as short text with every absolute path reduced to its base name."""
    return scrub_paths(f"{type(exc).__name__}: {exc}", path, name)


def detect_format(path: Path, display_name: str | None, name: str, supported: Sequence[str]) -> str:
    """Bag format from the suffix of `path`, else of `display_name`; files without any suffix are sniffed."""
    suffixes = [Path(path.name).suffix.lower(), Path(display_name or "").suffix.lower()]
    for suffix in suffixes:
        if suffix in SUFFIX_FORMAT:
            return SUFFIX_FORMAT[suffix]
    if not any(suffixes):
        sniffed = _sniff(path)
        if sniffed:
            return sniffed
    shown = next((s for s in suffixes if s), "(none)")
    raise BagFormatError(
        f"{name}: unsupported bag format {shown!r}; supported formats are {', '.join(supported)} "
        "— convert the features to one of them (e.g. TRIDENT .h5 with a `features` dataset)",
        file_name=name,
    )


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pt"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def fmt_bytes(n: int) -> str:
    """Human-readable size: bytes, MiB or GiB."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def check_shape(shape: tuple[int, ...], name: str, expected_dim: int | None, max_patches: int | None) -> tuple:
    """Validate a features shape ([N, D] or [1, N, D]) -> (N, D); BagFormatError otherwise."""
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise BagFormatError(
            f"{name}: features have shape {list(shape)}; expected [N, D] (or [1, N, D]): one row per patch",
            file_name=name,
        )
    n, d = int(shape[0]), int(shape[1])
    if n == 0:
        raise BagFormatError(f"{name}: the bag is empty (N = 0 patches); re-extract the slide", file_name=name)
    if expected_dim is not None and d != expected_dim:
        raise BagFormatError(
            f"{name}: features have D = {d}, expected D = {expected_dim} (the model family's feature size); "
            "extract the features with the family's encoder",
            file_name=name,
        )
    if max_patches is not None and n > max_patches:
        raise BagFormatError(
            f"{name}: the bag holds {n} patches, more than the limit of {max_patches}; subsample the patches "
            "or raise the limit",
            file_name=name,
        )
    return n, d


def _precheck(shape: tuple[int, ...], kind: str, name: str, limits: dict) -> None:
    """Shape and size checks before any data is read. kind = numpy dtype kind ('f', 'i', ...)."""
    if kind not in "fiub":
        raise BagFormatError(
            f"{name}: features are not numbers (dtype kind {kind!r}); store them as a float32 array",
            file_name=name,
        )
    check_shape(tuple(int(s) for s in shape), name, limits["expected_dim"], limits["max_patches"])
    needed = math.prod(int(s) for s in shape) * 4
    if needed > limits["max_bytes"]:
        raise BagFormatError(
            f"{name}: the bag declares shape {list(shape)}, i.e. {fmt_bytes(needed)} as float32, "
            f"above the "
            f"limit of {fmt_bytes(limits['max_bytes'])}; subsample the patches",
            file_name=name,
        )


def _truncated(name: str, declared: int, actual: int) -> BagFormatError:
    return BagFormatError(
        f"{name}: the file is truncated: its header declares {declared} bytes of data but "
        f"the file holds only "
        f"{actual}; re-upload or re-export it",
        file_name=name,
    )


def _missing_key(name: str, keys: Sequence[str]) -> BagFormatError:
    shown = ", ".join(repr(k) for k in list(keys)[:10]) or "none"
    return BagFormatError(
        f"{name}: no `features` entry (the file holds: {shown}); store the patch features under the key "
        "'features' (TRIDENT/CLAM layout)",
        file_name=name,
    )


def read_h5(path: Path, name: str, limits: dict) -> RawBag:
    import h5py

    with h5py.File(path, "r") as f:
        ds = _h5_dataset(f, "features", name)
        if ds is None:
            raise _missing_key(name, list(f.keys()))
        _precheck(ds.shape, ds.dtype.kind, name, limits)
        _check_h5_storage(ds, path, name)
        features = ds[()]
        coords = None
        cds = _h5_dataset(f, "coords", name)
        if cds is not None:
            _check_h5_storage(cds, path, name)
            if math.prod(cds.shape) * 8 > limits["max_bytes"] or cds.dtype.kind not in "fiu":
                raise BagFormatError(f"{name}: `coords` must be an [N, 2] integer array", file_name=name)
            coords = cds[()]
    return RawBag(features, coords)


def _outside(name: str, key: str) -> BagFormatError:
    return BagFormatError(
        f"{name}: dataset `{key}` refers to data outside the file (external link, external storage or "
        "virtual dataset), which is not allowed; store the data inside the .h5 file",
        file_name=name,
    )


def _h5_dataset(f: Any, key: str, name: str) -> Any:
    """f[key] when it is a dataset stored in this file; None when absent or not a dataset."""
    import h5py

    link = f.get(key, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise _outside(name, key)
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset):
        return None
    if ds.file.filename != f.filename:  # a soft link that led to an external link
        raise _outside(name, key)
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL or dcpl.get_external_count() > 0:
        raise _outside(name, key)
    return ds


def _check_h5_storage(ds: Any, path: Path, name: str) -> None:
    """Uncompressed datasets must be fully stored inside the file (declared bytes <= stored bytes <= file)."""
    import h5py

    dcpl = ds.id.get_create_plist()
    if dcpl.get_nfilters() > 0 or dcpl.get_layout() == h5py.h5d.COMPACT:
        return  # compressed: sizes are not comparable (max_bytes bounds memory); compact: inside the header
    declared = int(ds.size) * ds.dtype.itemsize
    stored = int(ds.id.get_storage_size())
    offset = ds.id.get_offset() if ds.chunks is None else 0
    file_size = os.path.getsize(path)
    if declared and (stored < declared or offset is None or (ds.chunks is None and offset + declared > file_size)):
        raise _truncated(name, declared, min(stored, max(file_size - (offset or 0), 0)))


def read_npy(path: Path, name: str, limits: dict) -> RawBag:
    fmt = np.lib.format
    with open(path, "rb") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise BagFormatError(f"{name}: unsupported .npy version {version}; re-save with np.save", file_name=name)
        offset = fh.tell()
    if dtype.hasobject:
        raise BagFormatError(
            f"{name}: refusing to load a pickled object array (pickles can run code); save a float array "
            "instead: np.save(path, features.astype(np.float32))",
            file_name=name,
        )
    _precheck(shape, dtype.kind, name, limits)
    declared = math.prod(shape) * dtype.itemsize
    actual = os.path.getsize(path) - offset
    if actual < declared:
        raise _truncated(name, declared, actual)
    return RawBag(np.load(path, allow_pickle=False), None)


def read_pt(path: Path, name: str, limits: dict) -> RawBag:
    import torch

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
        if declared > limits["max_bytes"]:
            raise BagFormatError(
                f"{name}: the file unpacks to {fmt_bytes(declared)}, above the limit of "
                f"{fmt_bytes(limits['max_bytes'])}; subsample the patches",
                file_name=name,
            )
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, torch.Tensor):
        return RawBag(obj, None)
    if isinstance(obj, dict):
        if "features" not in obj:
            raise _missing_key(name, [str(k) for k in obj])
        return RawBag(obj["features"], obj.get("coords"))
    raise BagFormatError(
        f"{name}: the file holds a {type(obj).__name__}; expected a tensor [N, D] or a dict with key 'features'",
        file_name=name,
    )


_ST_KIND = {"F": "f", "B": "f", "I": "i", "U": "u", "BOOL": "b"}


def read_safetensors(path: Path, name: str, limits: dict) -> RawBag:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = list(f.keys())
        if "features" not in keys:
            raise _missing_key(name, keys)
        sl = f.get_slice("features")
        dtype = sl.get_dtype()
        kind = _ST_KIND.get(dtype, _ST_KIND.get(dtype[:1], "?")) if dtype != "BOOL" else "b"
        _precheck(tuple(sl.get_shape()), kind, name, limits)
        features = f.get_tensor("features")
        coords = f.get_tensor("coords") if "coords" in keys else None
    return RawBag(features, coords)


FORMAT_READERS: dict[str, Callable[[Path, str, dict], RawBag]] = {
    "h5": read_h5,
    "npy": read_npy,
    "pt": read_pt,
    "safetensors": read_safetensors,
}
