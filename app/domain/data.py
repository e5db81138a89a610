"""In-memory view of labelled patients, as the training and evaluation loops consume them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor


@dataclass
class Sample:
    """One patient: bag [N, D] (all of the patient's slides concatenated), follow-up time in days, event flag."""

    patient_id: str
    bag: Tensor
    time: float
    event: int


# Anything indexable that yields Samples (a list, or a lazy reader that loads bags from disk on access).
Samples = Sequence[Sample]
