"""In-memory view of labelled patients, as the training and evaluation loops consume them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

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


class LazySamples(Sequence[Sample]):
    """A Sequence[Sample] over `items` that builds item i's Sample (reading its bag) only when it is accessed.

    Subclasses set `items` and implement `_load(item)`. A subclass whose items carry the labels can expose them as
    `labels` (objects with `.time` and `.event`), so that sample_labels reads them without loading any bag."""

    items: Sequence[Any]

    def _load(self, item: Any) -> Sample:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self._load(item) for item in self.items[index]]
        return self._load(self.items[index])

    def __iter__(self) -> Iterator[Sample]:
        for item in self.items:
            yield self._load(item)


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
