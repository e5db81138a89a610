"""Reading a patient's uploaded bags for scoring, within the service's limits (issues 7 and 8).

    read_patient(settings, files, in_dim) -> PatientBag(features [N, D], coords int64 [N, 2] | None, sizes)

Every file's header is peeked first (format, [N, D], dtype, coords rows, declared vs stored sizes); then
ΣN <= STEPH_MAX_PATCHES (else 413), the memory reading needs <= STEPH_REQUEST_MEMORY_MB (else 422), and that
memory is reserved in the process budget STEPH_PROCESS_MEMORY_MB (503 when other requests hold it). Only then is
data read. One file is handed out as read (no copy); float16/bfloat16 files stay in their dtype (the model
casts at use); coords stay a tensor. The reservation is held until `features` is freed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from app.io.limits import MemoryBudgetBusy, process_budget, request_limit_bytes
from app.io.patient_bags import PatientTooLarge, read_patient_files
from app.services.errors import PayloadTooLarge, ServiceUnavailable


@dataclass
class PatientBag:
    """features [N, D] (float32, or float16/bfloat16 as stored); coords int64 [N, 2] when every file has them,
    else None; sizes = rows of each file, in upload order (they sum to N)."""

    features: Tensor
    coords: Tensor | None
    sizes: list[int]


def read_patient(settings: Any, files: list[Any], in_dim: int) -> PatientBag:
    """Read one patient's files (objects with `.path` and `.name`, the display name) -> PatientBag.

    Raises BagFormatError (422) naming the bad file, PayloadTooLarge (413) when the files hold more than
    STEPH_MAX_PATCHES patches together, ServiceUnavailable (503) when the process memory budget is busy."""
    try:
        read = read_patient_files(
            [f.path for f in files],
            display_names=[f.name for f in files],
            expected_dim=in_dim,
            max_patches=int(settings.max_patches),
            max_bytes=request_limit_bytes(settings),
            keep_reduced=True,
            budget=process_budget(settings),
            hold=True,
        )
    except PatientTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except MemoryBudgetBusy as exc:
        raise ServiceUnavailable(str(exc)) from None
    return PatientBag(read.bag.features, read.bag.coords, read.sizes)
