"""Read one feature bag (a slide's patch embeddings) from the formats users already have (SPEC §4).

    .h5 / .hdf5    TRIDENT/CLAM: dataset `features` [N, D] or [1, N, D]; optional `coords` [N, 2]
    .pt            torch.load(weights_only=True): a tensor, or a dict with key `features` (optional `coords`)
    .npy           np.load(allow_pickle=False): the [N, D] array
    .safetensors   key `features` (optional `coords`)

Every problem (unknown format, missing key, wrong rank or D, NaN/Inf, empty, too many patches, truncated or
garbled file, pickled code, a view or record that declares more than it holds) raises `BagFormatError` naming the
file; library exceptions never escape. Order (issue 8): peek the header (app.io._bag_readers) -> check it
(rank, D, N, dtype, coords rows) -> check what reading needs against the per-request limit and reserve it in the
process budget (app.io.limits) -> verify stored sizes -> read. A patient's several files: app.io.patient_bags.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from app.io._bag_formats import BagHeader, RawBag, check_header, check_shape, clean_exc, detect_format, out_dtype_name
from app.io._bag_readers import INTO_READERS, PEEKERS, READERS, VERIFIERS
from app.io.errors import BagFormatError, InputFileError, display_name_of
from app.io.limits import all_finite, check_request_bytes, count_non_finite, process_budget, request_limit_bytes

SUPPORTED_BAG_SUFFIXES = (".h5", ".hdf5", ".pt", ".npy", ".safetensors")
_LABEL = {"h5": "HDF5", "pt": "torch", "npy": "NumPy .npy", "safetensors": "safetensors"}
_T = TypeVar("_T")


@dataclass
class Bag:
    """One slide (or a patient's concatenated slides): features float [N, D], coords int64 [N, 2] | None.

    features are float32, or float16/bfloat16 when read with keep_reduced=True from a file stored that way."""

    features: Tensor
    coords: Tensor | None = None

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class PeekedBag:
    """A bag file whose header was read and checked; nothing of its data is in memory yet."""

    path: Path
    name: str
    header: BagHeader

    def needed_bytes(self, keep_reduced: bool) -> int:
        """What reading it allocates at the peak: the data as stored plus one converted copy when the stored
        dtype is not the one handed out (e.g. float64/int -> float32) or a .pt view is not contiguous."""
        h = self.header
        converted = out_dtype_name(h, keep_reduced) != h.dtype or h.fmt == "pt"
        coords = h.n * 16 if h.coords_shape is not None else 0  # int64 [N, 2]
        return h.load_bytes + (h.n * h.d * 4 if converted else 0) + coords


def _guard(fmt: str, path: Path, name: str, call: Callable[[], _T]) -> _T:
    """Run a reader step; every library failure becomes a BagFormatError naming the file and the fix."""
    try:
        return call()
    except BagFormatError:
        raise
    except pickle.UnpicklingError as exc:
        raise BagFormatError(
            f"{name}: refusing to load: the file holds Python objects other than tensors, which could run "
            f"code ({clean_exc(exc, path, name)}); save only tensors: torch.save({{'features': t}}, path)",
            file_name=name,
        ) from None
    except MemoryError:
        raise BagFormatError(f"{name}: the bag does not fit in memory; split it or lower N", file_name=name) from None
    except Exception as exc:  # any library error on a garbled/truncated file must become a clear user error
        raise BagFormatError(
            f"{name}: cannot read the file as {_LABEL[fmt]} — it is truncated, corrupt or not a valid "
            f"{_LABEL[fmt]} file ({clean_exc(exc, path, name)}); re-export or re-upload it",
            file_name=name,
        ) from None


def peek_bag(
    path: str | os.PathLike[str],
    *,
    expected_dim: int | None = None,
    max_patches: int | None = None,
    display_name: str | None = None,
) -> PeekedBag:
    """Read and check a bag file's header only (format, [N, D], dtype, coords rows, stored sizes) -> PeekedBag.

    No feature data is read: what the file declares is checked against D, max_patches and the file itself."""
    path = Path(path)
    name = display_name_of(path, display_name)
    if not path.is_file():
        raise BagFormatError(f"{name}: bag file not found; upload it or fix the path", file_name=name)
    fmt = detect_format(path, display_name, name, SUPPORTED_BAG_SUFFIXES)
    header = _guard(fmt, path, name, lambda: PEEKERS[fmt](path, name))
    check_header(header, name, expected_dim, max_patches)
    return PeekedBag(path, name, header)


def load_peeked(peeked: PeekedBag, expected_dim: int | None, max_patches: int | None, keep_reduced: bool) -> Bag:
    """Read the data of a peeked bag and validate it (no budget accounting: the caller reserved it)."""
    h, path, name = peeked.header, peeked.path, peeked.name
    if h.fmt in VERIFIERS:  # stored sizes (cheap, header-level) once the memory limits have passed
        _guard(h.fmt, path, name, lambda: VERIFIERS[h.fmt](path, name, h))
    raw = _guard(h.fmt, peeked.path, peeked.name, lambda: READERS[h.fmt](peeked.path, peeked.name, h))
    return validate_raw_bag(raw, peeked.name, expected_dim, max_patches, keep_reduced=keep_reduced)


def fill_peeked(peeked: PeekedBag, out: Tensor, expected_dim: int | None) -> Tensor | None:
    """Read a peeked bag's features straight into `out` ([N, D] float32/float16 rows of a patient's bag) when its
    format allows (.h5, .npy: no temporary copy); returns its coords int64 [N, 2] or None. Falls back to
    load_peeked + copy for the other formats."""
    h, path, name = peeked.header, peeked.path, peeked.name
    if h.fmt not in INTO_READERS or out.dtype not in (torch.float32, torch.float16):
        bag = load_peeked(peeked, expected_dim, None, keep_reduced=out.dtype != torch.float32)
        if bag.n_patches != out.shape[0] or bag.dim != out.shape[1]:
            raise BagFormatError(f"{name}: the data does not match its header; re-export the bag", file_name=name)
        out.copy_(bag.features)
        return bag.coords
    if h.fmt in VERIFIERS:
        _guard(h.fmt, path, name, lambda: VERIFIERS[h.fmt](path, name, h))
    if h.kind not in "fiu":
        raise BagFormatError(f"{name}: features have dtype {h.dtype}; store them as float32", file_name=name)
    coords = _guard(h.fmt, path, name, lambda: INTO_READERS[h.fmt](path, name, h, out.numpy()))
    check_finite(out, name)
    return None if coords is None else _coords_tensor(coords, name, out.shape[0])


def read_bag(
    path: str | os.PathLike[str],
    *,
    expected_dim: int | None = None,
    max_patches: int | None = None,
    display_name: str | None = None,
    max_bytes: int | None = None,
    keep_reduced: bool = False,
) -> Bag:
    """Read and validate one bag file -> Bag(features [N, D] float32, coords int64 [N, 2] | None).

    The header is read and checked first (peek_bag); then what reading needs is checked against `max_bytes`
    (default: STEPH_REQUEST_MEMORY_MB) and reserved in the process budget (STEPH_PROCESS_MEMORY_MB) while
    the file is read. keep_reduced=True hands float16/bfloat16 files out in their dtype.
    Raises BagFormatError (message = display name + problem + fix) for every unusable file.
    """
    peeked = peek_bag(path, expected_dim=expected_dim, max_patches=max_patches, display_name=display_name)
    need = peeked.needed_bytes(keep_reduced)
    check_request_bytes(need, request_limit_bytes() if max_bytes is None else max_bytes, peeked.name)
    budget = process_budget()
    budget.reserve(need, what=peeked.name)
    try:
        return load_peeked(peeked, expected_dim, max_patches, keep_reduced)
    finally:
        budget.release(need)


def validate_raw_bag(
    raw: RawBag, name: str, expected_dim: int | None, max_patches: int | None, *, keep_reduced: bool = False
) -> Bag:
    """Unvalidated arrays -> Bag: float [N, D] (a [1, N, D] is squeezed), finite, N >= 1, D and N checked;
    coords int64 [N, 2]. BagFormatError (message starting with `name`) otherwise. Copies only when the dtype
    changes or the data is not contiguous."""
    features = _as_float_tensor(raw.features, name, keep_reduced)
    if features.dim() == 3 and features.shape[0] == 1:
        features = features[0]
    check_shape(tuple(features.shape), name, expected_dim, max_patches)
    features = features.contiguous()
    check_finite(features, name)
    coords = None if raw.coords is None else _coords_tensor(raw.coords, name, features.shape[0])
    return Bag(features, coords)


def _to_tensor(value: object, name: str, what: str) -> Tensor:
    if isinstance(value, Tensor):
        _check_not_amplified(value, name, what)
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiub":
            raise BagFormatError(
                f"{name}: {what} have dtype {value.dtype}, which cannot be converted to numbers; store them as float32",
                file_name=name,
            )
        if not value.dtype.isnative:  # big-endian data: torch only takes native byte order
            value = value.astype(value.dtype.newbyteorder("="))
        if value.dtype.kind == "f" and value.dtype.itemsize > 4:
            value = value.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(value))
    raise BagFormatError(
        f"{name}: {what} are a {type(value).__name__}, not an array; store a float tensor [N, D]",
        file_name=name,
    )


def _check_not_amplified(t: Tensor, name: str, what: str) -> None:
    """A strided dense tensor must not hold more elements than its storage (stride-0 or overlapping views)."""
    if t.layout != torch.strided or t.is_quantized or t.is_nested:
        raise BagFormatError(
            f"{name}: {what} are a {str(t.layout).removeprefix('torch.')} tensor; save a dense float tensor: "
            "t.to_dense().float()",
            file_name=name,
        )
    size = t.element_size()
    if t.numel() and t.numel() * size > t.untyped_storage().nbytes() - t.storage_offset() * size:
        raise BagFormatError(
            f"{name}: {what} of shape {list(t.shape)} are a view that repeats the values of a smaller storage; "
            "save a plain tensor: t.contiguous().clone()",
            file_name=name,
        )


def _as_float_tensor(value: object, name: str, keep_reduced: bool = False) -> Tensor:
    """features of any real numeric dtype -> float32 tensor (float16/bfloat16 kept when `keep_reduced`);
    complex/bool/strings are refused."""
    t = _to_tensor(value, name, "features")
    if t.is_complex() or t.dtype == torch.bool:
        raise BagFormatError(
            f"{name}: features have dtype {str(t.dtype).removeprefix('torch.')}; store them as float32",
            file_name=name,
        )
    if keep_reduced and t.dtype in (torch.float16, torch.bfloat16):
        return t
    return t.to(torch.float32)


def _coords_tensor(value: object, name: str, n: int) -> Tensor:
    """coords [N, 2] (or [1, N, 2]) of any real dtype -> int64; length must match the features."""
    t = _to_tensor(value, name, "coords")
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2 or t.shape[1] != 2:
        raise BagFormatError(
            f"{name}: coords have shape {list(t.shape)}, expected [N, 2]; fix or drop the `coords` dataset",
            file_name=name,
        )
    if t.shape[0] != n:
        raise BagFormatError(
            f"{name}: coords hold {t.shape[0]} rows but features hold {n} patches; the two must have one row "
            "per patch — re-export the bag",
            file_name=name,
        )
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise BagFormatError(f"{name}: coords hold NaN or Inf; re-export the bag", file_name=name)
    if t.is_complex():
        raise BagFormatError(f"{name}: coords are complex numbers; store integers", file_name=name)
    return t.to(torch.int64).contiguous()


def read_patient_bag(
    paths: Sequence[str | os.PathLike[str]],
    *,
    expected_dim: int | None = None,
    max_patches: int | None = None,
    display_names: Sequence[str] | None = None,
    max_bytes: int | None = None,
    keep_reduced: bool = False,
) -> Bag:
    """Every slide of one patient, concatenated row-wise -> Bag([ΣN_i, D]); see app.io.patient_bags.

    Every header is peeked first (D, N, the total N <= max_patches, the memory needed <= max_bytes), then the
    data is read. Raises BagFormatError naming the offending file."""
    from app.io.patient_bags import read_patient_files

    return read_patient_files(
        paths, display_names=display_names, expected_dim=expected_dim, max_patches=max_patches,
        max_bytes=max_bytes, keep_reduced=keep_reduced,
    ).bag  # fmt: skip


def check_finite(features: Tensor, name: str) -> None:
    """Refuse NaN/Inf features (a cheap test first; the values are counted only when it fails)."""
    if not all_finite(features):
        n_nan, n_inf = count_non_finite(features)
        raise BagFormatError(
            f"{name}: features hold {n_nan} NaN and {n_inf} Inf value(s) out of {features.numel()}; "
            "re-extract the features or drop the broken patches",
            file_name=name,
        )


def non_finite_output(features: Tensor, names: list[str]) -> InputFileError:
    """The error for a forward whose output is not finite: the bag's fault (BagFormatError, 422) when its finite
    values are so large that the forward overflows, else the model's (ArtifactError: damaged or diverged
    weights). Used by POST /predict and `steph predict` alike."""
    from app.io.errors import ArtifactError

    lo, hi = torch.aminmax(features.detach())
    largest = max(abs(float(lo)), abs(float(hi)))
    shown = ", ".join(names)
    if largest <= 1e4:  # ordinary features: the model is what overflows
        return ArtifactError(
            f"the model's output is not finite for {shown}, whose features are ordinary (|x| ≤ {largest:.3g}): "
            "the model's weights are damaged or diverged; re-run its merge job or upload the model again"
        )
    return BagFormatError(
        f"{shown}: the model's output is not finite for this bag: its feature values reach magnitude "
        f"{largest:.3g}, and the forward overflows; patch features from a foundation model are of order 1–100 "
        "(check that the file holds the extractor's features, unscaled, in the expected layout)",
        file_name=names[0] if names else None,
    )
