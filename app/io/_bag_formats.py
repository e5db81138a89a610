"""Shared pieces of the bag readers (internal): format detection, BagHeader and its checks, error texts.

A reader first *peeks* a file (app.io._bag_readers): it reads only the header and returns a BagHeader with the
declared features shape and dtype, the coords shape and `load_bytes` (what reading the file will allocate).
`check_header` validates all of that (rank, D, N, dtype, coords rows) before any data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.io.errors import BagFormatError, scrub_paths

SUFFIX_FORMAT = {".h5": "h5", ".hdf5": "h5", ".pt": "pt", ".npy": "npy", ".safetensors": "safetensors"}


@dataclass(frozen=True)
class BagHeader:
    """What a bag file declares, read without its data. shape: features as stored ([N, D] or [1, N, D])."""

    fmt: str
    shape: tuple[int, ...]
    kind: str  # numpy dtype kind of the features: only f (float) is accepted
    dtype: str  # torch dtype name as stored: float32, float16, bfloat16, int64, ...
    coords_shape: tuple[int, ...] | None
    load_bytes: int  # bytes the reader allocates to read the file as stored
    extra: Any = None  # format-specific (the .pt tensor headers)

    @property
    def n(self) -> int:
        return int(self.shape[-2]) if len(self.shape) >= 2 else 0

    @property
    def d(self) -> int:
        return int(self.shape[-1]) if self.shape else 0

    @property
    def itemsize(self) -> int:
        return DTYPE_SIZES.get(self.dtype, 8)


DTYPE_SIZES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
               "int8": 1, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}  # fmt: skip
REDUCED = ("float16", "bfloat16")


def out_dtype_name(header: BagHeader, keep_reduced: bool) -> str:
    """The dtype the bag is handed out in: float16/bfloat16 kept when `keep_reduced`, else float32."""
    return header.dtype if keep_reduced and header.dtype in REDUCED else "float32"


def check_header(header: BagHeader, name: str, expected_dim: int | None, max_patches: int | None) -> None:
    """Every declared property checked before data is read: numeric dtype, [N, D] (or [1, N, D]) with N >= 1,
    D = expected_dim, N <= max_patches, coords [N, 2] (or [1, N, 2]) with the same N."""
    if header.kind in "iub":  # SPEC §4: features are real numbers; integers mean a quantised or mis-saved export
        raise BagFormatError(
            f"{name}: features are {'booleans' if header.kind == 'b' else 'integers'} (dtype {header.dtype}), "
            "not the extractor's real-valued features; save them as float32 (or float16) without quantising",
            file_name=name,
        )
    if header.kind != "f":
        raise BagFormatError(
            f"{name}: features are not numbers (dtype {header.dtype}); store them as a float32 array",
            file_name=name,
        )
    n, _ = check_shape(header.shape, name, expected_dim, max_patches)
    cs = header.coords_shape
    if cs is None:
        return
    rows = cs[1] if len(cs) == 3 and cs[0] == 1 else cs[0] if cs else -1
    if len(cs) not in (2, 3) or cs[-1] != 2 or (len(cs) == 3 and cs[0] != 1):
        raise BagFormatError(
            f"{name}: coords have shape {list(cs)}, expected [N, 2]; fix or drop the `coords` dataset",
            file_name=name,
        )
    if rows != n:
        raise BagFormatError(
            f"{name}: coords hold {rows} rows but features hold {n} patches; the two must have one row "
            "per patch — re-export the bag",
            file_name=name,
        )


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


def _truncated(name: str, declared: int, actual: int) -> BagFormatError:
    return BagFormatError(
        f"{name}: the file is truncated: its header declares {declared} bytes of data but "
        f"the file holds only "
        f"{actual}; re-upload or re-export it",
        file_name=name,
    )


def _missing_key(name: str, keys: Sequence[str]) -> BagFormatError:
    if "features" in keys:  # an .h5 whose `features` is a group, or a link to nothing
        return BagFormatError(
            f"{name}: `features` is not a dataset (a group, or a link whose target is missing); store the patch "
            "features as an [N, D] dataset named 'features' (TRIDENT/CLAM layout)",
            file_name=name,
        )
    shown = ", ".join(repr(k) for k in list(keys)[:10]) or "none"
    return BagFormatError(
        f"{name}: no `features` entry (the file holds: {shown}); store the patch features under the key "
        "'features' (TRIDENT/CLAM layout)",
        file_name=name,
    )


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
