"""Read one feature bag (a slide's patch embeddings) from the formats users already have (SPEC §4).

    .h5 / .hdf5    TRIDENT/CLAM: dataset `features` [N, D] or [1, N, D]; optional `coords` [N, 2]
    .pt            torch.load(weights_only=True): a tensor, or a dict with key `features` (optional `coords`)
    .npy           np.load(allow_pickle=False): the [N, D] array
    .safetensors   key `features` (optional `coords`)

Every problem (unknown format, missing key, wrong rank or D, NaN/Inf, empty, too many patches, truncated or
garbled file, pickled code) raises `BagFormatError` naming the file; library exceptions never escape.
Declared shapes are checked against the file size before any data is read.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from app.io._bag_formats import FORMAT_READERS, RawBag, check_shape, clean_exc, detect_format
from app.io.errors import BagFormatError, display_name_of

SUPPORTED_BAG_SUFFIXES = (".h5", ".hdf5", ".pt", ".npy", ".safetensors")
MAX_BAG_BYTES = 8 * 2**30  # refuse bags whose features would need more memory than this
_LABEL = {"h5": "HDF5", "pt": "torch", "npy": "NumPy .npy", "safetensors": "safetensors"}


@dataclass
class Bag:
    """One slide (or a patient's concatenated slides): features float32 [N, D], coords int64 [N, 2] | None."""

    features: Tensor
    coords: Tensor | None = None

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def read_bag(
    path: str | os.PathLike[str],
    *,
    expected_dim: int | None = None,
    max_patches: int | None = None,
    display_name: str | None = None,
    max_bytes: int = MAX_BAG_BYTES,
) -> Bag:
    """Read and validate one bag file -> Bag(features float32 [N, D], coords int64 [N, 2] | None).

    The format comes from the suffix of `path` (else of `display_name`, else the file's magic bytes).
    Raises BagFormatError (message = display name + problem + fix) for every unusable file.
    """
    path = Path(path)
    name = display_name_of(path, display_name)
    if not path.is_file():
        raise BagFormatError(f"{name}: bag file not found; upload it or fix the path", file_name=name)
    fmt = detect_format(path, display_name, name, SUPPORTED_BAG_SUFFIXES)
    limits = {"expected_dim": expected_dim, "max_patches": max_patches, "max_bytes": max_bytes}
    try:
        raw = FORMAT_READERS[fmt](path, name, limits)
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
    return validate_raw_bag(raw, name, expected_dim, max_patches)


def validate_raw_bag(raw: RawBag, name: str, expected_dim: int | None, max_patches: int | None) -> Bag:
    """Unvalidated arrays -> Bag: float32 [N, D] (a [1, N, D] is squeezed), finite, N >= 1, D and N checked;
    coords int64 [N, 2]. BagFormatError (message starting with `name`) otherwise."""
    features = _as_float_tensor(raw.features, name)
    if features.dim() == 3 and features.shape[0] == 1:
        features = features[0]
    check_shape(tuple(features.shape), name, expected_dim, max_patches)
    features = features.contiguous()
    n_nan = int(torch.isnan(features).sum())
    n_inf = int(torch.isinf(features).sum())
    if n_nan or n_inf:
        raise BagFormatError(
            f"{name}: features hold {n_nan} NaN and {n_inf} Inf value(s) out of {features.numel()}; "
            "re-extract the features or drop the broken patches",
            file_name=name,
        )
    coords = None if raw.coords is None else _coords_tensor(raw.coords, name, features.shape[0])
    return Bag(features, coords)


def _to_tensor(value: object, name: str, what: str) -> Tensor:
    if isinstance(value, Tensor):
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


def _as_float_tensor(value: object, name: str) -> Tensor:
    """features of any real numeric dtype -> float32 tensor; complex/bool/strings are refused."""
    t = _to_tensor(value, name, "features")
    if t.is_complex() or t.dtype == torch.bool:
        raise BagFormatError(
            f"{name}: features have dtype {str(t.dtype).removeprefix('torch.')}; store them as float32",
            file_name=name,
        )
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
) -> Bag:
    """Read every slide of one patient and concatenate row-wise -> Bag([ΣN_i, D]).

    coords are concatenated when every slide has them, else None. All slides must share D (= expected_dim
    when given). `max_patches` bounds the total. Raises BagFormatError naming the offending file.
    """
    if not paths:
        raise BagFormatError("a patient needs at least one slide; got no bag files", file_name="")
    names = list(display_names) if display_names is not None else [display_name_of(p) for p in paths]
    bags: list[Bag] = []
    total = 0
    for path, name in zip(paths, names, strict=True):
        bag = read_bag(path, expected_dim=expected_dim, max_patches=max_patches, display_name=name)
        if bags and bag.dim != bags[0].dim:
            raise BagFormatError(
                f"{name}: features have D = {bag.dim} but slide {names[0]!r} of the same patient has "
                f"D = {bags[0].dim}; all slides must come from the same feature encoder",
                file_name=name,
            )
        total += bag.n_patches
        if max_patches is not None and total > max_patches:
            raise BagFormatError(
                f"{name}: the patient's slides hold {total} patches together, more than the limit of "
                f"{max_patches}; subsample the patches or raise the limit",
                file_name=name,
            )
        bags.append(bag)
    if len(bags) == 1:
        return bags[0]
    features = torch.cat([b.features for b in bags], dim=0)
    coords = None
    if all(b.coords is not None for b in bags):
        coords = torch.cat([b.coords for b in bags], dim=0)  # type: ignore[misc]
    return Bag(features, coords)
