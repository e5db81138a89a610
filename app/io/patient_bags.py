"""A patient's bag from several slide files: every header peeked and every total checked before any data is read.

    read_patient_files(paths) -> PatientRead(bag [ΣN_i, D], sizes [N_i], reserved bytes)

Order: peek each file (shape, dtype, coords rows, stored sizes) -> one D for all, ΣN_i <= max_patches ->
the memory reading needs <= the per-request limit -> reserve it in the process budget -> read. A single file
is handed out as read (no copy); several are copied once into one preallocated [ΣN_i, D] tensor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from app.io._bag_readers import INTO_READERS
from app.io.bags import Bag, PeekedBag, fill_peeked, load_peeked, peek_bag
from app.io.errors import BagFormatError, display_name_of
from app.io.limits import MemoryBudget, check_request_bytes, process_budget, request_limit_bytes

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class PatientTooLarge(BagFormatError):
    """A patient's slides hold more patches together than max_patches (each file alone may be fine)."""


@dataclass
class PatientRead:
    bag: Bag
    sizes: list[int]  # rows contributed by each file, in order
    reserved: int  # bytes still reserved in the process budget for bag.features (released when it is freed)


def peek_patient(
    paths: Sequence[str | os.PathLike[str]], names: Sequence[str], expected_dim: int | None, max_patches: int | None
) -> list[PeekedBag]:
    """Peek every file; one D for all; ΣN <= max_patches (PatientTooLarge naming the files and the total)."""
    if not paths:
        raise BagFormatError("a patient needs at least one slide; got no bag files", file_name="")
    peeked = [
        peek_bag(p, expected_dim=expected_dim, max_patches=max_patches, display_name=n)
        for p, n in zip(paths, names, strict=True)
    ]
    first = peeked[0]
    for p in peeked[1:]:
        if p.header.d != first.header.d:
            raise BagFormatError(
                f"{p.name}: features have D = {p.header.d} but slide {first.name!r} of the same patient has "
                f"D = {first.header.d}; all slides must come from the same feature encoder",
                file_name=p.name,
            )
    total = sum(p.header.n for p in peeked)
    if max_patches is not None and total > max_patches:
        shown = ", ".join(p.name for p in peeked[:10]) + (" …" if len(peeked) > 10 else "")
        raise PatientTooLarge(
            f"{peeked[-1].name}: the patient's slides ({shown}) hold {total} patches together, more than the "
            f"limit of {max_patches} (STEPH_MAX_PATCHES); subsample the patches or raise the limit",
            file_name=peeked[-1].name,
        )
    return peeked


def _out_dtype(peeked: list[PeekedBag], keep_reduced: bool) -> torch.dtype:
    dtypes = {p.header.dtype for p in peeked}
    only = next(iter(dtypes))
    return _DTYPES[only] if keep_reduced and len(dtypes) == 1 and only in _DTYPES else torch.float32


def needed_bytes(peeked: list[PeekedBag], keep_reduced: bool) -> int:
    """Peak bytes of reading: one file as read, or the [ΣN, D] output plus the largest file that cannot be read
    straight into it (.pt, .safetensors, bfloat16)."""
    if len(peeked) == 1:
        return peeked[0].needed_bytes(keep_reduced)
    total, d = sum(p.header.n for p in peeked), peeked[0].header.d
    dtype = _out_dtype(peeked, keep_reduced)
    out = total * d * torch.empty((), dtype=dtype).element_size() + total * 16
    direct = dtype in (torch.float32, torch.float16)
    extra = [p.needed_bytes(keep_reduced) for p in peeked if not (direct and p.header.fmt in INTO_READERS)]
    return out + max(extra, default=0)


def _load_all(peeked: list[PeekedBag], expected_dim: int | None, max_patches: int | None, keep_reduced: bool) -> Bag:
    if len(peeked) == 1:
        return load_peeked(peeked[0], expected_dim, max_patches, keep_reduced)
    dtype = _out_dtype(peeked, keep_reduced)
    total, d = sum(p.header.n for p in peeked), peeked[0].header.d
    features = torch.empty(total, d, dtype=dtype)
    coords: torch.Tensor | None = torch.empty(total, 2, dtype=torch.int64)
    row = 0
    for p in peeked:
        rows = fill_peeked(p, features[row : row + p.header.n], expected_dim)
        if coords is not None and rows is not None:
            coords[row : row + p.header.n].copy_(rows)
        else:
            coords = None
        row += p.header.n
    return Bag(features, coords)


def read_patient_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    display_names: Sequence[str] | None = None,
    expected_dim: int | None = None,
    max_patches: int | None = None,
    max_bytes: int | None = None,
    keep_reduced: bool = False,
    budget: MemoryBudget | None = None,
    hold: bool = False,
) -> PatientRead:
    """One patient's slides -> PatientRead (see the module docstring). `max_bytes` defaults to
    STEPH_REQUEST_MEMORY_MB; `budget` to the process budget. hold=True keeps the bag's bytes reserved until
    its features tensor is freed (for callers that hold the bag while scoring it)."""
    names = list(display_names) if display_names is not None else [display_name_of(p) for p in paths]
    peeked = peek_patient(paths, names, expected_dim, max_patches)
    need = needed_bytes(peeked, keep_reduced)
    what = peeked[0].name if len(peeked) == 1 else f"{peeked[0].name} (+{len(peeked) - 1} more)"
    check_request_bytes(need, request_limit_bytes() if max_bytes is None else max_bytes, what)
    budget = budget or process_budget()
    budget.reserve(need, what=what)
    try:
        bag = _load_all(peeked, expected_dim, max_patches, keep_reduced)
    except BaseException:
        budget.release(need)
        raise
    kept = min(bag.features.numel() * bag.features.element_size(), need) if hold else 0
    budget.release(need - kept)
    if kept:
        budget.attach(bag.features, kept)
    return PatientRead(bag, [p.header.n for p in peeked], kept)
