"""Cross-fitting for STEPH: the target's task vector and the hypernetworks learn on disjoint patients.

Why: in plain STEPH, τ_t = θ_t − θ₀ was fitted on the same train patients the hypernetworks learn on, so on
those bags τ_t looks much better than it will on new patients, and the learnt mixup ratio λ (the weight on
τ_t) stays high (BENCHMARKS.md, "Reproduction table", finding 4). Cross-fitting (StephParams.crossfit):

    A, B   = crossfit_halves(train split, seed)          disjoint, cover the split, stratified by event
    θ_t^A  = train_cancer_specific(θ₀, A, TrainConfig)   phase 1, from θ₀, same training settings as the merge
    model  = STEPH built with τ_t^A = θ_t^A − θ₀         (the sources' τ_s are unchanged)
    train(model, B, TrainConfig)                        phase 2: hypernetworks + head
    "split_plugin": afterwards τ_t^A is replaced by the full τ_t of the given target checkpoint

Progress: both phases report through one callback with cumulative steps over both phases (step and
total_steps cover phase 1 + phase 2, epochs count 1..2·epochs), so the progress is monotone.
should_cancel is checked before every optimiser step of both phases and between them.
Pure torch + stdlib (app.domain stays free of service libraries).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.domain.data import LazySamples, Sample, Samples, sample_labels
from app.domain.merging.base import MergeInputs, MergeMethod, SurvivalModel
from app.domain.merging.stacked import encoder_shapes, task_vector_stack, validate_inputs
from app.domain.training import Progress, TrainConfig, TrainingCancelled, TrainResult, train, train_cancer_specific

CROSSFIT_MODES = ("split", "split_plugin")
MIN_PATIENTS = 4  # at least 2 patients in each half


class SubsetSamples(LazySamples):
    """The samples of `parent` at `indices`, without loading them (lazy parents stay lazy); the parent's
    `labels`, when it has them, are exposed for the subset too."""

    def __init__(self, parent: Samples, indices: list[int]) -> None:
        self.parent, self.items = parent, list(indices)
        self.indices = self.items
        parent_labels = getattr(parent, "labels", None)
        if isinstance(parent_labels, list) and len(parent_labels) == len(parent):
            self.labels = [parent_labels[i] for i in self.items]

    def _load(self, item: int) -> Sample:
        return self.parent[item]


def sample_events(samples: Samples) -> list[int]:
    """Event flag of every sample, without loading bags from a lazy cohort reader (see data.sample_labels)."""
    return sample_labels(samples)[1]


def crossfit_halves(events: list[int], seed: int) -> tuple[list[int], list[int]]:
    """Indices (sorted) of halves A and B of a split whose patients have these event flags.

    Stratified by event: the events, then the censored patients, each in a seeded random order, are dealt
    alternately to A and B, so |A| = ceil(n / 2), |B| = floor(n / 2) and each half gets about half of the
    events. Disjoint, covering 0..n−1, deterministic for `seed`.
    """
    half_a, half_b = deal_stratified(events, 2, f"steph-crossfit-{seed}")
    return half_a, half_b


def deal_stratified(events: list[int], parts: int, rng_key: str) -> list[list[int]]:
    """`parts` disjoint groups of indices (each sorted) covering 0..n−1, stratified by event: the events, then
    the censored patients, each shuffled by random.Random(rng_key), are dealt round-robin (group j gets
    positions j, j + parts, …)."""
    rng = random.Random(rng_key)
    order: list[int] = []
    for flag in (1, 0):
        group = [i for i, e in enumerate(events) if (e == 1) == (flag == 1)]
        rng.shuffle(group)
        order += group
    return [sorted(order[j::parts]) for j in range(parts)]


def steps_of(n: int, config: TrainConfig) -> int:
    """Optimiser steps of training.train on n samples (as in training._loop)."""
    return config.epochs * math.ceil(n / config.accum)


class PhasedProgress:
    """Forwards training Progress of one phase as cumulative progress over all phases."""

    def __init__(self, sink: Callable[[Progress], None] | None, totals: list[int], epochs: int) -> None:
        self.sink, self.totals, self.epochs = sink, totals, epochs
        self.phase, self.offset_steps, self.offset_s = 0, 0, 0.0
        self.last_elapsed = 0.0

    def next_phase(self) -> None:
        self.offset_steps += self.totals[self.phase]
        self.offset_s += self.last_elapsed
        self.phase, self.last_elapsed = self.phase + 1, 0.0

    def __call__(self, p: Progress) -> None:
        self.last_elapsed = p.elapsed_s
        if self.sink is None:
            return
        step, total = self.offset_steps + p.step, sum(self.totals)
        elapsed = self.offset_s + p.elapsed_s
        eta = elapsed / step * (total - step) if step else 0.0
        epoch = self.phase * self.epochs + p.epoch
        self.sink(Progress(epoch, self.epochs * len(self.totals), step, total, p.loss, elapsed, eta))


@dataclass
class CrossfitResult:
    model: SurvivalModel
    train_result: TrainResult  # phase 2 (hypernetworks + head on half B)
    info: dict[str, Any]  # JSON-able: mode, half sizes, seconds and the phase-1 training summary


def run_crossfit(
    impl: MergeMethod,
    inputs: MergeInputs,
    params: Any,
    config: TrainConfig,
    samples: Samples,
    *,
    progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CrossfitResult:
    """Phase 1 (θ_t^A on half A), build with τ_t^A, phase 2 (train on half B), plug-in when asked.

    Raises ValueError when the train split has fewer than MIN_PATIENTS patients, TrainingCancelled when
    should_cancel() turns True in either phase.
    """
    mode = params.crossfit
    if mode not in CROSSFIT_MODES:
        raise ValueError(f"run_crossfit: crossfit is {mode!r}, expected one of {CROSSFIT_MODES}")
    validate_inputs(inputs)  # fail before spending phase 1 on inputs that cannot be merged
    n = len(samples)
    if n < MIN_PATIENTS:
        raise ValueError(
            f"cross-fitting needs at least {MIN_PATIENTS} patients in the train split (two halves of ≥ 2); "
            f"got {n}; use crossfit 'off'"
        )
    events = sample_events(samples)
    half_a, half_b = crossfit_halves(events, config.seed)
    phased = PhasedProgress(progress, [steps_of(len(half_a), config), steps_of(len(half_b), config)], config.epochs)
    t0 = time.perf_counter()
    target_a = train_cancer_specific(
        inputs.base, SubsetSamples(samples, half_a), config, dims=inputs.dims, bin_edges=inputs.bin_edges,
        progress=phased, should_cancel=should_cancel,
    )  # fmt: skip
    phase1_s = time.perf_counter() - t0
    state_a = {k: v.detach().cpu().clone() for k, v in target_a.abmil.state_dict().items()}
    if should_cancel is not None and should_cancel():
        raise TrainingCancelled("merge cancelled between the two cross-fitting phases")
    phased.next_phase()
    model = impl.build(dataclasses.replace(inputs, target=state_a), params, seed=config.seed)
    t1 = time.perf_counter()
    result = train(model, SubsetSamples(samples, half_b), config, progress=phased, should_cancel=should_cancel)
    phase2_s = time.perf_counter() - t1
    if mode == "split_plugin":
        replace = getattr(model, "replace_target_vector", None)
        if replace is None:
            raise ValueError(f"method {impl.name!r} cannot swap its target task vector back in")
        full = task_vector_stack(inputs)
        replace({k: full[k][0] for k in encoder_shapes(inputs.dims)})
    model.eval()
    info = {
        "mode": mode,
        "seed": config.seed,
        "target_half": {"patients": len(half_a), "events": sum(events[i] for i in half_a)},
        "merge_half": {"patients": len(half_b), "events": sum(events[i] for i in half_b)},
        "target_train": {"steps": steps_of(len(half_a), config), "seconds": round(phase1_s, 2)},
        "merge_train": {"steps": result.steps, "seconds": round(phase2_s, 2)},
    }
    return CrossfitResult(model, result, info)
