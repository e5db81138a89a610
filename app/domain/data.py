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


def sample_labels(samples: Samples) -> tuple[list[float], list[int]]:
    """Follow-up times and event flags of every sample. A lazy reader that keeps its labels in memory (a
    `labels` list of objects with `.time` and `.event`, as app.io's cohort reader does) is read without loading
    any bag; otherwise every sample is loaded once."""
    labels = getattr(samples, "labels", None)
    if (
        isinstance(labels, list)
        and len(labels) == len(samples)
        and all(hasattr(x, "event") and hasattr(x, "time") for x in labels)
    ):
        return [float(x.time) for x in labels], [int(x.event) for x in labels]
    loaded = [samples[i] for i in range(len(samples))]
    return [float(s.time) for s in loaded], [int(s.event) for s in loaded]
